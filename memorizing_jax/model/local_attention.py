"""Causal self-attention over [XL cache; segment] with the T5 relative position bias.

Every layer uses this block. In a kNN layer it also hands its (normalised) queries,
keys and values to `knn_attention.MemoryMix`, which retrieves from the external
memory and gates the two outputs per head.
"""
from __future__ import annotations

import functools
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from memorizing_jax import memory
from memorizing_jax.model import axes
from memorizing_jax.model.config import ModelConfig
from memorizing_jax.model.dense_matmul import dense_dot_general
from memorizing_jax.model.knn_attention import MemoryMix
from memorizing_jax.model.position_bias import RelativePositionBias
from memorizing_jax.model.state import SegmentCache, XLCache

# Most rows whose cotangents `add_to_rows` sums by a tree of additions; beyond, one
# reduce.
_TREE_SUM_ROWS = 16


def _l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  """x / |x| over the last axis, computed in float32, returned in x's dtype."""
  x32 = x.astype(jnp.float32)
  return (x32 * jax.lax.rsqrt(jnp.sum(x32 * x32, axis=-1, keepdims=True) + eps)).astype(x.dtype)


def _extend_with_cache(cache: Optional[XLCache], keys: jax.Array, values: jax.Array,
                       start_of_sequence: jax.Array
                       ) -> Tuple[jax.Array, jax.Array, jax.Array, jax.Array, Optional[XLCache]]:
  """Prepends the XL cache to a segment's keys/values.

  Args:
    cache: the previous segment's cache (or None when the XL cache is off).
    keys, values: [batch, heads, length, head_dim] of the current segment.
    start_of_sequence: [batch] bool; those rows ignore their cache.
  Returns:
    all_keys, all_values: [batch, heads, cache_length + length, head_dim];
    key_valid: [batch, cache_length + length] bool;
    key_positions: [cache_length + length] int32, relative to the segment's first token;
    new_cache: the newest `cache_length` entries (None when the XL cache is off).
  """
  batch, _, length, _ = keys.shape
  segment_positions = jnp.arange(length, dtype=jnp.int32)
  segment_valid = jnp.ones((batch, length), bool)
  if cache is None:
    return keys, values, segment_valid, segment_positions, None
  cache_length = cache.keys.shape[2]
  cache_valid = cache.valid & ~start_of_sequence[:, None]
  cache_keys = jax.lax.stop_gradient(cache.keys).astype(keys.dtype)
  cache_values = jax.lax.stop_gradient(cache.values).astype(values.dtype)
  all_keys = jnp.concatenate([cache_keys, keys], axis=2)
  all_values = jnp.concatenate([cache_values, values], axis=2)
  key_valid = jnp.concatenate([cache_valid, segment_valid], axis=1)
  key_positions = jnp.arange(-cache_length, length, dtype=jnp.int32)
  new_cache = XLCache(
      keys=jax.lax.stop_gradient(all_keys[:, :, -cache_length:]).astype(cache.keys.dtype),
      values=jax.lax.stop_gradient(all_values[:, :, -cache_length:]).astype(cache.values.dtype),
      valid=key_valid[:, -cache_length:])
  return all_keys, all_values, key_valid, key_positions, new_cache


