"""Which slots each query retrieves from the memory: the top-k stored keys by dot
product, exact or approximate, without gradient (`lookup` gathers the entries and
gives their scores a gradient).

Selection never materialises the full `[queries, slots]` score matrix on CPU/GPU:
scores are reduced into strided bins block by block (see `binning`), for groups of
the (batch * heads) memories at a time.

Methods:
  * "exact": the members of the k bins with the largest maxima are rescored and the
    top k of them kept; this is the exact top-k.
  * "approx": on TPU `jax.lax.approx_max_k` with `recall_target`; elsewhere, where
    XLA lowers that to a full sort, the argmax of each of the k best bins, with the
    bin count chosen so that the expected recall meets `recall_target` (where no bin
    count short of one slot per bin meets it, this is the exact lookup). On CPU, where
    that recall exceeds the target by `binning.BFLOAT16_RECALL_MARGIN` or more, the
    bins' maxima are scored in bfloat16 (`binning.bin_maxima`); the retrieved entries'
    scores are computed again from their keys as stored.

Which is faster (the model's default is "approx"), measured with
`benchmarks/retrieval.py --slots ... --head_dim 64 --batch 4 --heads 8 --queries 512
--k 32 --repeats 3 --methods exact approx` on the 2-core CPU host, quiet, in one run
(commit 0db6914; repeated runs vary by 10-20% on this shared host):

  slots    exact ms   approx ms   approx bins   approx recall (target 0.95)
   1024       279        240          512          0.985
   2048       341        294          512          0.978
   4096       478        312          512          0.974
   8192       712        422          512          0.972
  16384      1018        502          512          0.971
  65536      2331       1039          512          0.970

With the bins scored in bfloat16 (above), the same command at 8,192 and 65,536 slots,
on a slower day of that host: exact 1120 and 3384 ms, approx 429 and 1222 ms, recall
0.970 and 0.968. With each block's keys as the product's left-hand side (see
`binning.bin_maxima`), in one run after the previous code's (commit 6cd8cec): approx
368 and 1016 ms against 447 and 1506 ms, recall unchanged; exact (whose blocks keep
the previous layout) 1123 and 3569 ms against 1099 and 3732 ms.

On TPU "approx" is `approx_max_k`, fused with the score matmul (the compiled
estimates in the README); the exact lookup there is not fused. On GPU neither has
been measured yet; "approx" runs the binned path as on CPU.
"""
from __future__ import annotations

from typing import Optional, Tuple

import jax
import jax.numpy as jnp

from memorizing_jax.memory import binning
from memorizing_jax.memory.state import KEY

# The (batch * heads) memories are searched in groups of at most GROUP_QUERIES
# queries in all, whose temporaries (bin maxima, gathered candidate keys) hold at
# most GROUP_ELEMENTS float32 elements: small groups keep the work in cache.
GROUP_QUERIES = 512
GROUP_ELEMENTS = 1 << 24


