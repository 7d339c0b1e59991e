"""Incremental decoding: read a segment a few tokens (or one token) at a time.

The full forward pass reads a whole segment at once. Decoding reads the current
segment's tokens as they come: each layer keeps the keys/values of the tokens read
so far in a `SegmentCache`, so a step computes only the new tokens' queries, keys
and values and attends to [XL cache; segment cache] with the same causal mask and
relative positions as the full pass. kNN layers look the new queries up in the
memory as it was before the segment. When the segment is complete,
`complete_segment` does what the full pass does at its end: the segment becomes
each layer's XL cache and is written to the memories.

    segments = init_segment_cache(config, batch)
    logits, segments = decode(model, params, tokens[:, :n], state, segments)  # prefill
    logits, segments = decode(model, params, next_token[:, None], state, segments)
    ...
    ended = segments[0].position == config.segment_length  # [batch]
    state, segments = complete_segment(config, state, segments, rows=ended)

Reading a segment this way gives the full pass's logits (up to float rounding);
`tests/inference/test_decoding.py` checks it across segment boundaries. Decoding
continues a document: begin one from `init_state` (an empty XL cache and memory).
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from memorizing_jax import memory
from memorizing_jax.model.config import ModelConfig
from memorizing_jax.model.state import (ModelState, SegmentCache, XLCache,
                                        init_segment_cache)

__all__ = ["complete_segment", "decode", "init_segment_cache"]


def decode(model: nn.Module, params: Any, tokens: jax.Array, state: ModelState,
           segments: Tuple[SegmentCache, ...]
           ) -> Tuple[jax.Array, Tuple[SegmentCache, ...]]:
  """Reads the next tokens of the current segment.

  Args:
    model: a `MemorizingTransformer`.
    params: its parameters.
    tokens: [batch, n] int32, each row's tokens at positions `position .. position +
      n - 1` of its current segment (`position + n <= segment_length`; `position`
      [batch] is the row's own, in `segments`).
    state: the `ModelState` after the previous complete segment (read only).
    segments: one `SegmentCache` per layer.
  Returns:
    logits [batch, n, vocab] float32 and the new segment caches.
  """
  batch = tokens.shape[0]
  return model.apply({"params": params}, tokens, state, jnp.zeros((batch,), bool),
                     segments=segments)


def complete_segment(config: ModelConfig, state: ModelState,
                     segments: Tuple[SegmentCache, ...], rows: Optional[jax.Array] = None
                     ) -> Tuple[ModelState, Tuple[SegmentCache, ...]]:
  """Ends fully read segments as the full forward pass does.

  In each row of `rows`, each layer's XL cache becomes the segment's keys/values (all
  valid), each kNN layer's memory gets them appended, and the segment cache starts
  again at position 0. Call it for the rows whose `position == segment_length`.

  Args:
    rows: [batch] bool, the rows whose segment is complete (default: all); the other
      rows' XL caches, memories and segment caches are returned unchanged.
  Returns:
    The new `ModelState` and segment caches.
  """
  batch = segments[0].position.shape[0]
  rows = jnp.ones((batch,), bool) if rows is None else rows
  xl_caches = state.xl_caches
  if config.use_xl_cache:
    def ended(old, new):  # the row's cache takes the segment's entries where it ended
      return jnp.where(rows.reshape((batch,) + (1,) * (old.ndim - 1)), new.astype(old.dtype),
                       old)
    xl_caches = tuple(
        XLCache(keys=ended(c.keys, s.keys), values=ended(c.values, s.values),
                valid=c.valid | rows[:, None])
        for s, c in zip(segments, state.xl_caches))
  memories = tuple(
      memory.write(m, segments[i].keys, segments[i].values, mask=rows)
      for i, m in zip(config.knn_layer_indices, state.memories))
  new_segments = tuple(s.replace(position=jnp.where(rows, 0, s.position)) for s in segments)
  return ModelState(xl_caches=xl_caches, memories=memories), new_segments