def _extend_segment(cache: Optional[XLCache], segment: SegmentCache, keys: jax.Array,
                    values: jax.Array, start_of_sequence: jax.Array
                    ) -> Tuple[jax.Array, jax.Array, jax.Array, jax.Array, SegmentCache]:
  """Places each row's `n` new tokens' keys/values at its `segment.position`.

  The incremental-decoding form of `_extend_with_cache`: the keys attended to are
  [XL cache; the whole segment cache], entries of a row's segment at or after its
  `position + n` being invalid (they are not read yet).

  Args:
    cache: the previous segment's XL cache (or None when the XL cache is off).
    segment: this layer's `SegmentCache`.
    keys, values: [batch, heads, n, head_dim] of the new tokens.
    start_of_sequence: [batch] bool; those rows ignore their XL cache.
  Returns:
    all_keys, all_values: [batch, heads, cache_length + segment_length, head_dim];
    key_valid: [batch, cache_length + segment_length] bool;
    key_positions: [cache_length + segment_length] int32 (segment start = 0);
    the new segment cache (each row's position advanced by n).
  """
  n = keys.shape[2]
  seg_length = segment.keys.shape[2]

  def place(buffer, new):  # [batch, heads, segment_length, d] <- [batch, heads, n, d]
    return jax.vmap(lambda row, entries, start: jax.lax.dynamic_update_slice_in_dim(
        row, entries, start, axis=1))(buffer, new.astype(buffer.dtype), segment.position)

  seg_keys, seg_values = place(segment.keys, keys), place(segment.values, values)
  new_segment = SegmentCache(keys=seg_keys, values=seg_values, position=segment.position + n)
  positions = jnp.arange(seg_length, dtype=jnp.int32)
  seg_valid = positions[None] < new_segment.position[:, None]
  all_keys, all_values = seg_keys.astype(keys.dtype), seg_values.astype(values.dtype)
  if cache is None:
    return all_keys, all_values, seg_valid, positions, new_segment
  cache_length = cache.keys.shape[2]
  all_keys = jnp.concatenate([cache.keys.astype(keys.dtype), all_keys], axis=2)
  all_values = jnp.concatenate([cache.values.astype(values.dtype), all_values], axis=2)
  key_valid = jnp.concatenate([cache.valid & ~start_of_sequence[:, None], seg_valid], axis=1)
  key_positions = jnp.arange(-cache_length, seg_length, dtype=jnp.int32)
  return all_keys, all_values, key_valid, key_positions, new_segment


def local_attention(queries: jax.Array, keys: jax.Array, values: jax.Array, mask: jax.Array,
                    bias: jax.Array, scale: jax.Array, frozen_keys: int = 0) -> jax.Array:
  """Masked softmax attention.

  Args:
    queries: [batch, heads, queries, head_dim].
    keys, values: [batch, heads, keys, head_dim].
    mask: [batch, queries, keys] bool, true where a query may attend.
    bias: [batch or 1, heads, queries, keys] float32 added to the scaled scores.
    scale: [heads] multiplier of the dot products.
    frozen_keys: how many leading keys and values get a zero gradient (the XL
      cache's): the backward pass then never computes their cotangents.
  Returns:
    [batch, heads, queries, head_dim] in the queries' dtype.
  """
  # The scale multiplies the queries ([.., head_dim]), not the scores ([.., keys]): the
  # same product, and the scale's gradient then sums a head_dim-long product per query,
  # not a keys-long one (which XLA's CPU backend ran, fused with the scores' gradient,
  # at 100-150 ms a layer in benchmarks/profile_step.py's step).
  scaled = (queries * scale[None, :, None, None]).astype(queries.dtype)
  scores = _scores(frozen_keys, scaled, keys)
  scores = add_to_rows(scores, bias)
  scores = jnp.where(mask[:, None], scores, memory.NEG_INF)
  return _softmax_attend(frozen_keys, scores, values)


# Autodiff multiplies the cotangents of all keys and values, also the XL cache's,
# which `jax.lax.stop_gradient` then drops: XLA does not narrow a product whose result
# is sliced. The two products below skip the `frozen` leading ones (0 where the keys'
# or values' cotangent has to be complete). Measured on the 2-core CPU host, one
# layer's local attention at step_time.py's shape (4 x 8 heads x 512 queries x 1024
# keys) took 175 ms against 211 ms forward and backward (fastest of 9), gradients
# bit for bit the same; compiled for a v5p-8 (`benchmarks/tpu_compile.py --topologies
# v5p:2x2x1 --experiments table4_512_xl`), the XL step's roofline fell from 109.9 to
# 105.8 ms.

@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _scores(frozen: int, queries: jax.Array, keys: jax.Array) -> jax.Array:
  """queries . keys in float32: [b, h, q, d] and [b, h, k, d] -> [b, h, q, k]."""
  del frozen
  return _dot_keys(queries, keys)


def _dot_keys(queries, keys):
  return jnp.einsum("bhqd,bhkd->bhqk", queries, keys, preferred_element_type=jnp.float32)


def _scores_forward(frozen, queries, keys):
  return _dot_keys(queries, keys), (queries, keys)


