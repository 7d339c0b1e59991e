"""Lookup in a memory whose slot axis is sharded over a mesh axis.

Each shard holds a contiguous range of every memory's slots. It finds the top-k of
its own slots (`lookup`'s selection), the candidates of all shards are all-gathered
over the slot axis, and a final top-k over the gathered scores merges them. For
"exact" the result is the unsharded top-k (the global top-k of a union lies in the
union of the local top-k's). For "approx" each shard bins its own slots, so the
shards together use more bins than one unsharded memory would: the recall is at
least as good, and the result equals the unsharded one when the slot axis has one
shard.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

from memorizing_jax.memory import binning
from memorizing_jax.memory.lookup import LookupResult, check_lookup_args, gather_result, select_slots
from memorizing_jax.memory.state import MemoryState


def _all_gather_invariant(x: jax.Array, axis_name: str) -> jax.Array:
  """Concatenates every shard's `x` along axis 3 (k); the result is typed as the
  same on all shards of `axis_name` (its transpose is a slice, not a reduce-scatter)."""
  gather = getattr(jax.lax, "all_gather_invariant", None)
  if gather is not None:
    return gather(x, axis_name, axis=3, tiled=True)
  return jax.lax.all_gather(x, axis_name, axis=3, tiled=True, to="invarying")


def sharded_lookup(state: MemoryState, queries: jax.Array, k: int, *, mesh: Mesh,
                   slot_axis: str = "model", batch_axis: Optional[str] = "data",
                   method: str = "exact", recall_target: float = 0.95,
                   bins: Optional[int] = None, block: Optional[int] = None) -> LookupResult:
  """`lookup` with the memory's slots sharded over `mesh` axis `slot_axis`.

  Args:
    state: the memory; keys/values [batch, heads, slots, head_dim] are (or will be)
      sharded as P(batch_axis, None, slot_axis, None), positions as
      P(batch_axis, slot_axis), count as P(batch_axis).
    queries: [batch, heads, queries, head_dim], sharded over `batch_axis` only.
    k, method, recall_target: as for `lookup`.
    mesh: the device mesh.
    slot_axis: mesh axis over which the slots are split; `slots` must be divisible
      by its size.
    batch_axis: mesh axis over which the batch is split (None: replicated); `batch`
      must be divisible by its size.
    bins, block: as for `lookup`, per shard (they must divide the slots per shard).
  Returns:
    A LookupResult sharded over `batch_axis`, sorted by descending score.
  """
  check_lookup_args(state, queries, k, method, recall_target)
  for axis in (slot_axis, batch_axis):
    if axis is not None and axis not in mesh.shape:
      raise ValueError(f"mesh has axes {tuple(mesh.shape)}, not {axis!r}: pass slot_axis/"
                       f"batch_axis naming axes of the mesh")
  batch, _, slots, _ = state.keys.shape
  num_shards = mesh.shape[slot_axis]
  if slots % num_shards:
    raise ValueError(f"slots={slots} is not divisible by the {num_shards} shards of mesh axis "
                     f"{slot_axis!r}: use a memory size that is a multiple of {num_shards}")
  batch_shards = mesh.shape[batch_axis] if batch_axis is not None else 1
  if batch % batch_shards:
    raise ValueError(f"batch={batch} is not divisible by the {batch_shards} shards of mesh axis "
                     f"{batch_axis!r}: use a batch that is a multiple of {batch_shards}")
  local_slots = slots // num_shards
  local_k = min(k, local_slots)

  def local_lookup(keys, values, positions, count, local_queries):
    shard = jax.lax.axis_index(slot_axis)
    filled = jnp.minimum(count, slots)
    num_valid = jnp.clip(filled - shard * local_slots, 0, local_slots).astype(jnp.int32)
    slot_ids, scores = select_slots(keys, num_valid, local_queries, local_k, method=method,
                                    recall_target=recall_target, bins=bins, block=block)
    local = gather_result(keys, values, positions, num_valid, local_queries, slot_ids, scores)
    local = local.replace(slots=local.slots + shard * local_slots)  # the memory's own slots
    gathered = jax.tree.map(lambda x: _all_gather_invariant(x, slot_axis), local)
    ranking = jnp.where(gathered.valid, jax.lax.stop_gradient(gathered.scores),
                        binning.EMPTY_SCORE)
    _, best = jax.lax.top_k(ranking, k)

    def pick(x):
      ids = best.reshape(best.shape + (1,) * (x.ndim - best.ndim))
      return jnp.take_along_axis(x, ids, axis=3)

    return jax.tree.map(pick, gathered)

  memory_spec = P(batch_axis, None, slot_axis, None)
  return jax.shard_map(
      local_lookup, mesh=mesh,
      in_specs=(memory_spec, memory_spec, P(batch_axis, slot_axis), P(batch_axis),
                P(batch_axis)),
      out_specs=P(batch_axis),
  )(state.keys, state.values, state.positions, state.count, queries)
