"""Retrieval and write that run where the memory lives: each device its own rows, heads
and (when the memory's slots are split) slots.

A memory sharded over a device mesh (rows over one mesh axis, heads over another,
optionally slots over a third) is searched, attended to and written inside
`jax.shard_map` over the ambient mesh (set by `jax.set_mesh`, or
`jax.sharding.use_abstract_mesh` while tracing):
- rows and heads split: each device runs `lookup` and `write` on its own block, so
  the compiled program moves no key or value between devices, forward or backward;
- slots split as well: each device looks up its own slots and the shards exchange
  only the candidates' scores and slot ids, then add up their parts of the
  attention's output (`retrieval.py`); each new entry is written by the shard that
  holds its ring slot, from the segment's keys and values every shard has.
Without a mesh, or with a memory that is not split, this is `lookup` and `write`
on the whole arrays: the same code path.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from memorizing_jax.memory.lookup import check_lookup_args, lookup
from memorizing_jax.memory.retrieval import Retrieval, attend, lookup_slot_shard
from memorizing_jax.memory.state import MemoryState, write


class _Placement(NamedTuple):
  """The ambient mesh and the mesh axes of a memory's rows, heads and slots."""
  mesh: jax.sharding.AbstractMesh
  batch: Optional[str]
  heads: Optional[str]
  slots: Optional[str]


def _placement(placement: Optional[P]) -> Optional[_Placement]:
  """Where the memory lives, or None when nothing is split."""
  if placement is None:
    return None
  entries = tuple(placement) + (None,) * (4 - len(placement))
  if entries[3] is not None:
    raise ValueError(
        f"the memory is placed as {placement}: its head_dim is split over the mesh, which "
        "the model's kNN layer does not support; map the logical axis kv to None in the "
        "logical-axis rules")
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return None
  split = [axis if axis is not None and mesh.shape[axis] > 1 else None
           for axis in entries[:3]]
  if all(axis is None for axis in split):
    return None
  return _Placement(mesh, *split)


def _order_after(found, state: MemoryState, keys: jax.Array, through_count: bool
                 ) -> Tuple[MemoryState, jax.Array]:
  """(state, keys) made to depend on the lookup's results, unchanged in value.

  Every read of the memory must finish before the write updates it in place, or XLA
  keeps the old memory readable by copying all of it (twice) every step.
  Optimisation barriers are dropped early on CPU, so make the write's slot indices
  (through `count`) or, where `count` must stay the same on every shard of the slots,
  its entries depend on the lookup instead: XLA cannot prove that the probe is never
  NaN, and so orders the lookup first.
  """
  # An element of the entries viewed as the attention reads them ([.., 2k, head_dim]):
  # read from the [.., k, 2, head_dim] view, the TPU compiler relaid out all of them.
  rows = found.entries.reshape(*found.entries.shape[:3], -1, found.entries.shape[-1])
  probe = jax.lax.stop_gradient(found.scores[:, 0, 0, 0]) + rows[:, 0, 0, 0, 0]
  probe = jnp.isnan(probe.astype(jnp.float32) + found.slots[:, 0, 0, 0].astype(jnp.float32))
  if through_count:
    count = jnp.minimum(state.count + probe.astype(jnp.int32), state.count)
    return state.replace(count=count), keys
  return state, jnp.where(probe[:, None, None, None], 0, keys)


def _whole(state, queries, keys, values, scale, *, k, method, recall_target, dtype, write_too):
  """Retrieval (and write) on the arrays given: the whole memory, or one device's rows
  and heads of it."""
  # The positions are not gathered: `ring_positions` gives them.
  found = lookup(state, queries, k, method=method, recall_target=recall_target,
                 with_positions=False)
  out, weights = attend(found, scale, dtype)
  retrieval = Retrieval(out=out, scores=found.scores, weights=weights, valid=found.valid,
                        slots=found.slots)
  if not write_too:
    return retrieval, state
  state, keys = _order_after(found, state, keys, through_count=True)
  return retrieval, write(state, jax.lax.stop_gradient(keys), jax.lax.stop_gradient(values))


