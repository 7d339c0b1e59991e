"""What a kNN layer's queries retrieve and attend to, and the lookup on one shard of a
memory whose slots are split across devices.

`attend` is the kNN layer's attention over its retrieved entries: a softmax of the
scaled scores of the valid entries, and the weighted sum of their values.

A memory's slots may be split over a mesh axis (the logical axis `memory_slots`):
device i of that axis holds the slots [i * S / M, (i + 1) * S / M) of every row's
memory. `lookup_slot_shard` runs on one such device, inside `jax.shard_map`:
1. it selects the top-k of its own slots (`select_slots`);
2. the shards exchange those candidates' scores only (an all-gather over the slot
   axis of [batch, heads, queries, k] float32 per shard), and each takes the top-k of
   the union: for "exact" the unsharded top-k (the top-k of a union lies in the union
   of the top-k's); for "approx" each shard bins its own slots, so the recall is at
   least the unsharded lookup's. A winner's place in the gathered array names its
   shard and its rank there; its shard alone maps that to a slot, and a sum over the
   shards ([batch, heads, queries, k] int32) gives every shard the slots;
3. it gathers the winning entries it holds, and zeros for the others.
The caller attends with those partial values and sums the shards' outputs
(`jax.lax.psum`, [batch, heads, queries, head_dim]): no key or value leaves its shard.
(Exchanging the slot ids with the scores, as a first version did, doubled the
all-gather: 63.5 MiB per device per step for the 1M-slot memory split 8 ways of
`gin/experiments/mem_1m_sharded.gin` compiled for a v5e-8, against 32 MiB.)
"""
from __future__ import annotations

from typing import Tuple

import flax.struct
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from memorizing_jax.memory import binning
from memorizing_jax.memory.lookup import (NEG_INF, RETRIEVED, LookupResult,
                                          scores_with_gradient, weigh_part)
from memorizing_jax.memory.selection import select_slots, take_rows
from memorizing_jax.memory.state import VALUE, MemoryState


@flax.struct.dataclass
class Retrieval:
  """What one kNN layer's queries retrieved, and the attention over it.

  Attributes:
    out: [batch, heads, queries, head_dim] the softmax-weighted sum of the retrieved
      values (0 where a query found nothing).
    scores: [batch, heads, queries, k] float32 q . key (NEG_INF where not valid),
      differentiable w.r.t. the queries.
    weights: [batch, heads, queries, k] float32 softmax weights (0 where not valid).
    valid: [batch, heads, queries, k] bool.
    slots: [batch, heads, queries, k] int32, the memory's slots the entries came from.
  """

  out: jax.Array
  scores: jax.Array
  weights: jax.Array
  valid: jax.Array
  slots: jax.Array


def attend(found: LookupResult, scale: jax.Array, dtype) -> Tuple[jax.Array, jax.Array]:
  """The attention over retrieved entries: (out [b, h, q, d] in `dtype`, weights
  [b, h, q, k] float32), the weights a softmax over the valid entries of
  scale[head] * score, the values taken without gradient.

  Args:
    found: the lookup's result (on a slot shard: other shards' entries 0, so `out` is
      this shard's part of the sum).
    scale: [heads] multiplier of the scores (the layer's temperature).
  """
  logits = jnp.where(found.valid, found.scores * scale[None, :, None, None], NEG_INF)
  weights = jnp.where(found.valid, jax.nn.softmax(logits, axis=-1), 0.0)
  entries = jax.lax.stop_gradient(found.entries).astype(dtype)
  return weigh_part(weights.astype(dtype), entries, VALUE), weights


def _all_gather_invariant(x: jax.Array, axis_name: str) -> jax.Array:
  """Every shard's `x` side by side along axis 3 (k); typed as the same on every shard
  of `axis_name`."""
  gather = getattr(jax.lax, "all_gather_invariant", None)
  if gather is not None:
    return gather(x, axis_name, axis=3, tiled=True)
  return jax.lax.all_gather(x, axis_name, axis=3, tiled=True, to="invarying")


def lookup_slot_shard(state: MemoryState, queries: jax.Array, k: int, *, slot_axis: str,
                      total_slots: int, method: str, recall_target: float) -> LookupResult:
  """The top-k entries of the whole memory, run on one shard of its slots (see the
  module docstring); call it inside `jax.shard_map` over `slot_axis`.

  Args:
    state: this shard's memory: entries [batch, heads, local slots, 2, head_dim] (the
      memory's slots first .. first + local - 1, first = shard * local), positions
      [batch, local slots], count [batch] (the whole memory's).
    queries: [batch, heads, queries, head_dim], the same on every shard.
    total_slots: the whole memory's slots.
  Returns:
    A LookupResult whose scores, valid and slots (the memory's) are the same on every
    shard, and whose entries are this shard's (0 for the others'); positions None
    (`ring_positions` gives them).
  """
  local = state.slots
  shard = jax.lax.axis_index(slot_axis)
  first = shard * local
  filled = jnp.minimum(state.count, total_slots)
  num_valid = jnp.clip(filled - first, 0, local).astype(jnp.int32)
  local_k = min(k, local)
  ids, scores, _ = select_slots(state.entries, num_valid, queries, local_k, method=method,
                                recall_target=recall_target)
  ranking = jnp.where(ids < num_valid[:, None, None, None], scores, binning.EMPTY_SCORE)
  # Only the scores cross: candidate i of the gathered [.., local_k * shards] is
  # candidate i % local_k of shard i // local_k, whose slot that shard alone knows.
  top_scores, best = jax.lax.top_k(_all_gather_invariant(ranking, slot_axis), k)
  valid = top_scores > binning.EMPTY_SCORE
  mine = best // local_k == shard
  local_ids = jnp.take_along_axis(ids, jnp.where(mine, best % local_k, 0), axis=-1)
  slots = jax.lax.psum(jnp.where(mine, first + local_ids, 0), slot_axis)
  b, h, _, d = state.key_shape
  local_ids = local_ids.reshape(b * h, *slots.shape[2:])
  # This shard's winning entries, 0 for the others'.
  top_entries = take_rows(jax.lax.stop_gradient(state.entries).reshape(b * h, local, 2, d),
                          local_ids)
  top_entries = jnp.where(mine[..., None, None], top_entries.reshape(*slots.shape, 2, d), 0)
  top_entries, valid, top_scores = (checkpoint_name(x, RETRIEVED)
                                    for x in (top_entries, valid, top_scores))
  scores = jnp.where(valid, scores_with_gradient(queries, top_entries, top_scores), NEG_INF)
  return LookupResult(scores=scores, entries=top_entries, positions=None, valid=valid,
                      slots=slots)