def _scores_backward(frozen, residuals, d_scores):
  """Autodiff's gradients, the keys' for the keys after the frozen ones only."""
  queries, keys = residuals
  d_queries, = jax.vjp(lambda q: _dot_keys(q, keys), queries)[1](d_scores)
  d_keys, = jax.vjp(lambda k: _dot_keys(queries, k), keys[:, :, frozen:])[1](
      d_scores[..., frozen:])
  return d_queries, _after_zeros(d_keys, frozen)


_scores.defvjp(_scores_forward, _scores_backward)


def _after_zeros(x: jax.Array, frozen: int) -> jax.Array:
  """`frozen` zero rows ahead of x's [b, h, rows, d] (x itself when there are none)."""
  if not frozen:
    return x
  return jnp.concatenate([jnp.zeros(x.shape[:2] + (frozen,) + x.shape[3:], x.dtype), x], axis=2)


def softmax_attend(scores: jax.Array, values: jax.Array) -> jax.Array:
  """softmax(scores) @ values: [batch, heads, queries, keys] float32 scores and
  [batch, heads, keys, head_dim] values -> [batch, heads, queries, head_dim] in the
  values' dtype (the weights cast to it).

  Its gradient is autodiff's, written as flash attention writes it: the softmax's
  gradient needs, for each query, the sum over the keys of weight x the weight's
  cotangent; that sum equals out . d_out, an [.., head_dim] product instead of an
  [.., keys] one. XLA's CPU backend fused the [.., keys] sum with the matmul that makes
  the cotangents and ran the two far slower than apart.
  """
  return _softmax_attend(0, scores, values)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _softmax_attend(frozen: int, scores: jax.Array, values: jax.Array) -> jax.Array:
  """`softmax_attend`, the `frozen` leading values without gradient."""
  return _softmax_attend_forward(frozen, scores, values)[0]


def _softmax_attend_forward(frozen, scores, values):
  del frozen
  weights = jax.nn.softmax(scores, axis=-1)
  out = jnp.einsum("bhqk,bhkd->bhqd", weights.astype(values.dtype), values)
  return out, (weights, values, out)


def _softmax_attend_backward(frozen, residuals, d_out):
  weights, values, out = residuals
  d_values = jnp.einsum("bhqk,bhqd->bhkd", weights[..., frozen:].astype(values.dtype), d_out)
  d_weights = jnp.einsum("bhqd,bhkd->bhqk", d_out, values, preferred_element_type=jnp.float32)
  # sum_k weights[k] * d_weights[k] = d_out . sum_k weights[k] values[k] = d_out . out
  total = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1, keepdims=True)
  return weights * (d_weights - total), _after_zeros(d_values, frozen)


_softmax_attend.defvjp(_softmax_attend_forward, _softmax_attend_backward)


def add_to_rows(x: jax.Array, shared: jax.Array) -> jax.Array:
  """x + shared, where `shared` ([1, ...]) is the same for every row of `x` ([rows, ...]).

  The gradient of `shared` sums the rows' cotangents. Autodiff would write that as
  one reduce over the leading axis, which XLA's CPU backend runs about 80x slower
  than the same sum as additions of whole rows (131 ms against 1.6 ms for
  [4, 8, 512, 1024] float32): here it is a tree of additions, unless the rows are
  many or split over the mesh's devices (then the reduce, which the compiler
  completes with an all-reduce).
  """
  if shared.shape[0] != 1 or x.shape[0] == 1:
    return x + shared
  spec = axes.ambient_spec(("batch",), x.shape[:1])
  split = spec is not None and spec[0] is not None
  return _add_to_rows(x.shape[0] > _TREE_SUM_ROWS or split, x, shared)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _add_to_rows(reduce: bool, x: jax.Array, shared: jax.Array) -> jax.Array:
  del reduce
  return x + shared


def _add_to_rows_forward(reduce, x, shared):
  del reduce
  return x + shared, None


