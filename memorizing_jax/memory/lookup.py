"""Top-k retrieval from the memory by dot product.

Selection (which slots each query retrieves, exact or approximate: `selection`)
runs without gradients. It returns the selected entries' exact dot products with
them; the gathered keys give those scores their gradient w.r.t. the queries (k
entries per query), so the scores are not computed twice.

A retrieved entry's key and value are gathered together, as the [2, head_dim] block
the memory stores them in (`MemoryState.entries`), and used as gathered: the matmuls
that read only the keys (the queries' gradient) or only the values (the attention's
output) weigh the other half by zero (`weigh_part`). On TPU, taking the halves apart
first cost a relayout of every gathered block (v5p, 8K memory: 45.4 GB for the
lookup's forward and backward against 35.5 GB).
"""
from __future__ import annotations

from typing import Optional

import flax.struct
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from memorizing_jax.memory.selection import select_slots, take_rows
from memorizing_jax.memory.state import KEY, KeyValueParts, MemoryState

METHODS = ("exact", "approx")

# The score of a retrieved entry that is not valid (fewer than k stored), which the
# model also gives masked attention scores: below any real score, and finite, so a
# softmax over nothing but masked entries stays finite. (Selection marks empty slots
# with `binning.EMPTY_SCORE` instead, for its own reasons.)
NEG_INF = -1e30

# The name (`jax.ad_checkpoint.checkpoint_name`) of the retrieved keys, values and
# validity: a rematerialisation policy that keeps them never searches the memory in
# the backward pass (the gradient needs only these and the queries).
RETRIEVED = "memory_retrieved"


@flax.struct.dataclass
class LookupResult(KeyValueParts):
  """The top-k entries retrieved for each query.

  Attributes:
    scores: [batch, heads, queries, k] float32 dot products q . key (differentiable
      w.r.t. the queries only); invalid entries hold a large negative number.
    entries: [batch, heads, queries, k, 2, head_dim] the retrieved keys
      (`[..., KEY, :]`) and values (`[..., VALUE, :]`), without gradient.
    positions: [batch, heads, queries, k] int32 document positions of the entries
      (None when the lookup was asked not to gather them).
    valid: [batch, heads, queries, k] bool, false where fewer than k entries exist.
    slots: [batch, heads, queries, k] int32 slots the entries came from.
  """

  scores: jax.Array
  entries: jax.Array
  positions: Optional[jax.Array]
  valid: jax.Array
  slots: jax.Array


def check_lookup_args(state: MemoryState, queries: jax.Array, k: int, method: str,
                      recall_target: float) -> None:
  """Raises ValueError (naming the fix) for arguments `lookup` cannot serve."""
  if method not in METHODS:
    raise ValueError(f"lookup method must be one of {METHODS}, got {method!r}")
  if not 0.0 < recall_target <= 1.0:
    raise ValueError(f"recall_target must be in (0, 1], got {recall_target}")
  if state.entries.ndim != 5 or state.entries.shape[3] != 2:
    raise ValueError(f"memory entries must be [batch, heads, slots, 2, head_dim] (keys and "
                     f"values side by side), got {state.entries.shape}")
  b, h, s, d = state.key_shape
  if queries.ndim != 4 or queries.shape[:2] != (b, h) or queries.shape[3] != d:
    raise ValueError(f"queries must be [batch={b}, heads={h}, queries, head_dim={d}] to match "
                     f"the memory, got {queries.shape}")
  if not jnp.issubdtype(queries.dtype, jnp.floating):
    raise ValueError(f"queries must be floating point, got dtype {queries.dtype}")
  if not jnp.issubdtype(state.entries.dtype, jnp.floating):
    raise ValueError(f"memory entries must be floating point, got dtype {state.entries.dtype}")
  if not isinstance(k, int) or k < 1:
    raise ValueError(f"k must be a positive int, got {k!r}")
  if k > s:
    raise ValueError(f"k={k} exceeds the memory's {s} slots: use k <= slots or a larger "
                     f"memory")


def lookup(state: MemoryState, queries: jax.Array, k: int, *, method: str = "exact",
           recall_target: float = 0.95, bins: Optional[int] = None,
           block: Optional[int] = None, with_positions: bool = True) -> LookupResult:
  """Retrieves the top-k stored entries for each query by dot product.

  Args:
    state: the memory, entries [batch, heads, slots, 2, head_dim].
    queries: [batch, heads, queries, head_dim].
    k: entries per query, at most `slots`.
    method: "exact" or "approx" (see `selection`).
    recall_target: for "approx", the expected fraction of the true top-k found.
    bins: number of strided bins (a divisor of `slots`, at least k); by default
      chosen from the method, `slots`, `k`, `head_dim` and `recall_target`.
    block: slots scored per step of the blocked reduction (a divisor of `slots` that
      divides or is a multiple of `bins`); chosen by default.
    with_positions: gather the entries' document positions. On TPU that gather of
      single int32s costs more memory traffic than the keys' and the values'
      gathers together; a memory written in document order has them without it
      (`state.ring_positions`).
  Returns:
    A LookupResult; for "exact" the entries are sorted by descending score.
  """
  check_lookup_args(state, queries, k, method, recall_target)
  # Valid slots are always a prefix of each row (see MemoryState.count).
  num_valid = state.valid_slots().sum(axis=1, dtype=jnp.int32)
  slot_ids, scores, top_entries = select_slots(state.entries, num_valid, queries, k,
                                               method=method, recall_target=recall_target,
                                               bins=bins, block=block)
  return gather_result(state.entries, state.positions if with_positions else None,
                       num_valid, queries, slot_ids, scores, top_entries=top_entries)


