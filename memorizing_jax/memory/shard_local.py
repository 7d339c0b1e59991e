"""Lookup and write that run where the memory lives: one device, its rows and heads.

A memory sharded over a device mesh (rows over one mesh axis, heads over another)
is searched and written inside `jax.shard_map` over the ambient mesh (set by
`jax.set_mesh`, or `jax.sharding.use_abstract_mesh` while tracing): each device
runs `lookup` and `write` on its own block of rows and heads, so the compiled
program moves no key or value between devices, forward or backward. Without a
mesh, or with a memory that is not split, these are `lookup` and `write` on the
whole arrays: the same code path.
"""
from __future__ import annotations

from typing import Optional, Tuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from memorizing_jax.memory.lookup import LookupResult, check_lookup_args, lookup
from memorizing_jax.memory.state import MemoryState, write


def _mesh_and_axes(placement: Optional[P]):
  """(ambient mesh, rows axis, heads axis), or None when nothing is split."""
  if placement is None:
    return None
  entries = tuple(placement) + (None,) * (4 - len(placement))
  batch_axis, heads_axis, slots_axis, dim_axis = entries
  if slots_axis is not None or dim_axis is not None:
    raise ValueError(
        f"the memory is placed as {placement}: its slots or head_dim are split over the mesh, "
        "which the model's kNN layer does not support (every key and value would move); map "
        "the logical axes memory_slots and kv to None in the logical-axis rules")
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or (batch_axis is None and heads_axis is None):
    return None
  return mesh, batch_axis, heads_axis


def _specs(batch_axis, heads_axis):
  """PartitionSpecs of a MemoryState and of [batch, heads, ...] arrays."""
  rows_heads = P(batch_axis, heads_axis)
  state = MemoryState(keys=rows_heads, values=rows_heads, count=P(batch_axis),
                      positions=P(batch_axis))
  return state, rows_heads


def _local_lookup_then_write(state, queries, keys, values, *, k, method, recall_target,
                             with_positions):
  found = lookup(state, queries, k, method=method, recall_target=recall_target,
                 with_positions=with_positions)
  # Every read of the memory must finish before the write updates it in place, or
  # XLA keeps the old memory readable by copying all of it (twice) every step.
  # Optimisation barriers are dropped early on CPU, so make the write's slot
  # indices depend on the lookup's results instead: `count` below equals
  # state.count, but XLA cannot prove it and so orders the lookup first.
  probe = jax.lax.stop_gradient(found.scores[:, 0, 0, 0]) + found.values[:, 0, 0, 0, 0]
  probe = probe.astype(jnp.float32) + found.slots[:, 0, 0, 0].astype(jnp.float32)
  state = state.replace(count=jnp.minimum(state.count + jnp.isnan(probe).astype(jnp.int32),
                                          state.count))
  return found, write(state, jax.lax.stop_gradient(keys), jax.lax.stop_gradient(values))


def lookup_then_write(state: MemoryState, queries: jax.Array, keys: jax.Array,
                      values: jax.Array, k: int, *, method: str = "exact",
                      recall_target: float = 0.95, placement: Optional[P] = None,
                      with_positions: bool = True) -> Tuple[LookupResult, MemoryState]:
  """Looks up the queries, then writes the segment's keys/values, shard by shard.

  Args:
    state: the memory, keys [batch, heads, slots, head_dim].
    queries: [batch, heads, queries, head_dim].
    keys, values: [batch, heads, length, head_dim] written after the lookup (so a
      segment never retrieves itself).
    k, method, recall_target, with_positions: as for `lookup`.
    placement: where the memory's [batch, heads, slots, head_dim] live on the
      ambient mesh, e.g. PartitionSpec("data", "model"); None: not split.
  Returns:
    (the LookupResult, placed like the queries; the new memory).
  """
  check_lookup_args(state, queries, k, method, recall_target)
  local = lambda s, q, kk, v: _local_lookup_then_write(
      s, q, kk, v, k=k, method=method, recall_target=recall_target,
      with_positions=with_positions)
  placed = _mesh_and_axes(placement)
  if placed is None:
    return local(state, queries, keys, values)
  mesh, batch_axis, heads_axis = placed
  state_spec, rows_heads = _specs(batch_axis, heads_axis)
  # check_vma=False: the new `count` and `positions` pass through the ordering probe,
  # which reads the shard's own heads, so JAX cannot prove them equal across the
  # heads axis; they are (the probe never changes them).
  return jax.shard_map(local, mesh=mesh,
                       in_specs=(state_spec, rows_heads, rows_heads, rows_heads),
                       out_specs=(rows_heads, state_spec), check_vma=False)(
                           state, queries, keys, values)


def lookup_on_shards(state: MemoryState, queries: jax.Array, k: int, *, method: str = "exact",
                     recall_target: float = 0.95, placement: Optional[P] = None,
                     with_positions: bool = True) -> LookupResult:
  """`lookup`, shard by shard (see `lookup_then_write`); the memory is only read."""
  check_lookup_args(state, queries, k, method, recall_target)
  local = lambda s, q: lookup(s, q, k, method=method, recall_target=recall_target,
                              with_positions=with_positions)
  placed = _mesh_and_axes(placement)
  if placed is None:
    return local(state, queries)
  mesh, batch_axis, heads_axis = placed
  state_spec, rows_heads = _specs(batch_axis, heads_axis)
  return jax.shard_map(local, mesh=mesh, in_specs=(state_spec, rows_heads),
                       out_specs=rows_heads)(state, queries)