def select_slots(entries: jax.Array, num_valid: jax.Array, queries: jax.Array, k: int, *,
                 method: str, recall_target: float, bins: Optional[int] = None,
                 block: Optional[int] = None
                 ) -> Tuple[jax.Array, jax.Array, Optional[jax.Array]]:
  """The slots each query retrieves, their scores and entries (no gradient).

  Args:
    entries: [batch, heads, slots, 2, head_dim] (`MemoryState.entries`).
    num_valid: [batch] int32; slots `>= num_valid` of the row are empty.
    queries: [batch, heads, queries, head_dim].
  Returns:
    slot indices [batch, heads, queries, k] int32 (empty slots only where a row has
    fewer than k entries); their scores [batch, heads, queries, k] float32: the
    dot products of the queries (in the keys' dtype) with the keys, accumulated in
    float32 (meaningless for empty slots); and, for the approximate lookup, their
    entries [batch, heads, queries, k, 2, head_dim], which it gathers to rescore
    (None for the exact lookup: `gather_result` gathers them).
  """
  b, h, slots, _, d = entries.shape
  nq = queries.shape[2]
  entries = jax.lax.stop_gradient(entries).reshape(b * h, slots, 2, d)
  queries = jax.lax.stop_gradient(queries).astype(entries.dtype).reshape(b * h, nq, d)
  num_valid = jnp.repeat(num_valid.astype(jnp.int32), h)
  if method == "exact":
    nbins = bins or binning.exact_bin_count(slots, k, d)
  else:
    nbins = bins or binning.approx_bin_count(slots, k, recall_target)
  if slots % nbins or nbins < k:
    raise ValueError(f"bins={nbins} must divide slots={slots} and be at least k={k}")
  members = slots // nbins
  rescored = k * members * d if method == "exact" and members > 1 else 0
  group = _group_size(b * h, nq, max(nbins, rescored))
  nblock = block or binning.block_slots(slots, nbins, group * nq)

  def select_group(group_start, qg, nv, bfloat16_scores=False):
    if method == "exact":
      return _exact_group(entries, group_start, qg, nv, k, nbins, nblock)
    return _approx_group(entries, group_start, qg, nv, k, nbins, nblock, bfloat16_scores)

  def blocked(bfloat16_scores=False):
    num_groups = (b * h) // group
    if num_groups == 1:
      return select_group(0, queries, num_valid, bfloat16_scores)

    def body(j, out):
      start = j * group
      qg = jax.lax.dynamic_slice_in_dim(queries, start, group, axis=0)
      nv = jax.lax.dynamic_slice_in_dim(num_valid, start, group, axis=0)
      return jax.tree.map(lambda o, x: jax.lax.dynamic_update_slice_in_dim(o, x, start, 0),
                          out, select_group(start, qg, nv, bfloat16_scores))
    init = jnp.zeros((b * h, nq, k), jnp.int32)
    if method == "exact":
      init = (init, jnp.zeros((b * h, nq, k), jnp.float32))
    init = jax.tree.map(lambda x: binning.like_varying(x, queries, entries, num_valid), init)
    return jax.lax.fori_loop(0, num_groups, body, init)

  def with_entries(ids, scores=None):
    """The selected entries, gathered once for the result, and (for the binned
    selection, whose packed maxima lost their low mantissa bits to the member
    index) the scores computed from their keys."""
    top_entries = take_rows(entries, ids)
    if scores is None:  # over all 2k rows, keys kept: on CPU, slicing the keys out first
      # copied them, and an einsum over [k, 2, d] transposed every gathered block
      rows = top_entries.reshape(*top_entries.shape[:-3], -1, top_entries.shape[-1])
      scores = jnp.einsum("gqd,gqrd->gqr", queries, rows,
                          preferred_element_type=jnp.float32)[..., KEY::2]
    return ids, scores, top_entries

  if method == "exact":
    (ids, scores), top_entries = blocked(), None
  else:  # TPU has a fast approximate top-k (it fuses with the score matmul)
    # On CPU the bins are scored in bfloat16 where the recall has room to spare.
    spare = binning.expected_recall(nbins, k) - recall_target
    ids, scores, top_entries = jax.lax.platform_dependent(
        tpu=lambda: with_entries(*_approx_max_k(entries, queries, num_valid, k, recall_target)),
        cpu=lambda: with_entries(blocked(spare >= binning.BFLOAT16_RECALL_MARGIN)),
        default=lambda: with_entries(blocked()))
    top_entries = top_entries.reshape(b, h, nq, k, 2, d)
  return ids.reshape(b, h, nq, k), scores.reshape(b, h, nq, k), top_entries


def _group_size(memories: int, queries: int, elements_per_query: int) -> int:
  """Memories per group: the largest divisor of `memories` within the group limits."""
  fitting = [g for g in binning.divisors(memories)
             if g * queries <= GROUP_QUERIES and g * queries * elements_per_query <= GROUP_ELEMENTS]
  return max(fitting) if fitting else 1