def weigh_part(weights: jax.Array, entries: jax.Array, part: int) -> jax.Array:
  """sum_k weights[..., k] * entries[..., k, part, :]: [..., k] and [..., k, 2, d] ->
  [..., d] in the entries' dtype, part KEY or VALUE.

  One matmul over the 2k rows of the entries as gathered, the other part weighed by
  zero: taking the parts apart first made the TPU compiler copy every gathered block.
  """
  zero = jnp.zeros_like(weights)
  both = jnp.stack([weights, zero] if part == KEY else [zero, weights], axis=-1)
  rows = entries.reshape(*entries.shape[:-3], -1, entries.shape[-1])
  return jnp.einsum("...r,...rd->...d", both.reshape(*both.shape[:-2], -1).astype(entries.dtype),
                    rows)


@jax.custom_vjp
def scores_with_gradient(queries: jax.Array, top_entries: jax.Array, scores: jax.Array
                          ) -> jax.Array:
  """`scores` (the selection's q . key, [b, h, q, k]), differentiable w.r.t. `queries`
  ([b, h, q, d]) as q . key is, through the retrieved keys (of the entries
  [b, h, q, k, 2, d])."""
  del queries, top_entries
  return jax.lax.stop_gradient(scores)


def _scores_forward(queries, top_entries, scores):
  # queries[..., :0] keeps the queries' dtype for the cotangent, at no cost.
  return jax.lax.stop_gradient(scores), (top_entries, queries[..., :0])


def _scores_backward(residuals, cotangent):
  top_entries, empty_queries = residuals
  # In the entries' dtype (bf16 on accelerators, as the queries and so their gradient
  # are): a float32 product makes the TPU keep a float32 copy of the retrieved entries.
  grad = weigh_part(cotangent, top_entries, KEY)
  # Inside shard_map with the slots split (retrieval.py), each shard's keys add
  # their part to queries that are the same on every shard: sum the parts.
  split = sorted(_varying_axes(grad) - _varying_axes(empty_queries))
  if split:
    grad = jax.lax.psum(grad, tuple(split))
  return grad.astype(empty_queries.dtype), None, None


def _varying_axes(x: jax.Array) -> frozenset:
  """The shard_map axes `x` varies over (none outside shard_map)."""
  aval = jax.typeof(x)
  if hasattr(aval, "vma"):  # JAX before 0.10
    return frozenset(aval.vma)
  return frozenset(aval.mat.varying)


scores_with_gradient.defvjp(_scores_forward, _scores_backward)


def gather_result(entries: jax.Array, positions: Optional[jax.Array], num_valid: jax.Array,
                  queries: jax.Array, slot_ids: jax.Array, scores: jax.Array,
                  top_entries: Optional[jax.Array] = None) -> LookupResult:
  """Gathers the selected entries; their scores get their gradient w.r.t. the queries.

  Args:
    entries: [batch, heads, slots, 2, head_dim] (`MemoryState.entries`).
    positions: [batch, slots] int32, or None (the result then has no positions).
    num_valid: [batch] int32 number of leading valid slots of each row.
    queries: [batch, heads, queries, head_dim] (gradients flow to these only).
    slot_ids, scores: [batch, heads, queries, k] from `select_slots`.
    top_entries: [batch, heads, queries, k, 2, head_dim], the selected entries where
      already gathered (`select_slots` returns them); gathered here when None.
  """
  b, h, slots, _, d = entries.shape
  if top_entries is None:
    top_entries = take_rows(jax.lax.stop_gradient(entries).reshape(b * h, slots, 2, d),
                            slot_ids.reshape(b * h, *slot_ids.shape[2:]))
    top_entries = top_entries.reshape(*slot_ids.shape, 2, d)
  top_entries = jax.lax.stop_gradient(top_entries)
  top_positions = None if positions is None else take_rows(positions, slot_ids)
  valid = slot_ids < num_valid[:, None, None, None]
  top_entries, valid, scores = (checkpoint_name(x, RETRIEVED)
                                for x in (top_entries, valid, scores))
  scores = jnp.where(valid, scores_with_gradient(queries, top_entries, scores), NEG_INF)
  return LookupResult(scores=scores, entries=top_entries, positions=top_positions,
                      valid=valid, slots=slot_ids)
