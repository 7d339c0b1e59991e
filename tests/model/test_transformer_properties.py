"""Causality, document resets, gradient isolation, diagnostics and re-tracing."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from memorizing_jax import model as M


def feed(built, tokens, sos_per_segment, state=None):
  """Runs [batch, segments * L] tokens segment by segment; returns logits and state."""
  cfg = built.config
  seg = cfg.segment_length
  state = M.init_state(cfg, tokens.shape[0]) if state is None else state
  out = []
  for s, sos in enumerate(sos_per_segment):
    logits, state = built.apply(built.params, jnp.asarray(tokens[:, s * seg:(s + 1) * seg]),
                                state, jnp.asarray(sos))
    out.append(np.asarray(logits))
  return np.concatenate(out, axis=1), state


def random_tokens(cfg, segments, seed=0, batch=2):
  return np.random.default_rng(seed).integers(
      0, cfg.vocab_size, (batch, segments * cfg.segment_length)).astype(np.int32)


def test_future_token_never_changes_an_earlier_logit(tiny):
  cfg = tiny.config
  tokens = random_tokens(cfg, 3)
  sos = [[True, True], [False, False], [False, False]]
  base, _ = feed(tiny, tokens, sos)
  for position in (3, 13, 20):  # in segments 0, 1 and 2
    changed = tokens.copy()
    changed[:, position] = (changed[:, position] + 1) % cfg.vocab_size
    logits, _ = feed(tiny, changed, sos)
    np.testing.assert_array_equal(logits[:, :position], base[:, :position])
    assert np.abs(logits[:, position] - base[:, position]).max() > 1e-4


def test_new_document_row_equals_fresh_state(tiny):
  cfg = tiny.config
  history = random_tokens(cfg, 2, seed=1)
  _, state = feed(tiny, history, [[True, True], [False, False]])
  segment = random_tokens(cfg, 1, seed=2)
  sos = np.array([True, False])
  logits, new_state = tiny.apply(tiny.params, jnp.asarray(segment), state, jnp.asarray(sos))
  fresh, fresh_state = tiny.apply(tiny.params, jnp.asarray(segment), M.init_state(cfg, 2),
                                  jnp.asarray([True, True]))
  np.testing.assert_allclose(np.asarray(logits)[0], np.asarray(fresh)[0], rtol=1e-6, atol=1e-6)
  assert np.abs(np.asarray(logits)[1] - np.asarray(fresh)[1]).max() > 1e-4  # row 1 remembers
  np.testing.assert_array_equal(np.asarray(new_state.memories[0].count), [8, 24])
  np.testing.assert_array_equal(np.asarray(new_state.xl_caches[0].valid[0]),
                                np.asarray(fresh_state.xl_caches[0].valid[0]))


def test_no_gradient_flows_into_earlier_segments(tiny):
  cfg = tiny.config
  tokens = random_tokens(cfg, 2, seed=3)
  seg = cfg.segment_length
  first, second = jnp.asarray(tokens[:, :seg]), jnp.asarray(tokens[:, seg:])
  sos0, sos1 = jnp.asarray([True, True]), jnp.asarray([False, False])

  def loss_given_state(params, state):
    logits, _ = tiny.model.apply({"params": params}, second, state, sos1)
    return jnp.mean(jax.nn.log_softmax(logits)[..., 0])

  _, state1 = tiny.apply(tiny.params, first, M.init_state(cfg, 2), sos0)
  leaves, treedef = jax.tree.flatten(state1)
  is_float = [jnp.issubdtype(x.dtype, jnp.floating) for x in leaves]

  def loss_of_float_leaves(floats):
    it = iter(floats)
    rebuilt = [next(it) if f else x for x, f in zip(leaves, is_float)]
    return loss_given_state(tiny.params, jax.tree.unflatten(treedef, rebuilt))

  floats = [x for x, f in zip(leaves, is_float) if f]
  grads = jax.jit(jax.grad(loss_of_float_leaves))(floats)
  assert len(grads) == 5  # keys/values of 2 XL caches, the entries of 1 memory
  assert all(float(jnp.abs(g).max()) == 0.0 for g in grads)

  # Through the params: the path via the first segment's state contributes nothing.
  def two_segments(params, stop):
    _, state = tiny.model.apply({"params": params}, first, M.init_state(cfg, 2), sos0)
    if stop:
      state = jax.lax.stop_gradient(state)
    return loss_given_state(params, state)

  through, stopped = jax.jit(lambda p: (jax.grad(two_segments)(p, False),
                                         jax.grad(two_segments)(p, True)))(tiny.params)
  for a, b in zip(jax.tree.leaves(through), jax.tree.leaves(stopped)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_consecutive_steps_reuse_one_compiled_function(tiny):
  cfg = tiny.config
  traces = []

  def step(params, tokens, state, sos):
    traces.append(1)  # runs only while tracing
    return tiny.model.apply({"params": params}, tokens, state, sos)

  jitted = jax.jit(step, donate_argnums=(2,))
  state = M.init_state(cfg, 2)
  tokens = random_tokens(cfg, 4, seed=4)
  seg = cfg.segment_length
  for s in range(4):
    sos = jnp.asarray([s == 0, s in (0, 2)])
    _, state = jitted(tiny.params, jnp.asarray(tokens[:, s * seg:(s + 1) * seg]), state, sos)
  assert len(traces) == 1
  assert jitted._cache_size() == 1


def test_diagnostics_describe_the_retrieval(tiny):
  cfg = tiny.config
  tokens = random_tokens(cfg, 3, seed=5)
  _, state = feed(tiny, tokens[:, :16], [[True, True], [False, True]])
  plain = tiny.apply(tiny.params, jnp.asarray(tokens[:, 16:]), state,
                     jnp.asarray([False, False]))
  (logits, _), variables = tiny.apply_with_diagnostics(
      tiny.params, jnp.asarray(tokens[:, 16:]), state, jnp.asarray([False, False]))
  assert len(plain) == 2 and isinstance(plain[1], M.ModelState)  # no collection unless asked
  np.testing.assert_allclose(np.asarray(logits), np.asarray(plain[0]), rtol=1e-6, atol=1e-6)
  d = variables[M.DIAGNOSTICS]["layer_1"]["attention"]["memory"]
  gate_bias = np.asarray(tiny.params["layer_1"]["attention"]["memory"]["gate_bias"])
  np.testing.assert_allclose(np.asarray(d["gate"]), 1 / (1 + np.exp(-gate_bias)), rtol=1e-6)
  # Row 0 stored 16 tokens, row 1 (new document at segment 1) 8; 32 slots.
  np.testing.assert_allclose(np.asarray(d["memory_fill"]), [0.5, 0.25])
  valid = np.asarray(d["retrieved_valid"])
  assert valid.shape == (2, 4, 8, 16)
  np.testing.assert_array_equal(valid.sum(-1), np.broadcast_to(
      np.array([16, 8])[:, None, None], (2, 4, 8)))
  positions = np.asarray(d["retrieved_positions"])
  # Every stored token retrieved once (k >= stored): the row's earlier positions.
  for row, stored in ((0, range(0, 16)), (1, range(0, 8))):
    for h in range(4):
      for q in range(8):
        assert sorted(positions[row, h, q][valid[row, h, q]]) == list(stored)
  query_pos = np.array([16, 8])[:, None, None] + np.arange(8)[None, None, :]
  expected_distance = np.where(valid, query_pos[..., None] - positions, 0).sum(-1) / valid.sum(-1)
  np.testing.assert_allclose(np.asarray(d["mean_distance"]), expected_distance, rtol=1e-6)
  weights = np.asarray(d["retrieved_weights"])
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
  assert np.all(weights[~valid] == 0)
  share = np.asarray(d["memory_share"])
  assert share.shape == (2, 4, 8) and np.all((share > 0) & (share < 1))


def test_first_segment_has_no_memory_output(tiny):
  cfg = tiny.config
  (_, _), variables = tiny.apply_with_diagnostics(
      tiny.params, jnp.asarray(random_tokens(cfg, 1)), M.init_state(cfg, 2),
      jnp.asarray([True, True]))
  d = variables[M.DIAGNOSTICS]["layer_1"]["attention"]["memory"]
  assert not np.asarray(d["retrieved_valid"]).any()
  np.testing.assert_array_equal(np.asarray(d["memory_share"]), 0.0)
  np.testing.assert_array_equal(np.asarray(d["memory_fill"]), 0.0)


def test_dropout_is_seeded_and_off_when_deterministic(tiny):
  cfg = dataclasses.replace(tiny.config, dropout_rate=0.5)
  model = M.MemorizingTransformer(cfg)  # same parameters as `tiny`
  tokens = jnp.asarray(random_tokens(cfg, 1))
  state, sos = M.init_state(cfg, 2), jnp.asarray([True, True])
  run = jax.jit(lambda key: model.apply({"params": tiny.params}, tokens, state, sos,
                                        deterministic=False, rngs={"dropout": key})[0])
  a, b, c = run(jax.random.PRNGKey(1)), run(jax.random.PRNGKey(1)), run(jax.random.PRNGKey(2))
  off = jax.jit(lambda p: model.apply({"params": p}, tokens, state, sos)[0])(tiny.params)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-3
  assert np.abs(np.asarray(a) - np.asarray(off)).max() > 1e-3
  np.testing.assert_allclose(np.asarray(off), np.asarray(tiny.apply(tiny.params, tokens, state,
                                                                    sos)[0]), rtol=1e-5, atol=1e-5)


def test_bfloat16_compute_and_memory_track_float32(tiny):
  cfg = dataclasses.replace(tiny.config, compute_dtype="bfloat16", memory_dtype="bfloat16")
  model = M.MemorizingTransformer(cfg)  # float32 parameters of `tiny`, bf16 compute
  built = dataclasses.replace(tiny, config=cfg, model=model, apply=jax.jit(
      lambda p, t, s, f: model.apply({"params": p}, t, s, f)))
  tokens = random_tokens(cfg, 2, seed=6)
  sos = [[True, True], [False, False]]
  logits, state = feed(built, tokens, sos)
  want, _ = feed(tiny, tokens, sos)
  assert logits.dtype == np.float32
  assert state.memories[0].keys.dtype == jnp.bfloat16
  assert state.xl_caches[0].keys.dtype == jnp.bfloat16
  np.testing.assert_allclose(logits, want, atol=0.15)
  assert np.abs(logits - want).mean() < 0.03


def test_memory_is_updated_in_place_without_copies(tiny):
  """With the state donated, the compiled step never copies a whole memory."""
  cfg = tiny.config
  state = M.init_state(cfg, 2)
  step = jax.jit(lambda p, t, s, f: tiny.model.apply({"params": p}, t, s, f),
                 donate_argnums=(2,))
  hlo = step.lower(tiny.params, jnp.zeros((2, 8), jnp.int32), state,
                   jnp.zeros((2,), bool)).compile().as_text()
  memory_shape = "f32[2,4,32,2,8]"  # [batch, heads, slots, key/value, head_dim]
  assert any(memory_shape in line for line in hlo.splitlines())
  copies = [line for line in hlo.splitlines() if memory_shape in line and " copy(" in line]
  assert copies == []