def take_rows(table: jax.Array, slot_ids: jax.Array, first_memory=0,
              part: Optional[int] = None) -> jax.Array:
  """Rows of many memories: table[first_memory + m, slot_ids[m, ...]].

  Args:
    table: [memories, slots, ...] (e.g. entries [batch * heads, slots, 2, head_dim]).
    slot_ids: [m, ...] int32 slot indices into memories first_memory .. + m.
    part: gather only table[..., part, :] of each row (KEY or VALUE of entries).
  Returns:
    [m, ..., *table.shape[2:]] ([m, ..., *table.shape[3:]] for one part). One gather
    over the flattened table, which XLA's CPU backend runs faster than a batched
    gather.
  """
  memories, slots = table.shape[:2]
  offsets = (first_memory + jnp.arange(slot_ids.shape[0], dtype=jnp.int32)) * slots
  flat_ids = (slot_ids + offsets.reshape((-1,) + (1,) * (slot_ids.ndim - 1))).reshape(-1)
  flat_table = table.reshape((memories * slots,) + table.shape[2:])
  if part is None:
    return jnp.take(flat_table, flat_ids, axis=0, mode="clip").reshape(
        slot_ids.shape + table.shape[2:])
  return flat_table.at[flat_ids, part].get(mode="clip").reshape(slot_ids.shape + table.shape[3:])


def _exact_group(entries, group_start, queries, num_valid, k, bins, block):
  """Exact top-k slots of one group and their scores: [groups, queries, k] int32, float32."""
  slots = entries.shape[1]
  maxima = binning.bin_maxima(queries, entries, num_valid, bins, block=block,
                              pack_members=False, group_start=group_start)
  top_maxima, top_bins = jax.lax.top_k(maxima, k)
  members = slots // bins
  if members == 1:  # every bin one slot: its maximum is its score
    return top_bins, top_maxima
  # Every true top-k entry is a member of one of the k best bins: rescore them all.
  candidates = (top_bins[..., None]
                + bins * jnp.arange(members, dtype=jnp.int32)).reshape(*top_bins.shape[:2], -1)
  candidate_keys = take_rows(entries, candidates, group_start, part=KEY)
  scores = jnp.einsum("gqd,gqcd->gqc", queries, candidate_keys,
                      preferred_element_type=jnp.float32)
  scores = jnp.where(candidates < num_valid[:, None, None], scores, binning.EMPTY_SCORE)
  best_scores, best = jax.lax.top_k(scores, k)
  return jnp.take_along_axis(candidates, best, axis=-1), best_scores


def _approx_group(entries, group_start, queries, num_valid, k, bins, block,
                  bfloat16_scores=False):
  """Approximate top-k slots of one group by bin argmaxima: [groups, queries, k] int32."""
  slots = entries.shape[1]
  if bins == slots:  # every slot its own bin: the exact answer
    return _exact_group(entries, group_start, queries, num_valid, k, bins, block)[0]
  maxima = binning.bin_maxima(queries, entries, num_valid, bins, block=block,
                              pack_members=True, group_start=group_start,
                              bfloat16_scores=bfloat16_scores)
  packed, top_bins = binning.top_k(maxima, k)
  return binning.unpack_member(packed, slots, bins) * bins + top_bins


def _approx_max_k(entries, queries, num_valid, k, recall_target):
  """TPU: jax.lax.approx_max_k over the masked scores, fused with their matmul:
  slots and scores [memories, queries, k] int32, float32.

  The matmul reads the entries [memories, slots, 2, head_dim] as the 2 * slots rows
  they are laid out as, keys and values alike (the values' scores masked out):
  slicing the keys out first made the compiler relay out every key each step, which
  grows with the memory. With twice the bins over twice the rows, key s lands in bin
  2 * (s % bins), so the keys are binned as the other backends bin them for the same
  `recall_target` (`binning.xla_recall_target`) and the two meet the target alike.

  The scores are laid out [memories, rows, queries] and reduced over the rows: the
  TPU compiler then moves the candidates between layouts half as often as for
  [memories, queries, rows] (its cycle estimate for the selection halves)."""
  memories, slots, _, head_dim = entries.shape
  rows = entries.reshape(memories, 2 * slots, head_dim)
  scores = jnp.einsum("grd,gqd->grq", rows, queries, preferred_element_type=jnp.float32)
  row = jnp.arange(2 * slots, dtype=jnp.int32)
  stored = (row % 2 == KEY)[None, :] & (row // 2 < num_valid[:, None])
  scores = jnp.where(stored[:, :, None], scores, binning.EMPTY_SCORE)
  top_scores, ids = jax.lax.approx_max_k(
      scores, k, reduction_dimension=1,
      recall_target=binning.xla_recall_target(slots, k, recall_target, rows_per_slot=2))
  return jnp.swapaxes(ids // 2, 1, 2).astype(jnp.int32), jnp.swapaxes(top_scores, 1, 2)
