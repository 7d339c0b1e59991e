"""Rematerialisation (ModelConfig.remat): the same numbers, and the memory searched once."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from memorizing_jax import model as M


def loss_and_grads(built, params, tokens, state, sos):
  def loss(p):
    logits, new_state = built.model.apply({"params": p}, tokens[:, :-1], state, sos)
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean(), new_state
  return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)


def test_remat_gives_the_same_loss_gradients_and_memory(build_model):
  plain, rematted = build_model(), build_model(remat="full")
  cfg = plain.config
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(0, cfg.vocab_size, (2, 3, cfg.segment_length + 1)), jnp.int32)
  state = M.init_state(cfg, 2)
  sos = jnp.array([True, True])
  for segment in range(2):  # fill the memory first, so that the lookup matters
    _, state = plain.apply(plain.params, tokens[:, segment, :-1], state, sos)
    sos = jnp.array([False, False])
  (want_loss, want_state), want_grads = loss_and_grads(plain, plain.params, tokens[:, 2], state,
                                                       sos)
  (loss, new_state), grads = loss_and_grads(rematted, plain.params, tokens[:, 2], state, sos)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  for got, want in zip(jax.tree.leaves(new_state), jax.tree.leaves(want_state)):
    np.testing.assert_array_equal(got, want)


def test_remat_recomputes_the_layers_but_not_the_lookup(build_model):
  """Compiled FLOPs of a gradient step: full remat adds the layers' forward pass again,
  far less than one more search of a memory this large."""
  base = build_model().config
  config = dataclasses.replace(base, memory_slots=4096, segment_length=32)
  batch = 4
  lookup_flops = 2 * batch * config.num_heads * config.segment_length * 4096 * config.head_dim

  def step_flops(remat):
    cfg = dataclasses.replace(config, remat=remat)
    model = M.MemorizingTransformer(cfg)
    tokens = jax.ShapeDtypeStruct((batch, cfg.segment_length), jnp.int32)
    state = jax.eval_shape(lambda: M.init_state(cfg, batch))
    params = jax.eval_shape(lambda: M.init_params(cfg, jax.random.PRNGKey(0), batch))
    sos = jax.ShapeDtypeStruct((batch,), bool)
    grad = jax.jit(jax.grad(lambda p, t, s, f: model.apply({"params": p}, t, s, f)[0].sum()))
    cost = grad.lower(params, tokens, state, sos).compile().cost_analysis()
    return (cost[0] if isinstance(cost, list) else cost)["flops"]

  plain, full = step_flops("none"), step_flops("full")
  assert full > plain  # the layers' forward pass did run again
  assert full - plain < 0.5 * lookup_flops