def _slot_shard(state, queries, keys, values, scale, *, k, method, recall_target, dtype,
                write_too, slot_axis, total_slots):
  """Retrieval (and write) on one device's shard of the slots (see retrieval.py)."""
  found = lookup_slot_shard(state, queries, k, slot_axis=slot_axis, total_slots=total_slots,
                            method=method, recall_target=recall_target)
  out, weights = attend(found, scale, dtype)
  retrieval = Retrieval(out=jax.lax.psum(out, slot_axis), scores=found.scores,
                        weights=weights, valid=found.valid, slots=found.slots)
  if not write_too:
    return retrieval, state
  state, keys = _order_after(found, state, keys, through_count=False)
  first = jax.lax.axis_index(slot_axis) * state.slots
  return retrieval, write(state, jax.lax.stop_gradient(keys), jax.lax.stop_gradient(values),
                          slot_range=(first, total_slots))


def retrieve_then_write(state: MemoryState, queries: jax.Array, keys: jax.Array,
                        values: jax.Array, k: int, scale: jax.Array, *,
                        method: str = "exact", recall_target: float = 0.95,
                        placement: Optional[P] = None, dtype=jnp.float32,
                        write_too: bool = True) -> Tuple[Retrieval, MemoryState]:
  """Looks up the queries and attends to what they find, then writes the segment's
  keys/values, shard by shard.

  Args:
    state: the memory, keys [batch, heads, slots, head_dim].
    queries: [batch, heads, queries, head_dim].
    keys, values: [batch, heads, length, head_dim] written after the lookup (so a
      segment never retrieves itself).
    k, method, recall_target: as for `lookup`.
    scale: [heads] multiplier of the scores in the softmax (`retrieval.attend`).
    placement: where the memory's [batch, heads, slots, head_dim] live on the
      ambient mesh, e.g. PartitionSpec("data", "model", "memory"); None: not split.
    dtype: the dtype of the attention's output.
    write_too: False only reads the memory (decoding), returning it unchanged.
  Returns:
    (the Retrieval, placed like the queries; the new memory).
  """
  check_lookup_args(state, queries, k, method, recall_target)
  options = dict(k=k, method=method, recall_target=recall_target, dtype=dtype,
                 write_too=write_too)
  placed = _placement(placement)
  if placed is None:
    return _whole(state, queries, keys, values, scale, **options)
  rows_heads = P(placed.batch, placed.heads)
  if placed.slots is None:
    state_spec = MemoryState(entries=rows_heads, count=P(placed.batch),
                             positions=P(placed.batch))
    # check_vma=False: the new `count` passes through the ordering probe, which reads
    # the shard's own heads, so JAX cannot prove it equal across the heads axis; it
    # is (the probe never changes it).
    local = lambda s, q, kk, v, sc: _whole(s, q, kk, v, sc, **options)
    check_vma = False
  else:
    memory_spec = P(placed.batch, placed.heads, placed.slots)
    state_spec = MemoryState(entries=memory_spec, count=P(placed.batch),
                             positions=P(placed.batch, placed.slots))
    local = lambda s, q, kk, v, sc: _slot_shard(s, q, kk, v, sc, slot_axis=placed.slots,
                                                total_slots=state.slots, **options)
    check_vma = True
  retrieval_spec = Retrieval(out=rows_heads, scores=rows_heads, weights=rows_heads,
                             valid=rows_heads, slots=rows_heads)
  return jax.shard_map(local, mesh=placed.mesh,
                       in_specs=(state_spec, rows_heads, rows_heads, rows_heads,
                                 P(placed.heads)),
                       out_specs=(retrieval_spec, state_spec), check_vma=check_vma)(
                           state, queries, keys, values, scale)


def retrieve(state: MemoryState, queries: jax.Array, k: int, scale: jax.Array, *,
             method: str = "exact", recall_target: float = 0.95,
             placement: Optional[P] = None, dtype=jnp.float32) -> Retrieval:
  """`retrieve_then_write` without the write: the memory is only read."""
  empty = queries[:, :, :0]
  return retrieve_then_write(state, queries, empty, empty, k, scale, method=method,
                             recall_target=recall_target, placement=placement, dtype=dtype,
                             write_too=False)[0]