def _add_to_rows_backward(reduce, _, cotangent):
  if reduce:
    return cotangent, cotangent.sum(axis=0, keepdims=True)
  rows = [cotangent[i:i + 1] for i in range(cotangent.shape[0])]
  while len(rows) > 1:
    rows = [a + b for a, b in zip(rows[::2], rows[1::2])] + rows[len(rows) // 2 * 2:]
  return cotangent, rows[0]


_add_to_rows.defvjp(_add_to_rows_forward, _add_to_rows_backward)


def _dense_init(names):
  return nn.with_logical_partitioning(nn.initializers.lecun_normal(), names)


class SelfAttention(nn.Module):
  """One layer's attention: local (with XL cache) and, in kNN layers, the memory.

  Attributes:
    config: the model config.
    use_memory: whether this is a kNN-augmented layer.
  """

  config: ModelConfig
  use_memory: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, cache: Optional[XLCache],
               memory_state: Optional[memory.MemoryState], start_of_sequence: jax.Array,
               segment: Optional[SegmentCache] = None
               ) -> Tuple[jax.Array, Any, Optional[memory.MemoryState]]:
    """Args:
      x: [batch, length, embed] normalised layer input.
      cache: this layer's XL cache, or None when the XL cache is off.
      memory_state: this layer's memory (kNN layers only), else None.
      start_of_sequence: [batch] bool, rows that begin a new document.
      segment: incremental decoding (see `model/decoding.py`): the layer's cache of the
        current segment; `x` holds the next `length` tokens of that segment. The XL
        cache and the memory are then only read, never written.
    Returns:
      out [batch, length, embed], the new XL cache (in decoding: the new
      `SegmentCache`), the new memory (in decoding: `memory_state` unchanged).
    """
    cfg = self.config
    dtype = cfg.compute_jnp_dtype

    def project(name):
      return nn.DenseGeneral((cfg.num_heads, cfg.head_dim), use_bias=False, dtype=dtype,
                             kernel_init=_dense_init(("embed", "heads", "kv")), name=name,
                             dot_general=dense_dot_general)(x)

    # [batch, length, heads, head_dim] -> [batch, heads, length, head_dim]
    q, k, v = (jnp.swapaxes(project(n), 1, 2) for n in ("query", "key", "value"))
    normalize = cfg.normalize_qk or self.use_memory
    if normalize:
      q, k = _l2_normalize(q), _l2_normalize(k)
      scale = self.param("temperature",
                         nn.with_logical_partitioning(
                             nn.initializers.constant(cfg.initial_temperature), ("heads",)),
                         (cfg.num_heads,), jnp.float32)
    else:
      scale = jnp.full((cfg.num_heads,), 1.0 / np.sqrt(cfg.head_dim), jnp.float32)

    length = x.shape[1]
    # [1, length] in the full pass; [batch, length] in decoding, where each row's
    # queries start at its own place in its segment.
    query_positions = jnp.arange(length, dtype=jnp.int32)[None]
    if segment is None:
      all_k, all_v, key_valid, key_positions, new_cache = _extend_with_cache(
          cache, k, v, start_of_sequence)
    else:
      all_k, all_v, key_valid, key_positions, new_cache = _extend_segment(
          cache, segment, k, v, start_of_sequence)
      query_positions = query_positions + segment.position[:, None]
    causal = key_positions[None, None, :] <= query_positions[:, :, None]
    mask = key_valid[:, None, :] & causal
    bias = RelativePositionBias(cfg.num_heads, cfg.relative_position_buckets,
                                cfg.relative_position_max_distance,
                                name="relative_position_bias")(query_positions, key_positions)
    # The XL cache's keys and values (the first ones) get no gradient; nothing does in
    # decoding.
    frozen = all_k.shape[2] - k.shape[2] if segment is None else 0
    heads_out = local_attention(q, all_k, all_v, mask, bias, scale, frozen_keys=frozen)

    new_memory = memory_state
    if self.use_memory:
      heads_out, new_memory = MemoryMix(cfg, name="memory")(
          q, k, v, heads_out, memory_state, start_of_sequence, scale,
          query_offset=None if segment is None else segment.position)

    out = nn.DenseGeneral(cfg.d_model, axis=(-2, -1), use_bias=False, dtype=dtype,
                          kernel_init=_dense_init(("heads", "kv", "embed")),
                          dot_general=dense_dot_general, name="out")(jnp.swapaxes(heads_out, 1, 2))
    return out, new_cache, new_memory
