"""`add_to_rows`: the shared bias's gradient is the sum of the rows' cotangents;
`softmax_attend` and its gradient against numpy; `local_attention`'s frozen keys
against autodiff of a plain attention; and `SelfAttention` over [XL cache; segment]
against a per-token numpy attention."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from memorizing_jax.model import axes
from memorizing_jax.model.config import ModelConfig
from memorizing_jax import memory
from memorizing_jax.model.local_attention import (SelfAttention, add_to_rows, local_attention,
                                                  softmax_attend)
from memorizing_jax.model.state import XLCache

from meshes import cpu_mesh  # pylint: disable=g-bad-import-order
from model_reference import t5_causal_bucket  # pylint: disable=g-bad-import-order


def weighted_sum_and_grads(x, shared, weights):
  """d/d(x, shared) of sum(weights * (x + shared))."""
  return jax.jit(jax.grad(lambda a, b: jnp.sum(weights * add_to_rows(a, b)), argnums=(0, 1)))(
      x, shared)


@pytest.mark.parametrize("rows", [1, 2, 3, 5, 16, 17])  # 17: past the tree, one reduce
def test_shared_gradient_is_the_sum_over_rows(rows):
  rng = np.random.default_rng(rows)
  x = rng.normal(size=(rows, 2, 3, 4)).astype(np.float32)
  shared = rng.normal(size=(1, 2, 3, 4)).astype(np.float32)
  weights = rng.normal(size=(rows, 2, 3, 4)).astype(np.float32)
  np.testing.assert_allclose(add_to_rows(x, shared), x + shared, rtol=1e-6)
  grad_x, grad_shared = weighted_sum_and_grads(x, shared, weights)
  np.testing.assert_allclose(grad_x, weights, rtol=1e-6)
  np.testing.assert_allclose(grad_shared, weights.sum(axis=0, keepdims=True), rtol=1e-5,
                             atol=1e-6)


def test_rows_split_over_the_mesh_sum_across_devices():
  mesh = cpu_mesh(4, 2)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(8, 2, 3, 4)).astype(np.float32)
  shared = rng.normal(size=(1, 2, 3, 4)).astype(np.float32)
  weights = rng.normal(size=(8, 2, 3, 4)).astype(np.float32)
  rows = NamedSharding(mesh, P("data"))
  grads = jax.jit(axes.in_mesh(
      jax.grad(lambda a, b, w: jnp.sum(w * add_to_rows(a, b)), argnums=(0, 1)), mesh))(
          jax.device_put(x, rows), shared, jax.device_put(weights, rows))
  np.testing.assert_allclose(grads[1], weights.sum(axis=0, keepdims=True), rtol=1e-5,
                             atol=1e-6)


def numpy_softmax_attend_and_grads(scores, values, d_out):
  """out = softmax(scores) @ values, and the gradients of sum(d_out * out) w.r.t.
  scores and values, in float64 by the textbook softmax gradient
  d_scores = p * (d_p - sum_k p * d_p)."""
  scores, values, d_out = (np.asarray(a, np.float64) for a in (scores, values, d_out))
  p = np.exp(scores - scores.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  d_p = np.einsum("bhqd,bhkd->bhqk", d_out, values)
  d_scores = p * (d_p - (p * d_p).sum(-1, keepdims=True))
  return (np.einsum("bhqk,bhkd->bhqd", p, values), d_scores,
          np.einsum("bhqk,bhqd->bhkd", p, d_out))


def test_softmax_attend_and_its_gradient_match_numpy():
  """Masked entries (the model's NEG_INF) get weight and gradient 0; a row with
  every entry masked spreads its weight evenly, as softmax does."""
  rng = np.random.default_rng(3)
  scores = rng.normal(size=(2, 3, 4, 6)).astype(np.float32) * 3
  scores[0, 1, 2, 3:] = memory.NEG_INF
  scores[1, 0, 1, :] = memory.NEG_INF
  values = rng.normal(size=(2, 3, 6, 5)).astype(np.float32)
  d_out = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
  out, (d_scores, d_values) = jax.jit(lambda s, v: (
      softmax_attend(s, v),
      jax.grad(lambda s, v: jnp.sum(d_out * softmax_attend(s, v)), argnums=(0, 1))(s, v)))(
          scores, values)
  want_out, want_d_scores, want_d_values = numpy_softmax_attend_and_grads(scores, values,
                                                                         d_out)
  np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(d_scores, want_d_scores, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(d_values, want_d_values, rtol=1e-5, atol=1e-6)
  assert (np.asarray(d_scores)[0, 1, 2, 3:] == 0).all()
  # bfloat16 values: the output and the values' gradient in bfloat16, the scores' in float32.
  half = jax.eval_shape(jax.grad(lambda s, v: softmax_attend(s, v).astype(jnp.float32).sum(),
                                 argnums=(0, 1)), scores, values.astype(jnp.bfloat16))
  assert (half[0].dtype, half[1].dtype) == (jnp.float32, jnp.bfloat16)


def plain_attention(queries, keys, values, mask, bias, scale):
  """softmax(masked scale * q . k + bias) @ v, differentiated by autodiff alone."""
  scores = jnp.einsum("bhqd,bhkd->bhqk", queries * scale[:, None, None], keys) + bias
  weights = jax.nn.softmax(jnp.where(mask[:, None], scores, memory.NEG_INF), axis=-1)
  return jnp.einsum("bhqk,bhkd->bhqd", weights, values)


def test_frozen_keys_get_zero_gradient_and_the_others_autodiffs():
  """The first 3 of 8 keys and values frozen (as the XL cache is): every other
  gradient is autodiff's with those keys and values behind `stop_gradient`, theirs is
  0, and the backward pass never multiplies them: no [.., 8, head_dim] product."""
  rng = np.random.default_rng(5)
  normal = lambda *shape: rng.normal(size=shape).astype(np.float32)
  queries, keys, values = normal(2, 2, 6, 4), normal(2, 2, 8, 4), normal(2, 2, 8, 4)
  mask = rng.random((2, 6, 8)) < 0.7
  mask[:, :, 0] = True
  bias, scale, d_out = normal(1, 2, 6, 8), normal(2), normal(2, 2, 6, 4)
  frozen = 3

  def loss(attention, frozen_keys):
    def of(q, k, v, b, s):
      if frozen_keys:
        return jnp.sum(d_out * attention(q, k, v, mask, b, s, frozen_keys=frozen_keys))
      freeze = lambda a: jnp.concatenate([jax.lax.stop_gradient(a[:, :, :frozen]),
                                          a[:, :, frozen:]], axis=2)
      return jnp.sum(d_out * attention(q, freeze(k), freeze(v), mask, b, s))
    return jax.jit(jax.value_and_grad(of, argnums=(0, 1, 2, 3, 4)))

  args = (queries, keys, values, bias, scale)
  got_loss, got = loss(local_attention, frozen)(*args)
  want_loss, want = loss(plain_attention, 0)(*args)
  np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
  assert not np.asarray(got[1])[:, :, :frozen].any() and not np.asarray(got[2])[:, :, :frozen].any()
  assert np.abs(np.asarray(got[1])[:, :, frozen:]).min() > 0

  def key_products(frozen_keys):
    of = lambda q, k, v: jnp.sum(local_attention(q, k, v, mask, bias, scale, frozen_keys))
    hlo = jax.jit(jax.grad(of, argnums=(1, 2))).lower(*args[:3]).compile().as_text()
    return re.findall(r"f32\[2,2,(\d),4\][^ ]* dot\(", hlo)
  # (The forward's output is the [2, 2, 6, 4] product.)
  assert sorted(key_products(frozen)) == ["5", "5", "6"]
  assert sorted(key_products(0)) == ["6", "8", "8"]


# One layer without memory: 2 heads of 3, segments of 4 tokens, the XL cache 4 long.
ATTENTION_CONFIG = ModelConfig(vocab_size=8, num_layers=1, d_model=6, num_heads=2, head_dim=3,
                               mlp_dim=4, segment_length=4, knn_layers=(), normalize_qk=True,
                               relative_position_buckets=8, relative_position_max_distance=20)


def numpy_self_attention(params, x, cache_keys, cache_values, cache_valid, start):
  """([batch, length, embed] float64, keys, values): each token's normalised query
  attends to the valid cache entries (positions -4..-1) and the segment's normalised
  keys up to its own."""
  f64 = lambda a: np.asarray(a, np.float64)
  q, k, v = (np.einsum("ble,ehd->bhld", f64(x), f64(params[n]["kernel"]))
             for n in ("query", "key", "value"))
  unit = lambda a: a / np.sqrt((a * a).sum(-1, keepdims=True) + 1e-6)
  q, k = unit(q), unit(k)
  scale = f64(params["temperature"])
  table = f64(params["relative_position_bias"]["rel_embedding"])
  batch, length = x.shape[:2]
  heads = np.zeros((batch, 2, length, 3))
  for b in range(batch):
    keys = np.concatenate([f64(cache_keys[b]), k[b]], axis=1)  # [heads, 8, d]
    values = np.concatenate([f64(cache_values[b]), v[b]], axis=1)
    valid = np.concatenate([cache_valid[b] & ~start[b], np.ones(length, bool)])
    for h in range(2):
      for t in range(length):
        seen = [j for j in range(8) if valid[j] and j - 4 <= t]
        scores = np.array([scale[h] * q[b, h, t] @ keys[h, j]
                           + table[t5_causal_bucket(t - (j - 4), 8, 20), h] for j in seen])
        weights = np.exp(scores - scores.max())
        heads[b, h, t] = (weights / weights.sum()) @ values[h, seen]
  return np.einsum("bhld,hde->ble", heads, f64(params["out"]["kernel"])), k, v


def test_self_attention_attends_to_the_xl_cache_and_the_causal_segment():
  """Normalised queries and keys with a temperature per head (as in kNN layers); row 1
  begins a document, so its cache is not read. (Decoding through a `SegmentCache` is
  checked against the full pass at the model's level, in test_decoding.py.)"""
  rng = np.random.default_rng(0)
  normal = lambda *shape: rng.normal(size=shape).astype(np.float32)
  x = normal(2, 4, 6)
  cache = XLCache(keys=normal(2, 2, 4, 3), values=normal(2, 2, 4, 3),
                  valid=np.array([[False, True, True, True], [True] * 4]))
  start = np.array([False, True])
  layer = SelfAttention(ATTENTION_CONFIG)
  shapes = nn.unbox(jax.eval_shape(layer.init, jax.random.key(0), x, cache, None, start))
  params = jax.tree.map(lambda s: normal(*s.shape), shapes["params"])
  params["temperature"] = np.array([1.5, 3.0], np.float32)
  out, new_cache, new_memory = jax.jit(layer.apply)({"params": params}, x, cache, None, start)
  want, keys, values = numpy_self_attention(params, x, cache.keys, cache.values, cache.valid,
                                            start)
  np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)
  assert new_memory is None
  # The new cache: the segment's (normalised) keys and values, all valid.
  np.testing.assert_allclose(new_cache.keys, keys, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new_cache.values, values, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(new_cache.valid, True)
