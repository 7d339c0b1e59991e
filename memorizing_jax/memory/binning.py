"""Partial reduction of query-key scores into strided bins, block by block.

Slot `s` of a memory with `bins` bins belongs to bin `s % bins` (strided bins, so
neighbouring tokens, whose keys tend to be alike, fall into different bins). The
maximum score of each bin is computed while the scores are produced, one block of
slots at a time, so the full `[queries, slots]` score matrix never exists.

Two facts make this useful (TPU-KNN, Chern et al. 2022):
  * exact top-k: every true top-k entry lies in one of the k bins with the largest
    maxima, so rescoring the members of those k bins gives the exact top-k;
  * approximate top-k: taking the argmax of each of the top-k bins finds a true
    top-k entry unless a larger top-k entry shares its bin; with `bins` bins the
    expected recall is `expected_recall(bins, k)`.
"""
from __future__ import annotations

import math
from typing import Tuple

import jax
import jax.numpy as jnp

from memorizing_jax.memory.state import KEY

# Score given to empty slots. Finite (unlike -inf), so that writing a member index
# into its low mantissa bits still gives a finite number, and below any real score.
EMPTY_SCORE = float(jnp.finfo(jnp.float32).min)

# Float32 elements of one block of scores (4 MiB), for blocks of whole bins' ranges:
# the matmul's output is read back from cache by the maxima that follow it. Measured
# on the 2-core CPU host (32 MiB L3), the approximate lookup's selection of 512
# queries over 65,536 slots in blocks of 2,048 slots took 764 ms against 1,038 ms in
# blocks of 16,384 (fastest of 9; at 8,192 slots 235 against 257 ms).
BLOCK_ELEMENTS = 1 << 20

# At most this many (32 MiB) where bins are so wide that `BLOCK_ELEMENTS` would split
# them (a block narrower than the bins updates a slice of the maxima per step, which
# costs more than the larger block: the exact lookup over 8,192 one-slot bins took
# 464 ms in one block against 556 ms in blocks of 2,048).
MAX_BLOCK_ELEMENTS = 1 << 23

# With at most this many queries per memory (decoding), a block's keys are scored with
# its values, read in order, and the values' scores dropped: the matmul is bound by
# reading the memory, and XLA:CPU reads the keys alone, strided, far below its bandwidth
# (a 65,536-slot lookup for one token, 8 heads x 64: 57-60 ms strided, 14-15 ms so, and
# 7-8 ms when the keys were stored apart from the values, half the bytes).
PAIRED_QUERIES = 8

# Most bin-wide slices of a block reduced by unrolled elementwise maxima (beyond,
# a reshape and reduce, which XLA's CPU backend runs as a separate pass).
MAX_SLICES = 64

# Most member-index bits packed into a float32 score (of 23 mantissa bits).
MAX_MEMBER_BITS = 12

# How far the binned recall (`expected_recall`) must exceed the recall target before the
# approximate selection may score in bfloat16 (`bin_maxima(..., bfloat16_scores=True)`).
# Rounding float32 keys and queries to bfloat16 cost 0.002 of recall: `benchmarks/
# retrieval.py --slots 8192 65536 --head_dim 64 --batch 4 --heads 8 --queries 512 --k 32`
# measured 0.970 and 0.968 (512 bins; expected 0.970), against 0.972 and 0.970 in
# float32 (selection.py's table).
BFLOAT16_RECALL_MARGIN = 0.01


def divisors(n: int) -> list[int]:
  """All positive divisors of `n`, ascending."""
  small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
  return sorted(set(small + [n // d for d in small]))


def expected_recall(bins: int, k: int) -> float:
  """Expected recall of "argmax of the top-k bins" with `bins` strided bins.

  If the true top-k entries fall into bins independently and uniformly, the i-th
  largest (i = 0..k-1) is found iff none of the i larger ones shares its bin, with
  probability (1 - 1/bins)**i; the recall is the mean over i. Its first-order form
  is 1 - (k - 1) / (2 * bins).
  """
  if bins <= 1:
    return 1.0 / k
  p = 1.0 - 1.0 / bins
  return (1.0 - p**k) / (k * (1.0 - p))


def approx_bin_count(slots: int, k: int, recall_target: float) -> int:
  """Fewest bins dividing `slots` (and >= k) whose expected recall meets the target.

  Also large enough that a bin has at most 2**MAX_MEMBER_BITS members. Returns
  `slots` (every slot its own bin: exact) when no smaller count qualifies.
  """
  for bins in divisors(slots):
    if (bins >= k and expected_recall(bins, k) >= recall_target
        and slots // bins <= 1 << MAX_MEMBER_BITS):
      return bins
  return slots


def xla_recall_target(slots: int, k: int, recall_target: float, rows_per_slot: int = 1
                      ) -> float:
  """The `recall_target` to give `jax.lax.approx_max_k` over `slots` so that it
  reduces them into `approx_bin_count(slots, k, recall_target)` bins.

  With `rows_per_slot` rows per slot (the memory's entries, a key and a value per
  slot, read as 2 * slots rows), it asks for that many times the bins: slot s's key,
  row 2s, then shares its bin only with the keys of slot s's strided bin.

  XLA's ApproxTopK reads its recall target as the chance that the k-th largest entry
  shares no bin with a larger one, (1 - 1/bins)**(k - 1), a lower bound of the
  recall; `recall_target` here is the expected recall (`expected_recall`), as it is
  for the binned lookup. XLA rounds the bin count up (to slots / 2**n, and to its
  lane tiling); for memories of a power-of-two size it is the count asked for.
  """
  bins = approx_bin_count(slots, k, recall_target)
  if bins >= slots:
    return 1.0  # no binning: the exact top-k
  return (1.0 - 1.0 / (rows_per_slot * bins))**(k - 1)


def exact_bin_count(slots: int, k: int, head_dim: int) -> int:
  """Bins for the exact lookup, trading top-k width against rescoring work.

  The exact lookup takes the top k of `bins` maxima (cost ~ bins per query) and then
  gathers and rescores the k * slots / bins members of those bins (cost ~ one
  head_dim-long row each). The row cost, in units of one element of top-k, was
  measured on CPU at about 40 + head_dim / 2. With one member per bin no rescoring
  gather is needed at all.
  """
  row_cost = 40 + head_dim // 2
  best, best_cost = slots, float(slots)
  for bins in divisors(slots):
    if bins < k:
      continue
    members = slots // bins
    cost = bins + (k * members * row_cost if members > 1 else 0)
    if cost < best_cost:
      best, best_cost = bins, cost
  return best


def block_slots(slots: int, bins: int, rows: int, block_elements: int = BLOCK_ELEMENTS,
                max_block_elements: int = MAX_BLOCK_ELEMENTS) -> int:
  """Slots per block: a divisor of `slots` that divides or is a multiple of `bins`.

  `rows` queries score the block. The largest multiple of `bins` whose scores fit
  `block_elements`; else `bins` itself if they fit `max_block_elements`; else the
  largest divisor of `bins` that fits `max_block_elements` (1 if none does).
  """
  fitting = [b for b in divisors(slots) if b % bins == 0 and rows * b <= block_elements]
  if fitting:
    return max(fitting)
  return max(b for b in divisors(bins) if b == 1 or rows * b <= max_block_elements)


def bin_maxima(queries: jax.Array, entries: jax.Array, num_valid: jax.Array, bins: int, *,
               block: int, pack_members: bool, group_start: jax.Array | int = 0,
               bfloat16_scores: bool = False) -> jax.Array:
  """The maximum score of each strided bin, computed block by block.

  Args:
    queries: [groups, queries, head_dim], in the keys' dtype.
    entries: [all_groups, slots, 2, head_dim], keys at [..., KEY, :] (as
      `MemoryState.entries`); rows `group_start : group_start + groups` are scored
      (their keys sliced block by block, so the group's keys are never copied whole:
      on CPU, slicing all keys out of the entries first cost 10% of the training step
      at 65,536 slots). `slots` is divisible by `bins` and by `block`.
    num_valid: [groups] int32; slots `>= num_valid` are empty and score EMPTY_SCORE.
    bins: number of bins; slot s is in bin s % bins.
    block: slots per block; divides `bins` or is a multiple of it.
    pack_members: write each score's member index (s // bins) into its low mantissa
      bits, so that the maximum also says which member attained it (see
      `unpack_member`). The maxima are then exact to about 2**-(23 - bits).
    bfloat16_scores: with more than `PAIRED_QUERIES` queries, score bfloat16 keys and
      queries (accumulated in float32), for an approximate selection on CPU.
  Returns:
    [groups, queries, bins] float32.

  Where a block spans several bins, its scores are computed [groups, slots, queries]:
  the keys, as stored, are the product's left-hand side, and the queries, transposed
  once (head_dim first), its right, and the maxima, kept [groups, bins, queries], are
  transposed once at the end. XLA's CPU backend multiplies bfloat16 in bfloat16 (on
  the 2-core CPU host, whose cores have AVX-512 bfloat16 and AMX instructions, at
  2.4-4.4x the float32 rate in four shapes tried) only when the right-hand side's
  contracted axis comes first in memory; otherwise it converts both sides to float32
  first. In float32 this layout is faster too. The binned maxima of 32 memories x 512
  queries, head_dim 64, 512 bins, blocks of 2,048 slots, on that host (fastest of 7,
  scratch script): bfloat16 113 ms at 8,192 slots and 583 ms at 65,536, against 143
  and 903 ms with the queries on the left and the keys laid out head_dim-first by a
  product with the identity; float32 149 and 1099 ms against 177 and 1333 ms. Where
  a block is one bin or less (the exact lookup's many bins), its scores are the
  maxima's own slice, and they are computed [groups, queries, slots] as they are
  kept: transposing the maxima there would move every score once more (the exact
  lookup over 8,192 one-slot bins took 1,696 ms against 1,099 ms so, in
  `benchmarks/retrieval.py`'s table shape).
  """
  groups, nq, head_dim = queries.shape
  slots = entries.shape[1]
  if slots % bins or slots % block or (bins % block and block % bins):
    raise ValueError(f"block={block} must divide slots={slots} and divide or be a multiple of "
                     f"bins={bins} (bins must divide slots): pass another block, or none")
  member_bits = max(1, (slots // bins - 1).bit_length())
  low_mask = (1 << member_bits) - 1
  valid_limit = num_valid[:, None, None]
  paired = nq <= PAIRED_QUERIES
  # Slots first where a block's maxima are a fraction of its scores (see above).
  slots_first = block > bins
  slot_axis = 1 if slots_first else 2
  query_columns = jnp.swapaxes(queries, 1, 2)
  if bfloat16_scores and not paired:
    queries, query_columns = queries.astype(jnp.bfloat16), query_columns.astype(jnp.bfloat16)

  def masked(scores, first_slot):
    """The block's scores of the slots first_slot, first_slot + 1, ... (along
    `slot_axis`): EMPTY_SCORE where not valid, the member index packed in if asked."""
    slot = first_slot + jnp.arange(scores.shape[slot_axis], dtype=jnp.int32)
    slot = slot[None, :, None] if slots_first else slot[None, None, :]
    scores = jnp.where(slot < valid_limit, scores, EMPTY_SCORE)
    if not pack_members:
      return scores
    bits = jax.lax.bitcast_convert_type(scores, jnp.int32)
    bits = (bits & ~low_mask) | (slot // bins)
    return jax.lax.bitcast_convert_type(bits, jnp.float32)

  def block_scores(start):
    """The block's float32 scores, [groups, block, queries] if `slots_first`, else
    [groups, queries, block]."""
    if paired:  # reading the keys bounds it: read the block whole, in order
      rows = jax.lax.dynamic_slice(entries, (group_start, start, 0, 0),
                                   (groups, block, 2, head_dim)).reshape(groups, 2 * block, head_dim)
    else:
      rows = jax.lax.dynamic_slice(entries, (group_start, start, KEY, 0),
                                   (groups, block, 1, head_dim)).reshape(groups, block, head_dim)
      rows = rows.astype(queries.dtype)
    if slots_first:
      scores = jnp.einsum("gsd,gdq->gsq", rows, query_columns, preferred_element_type=jnp.float32)
    else:
      scores = jnp.einsum("gqd,gsd->gqs", queries, rows, preferred_element_type=jnp.float32)
    # Read whole, every other row is a value: keep the keys' scores.
    return jax.lax.slice_in_dim(scores, KEY, None, 2, axis=slot_axis) if paired else scores

  def block_maxima(i):
    start = i * block
    scores = block_scores(start)
    if block // bins > MAX_SLICES:  # (slots first)
      return masked(scores, start).reshape(groups, block // bins, bins, nq).max(axis=1)
    if block >= bins:
      # Elementwise maxima of the block's bin-wide slices, each masked (and packed) on
      # its own: XLA fuses it all into one pass over the matmul's output. (Masking the
      # whole block first made that a pass of its own, writing the block out again:
      # 14 ms against 4 ms for 512 queries x 8192 slots x 64 on the 2-core CPU.)
      parts = [masked(jax.lax.slice_in_dim(scores, j * bins, (j + 1) * bins, axis=slot_axis),
                      start + j * bins)
               for j in range(block // bins)]
      while len(parts) > 1:
        parts = [jnp.maximum(a, b) for a, b in zip(parts[::2], parts[1::2])] + (
            [parts[-1]] if len(parts) % 2 else [])
      return parts[0]
    return masked(scores, start)

  num_blocks = slots // block
  if block >= bins:
    def body(i, maxima):
      return jnp.maximum(maxima, block_maxima(i))
  else:
    def body(i, maxima):
      offset = (i * block) % bins
      current = jax.lax.dynamic_slice_in_dim(maxima, offset, block, axis=slot_axis)
      return jax.lax.dynamic_update_slice_in_dim(
          maxima, jnp.maximum(current, block_maxima(i)), offset, axis=slot_axis)
  init = jnp.full((groups, bins, nq) if slots_first else (groups, nq, bins), -jnp.inf,
                  jnp.float32)
  init = like_varying(init, queries, entries, num_valid)
  maxima = jax.lax.fori_loop(0, num_blocks, body, init)
  return jnp.swapaxes(maxima, 1, 2) if slots_first else maxima


def top_k(scores: jax.Array, k: int) -> Tuple[jax.Array, jax.Array]:
  """`jax.lax.top_k(scores, k)`, faster on CPU: the same values, sorted, and their
  indices (which of two equal scores is taken may differ).

  XLA's CPU top-k keeps a heap of the k largest scores seen, in order, so its cost
  is mostly the scores that enter the heap after the first k. Here the last axis
  is first permuted so that it starts with k large scores: the maximum of each of
  the k strided groups {j, j + k, j + 2k, ...} swaps places with the group's first
  member. Measured on the 2-core CPU host, for 16,384 rows of 512 scores and
  k = 32, fastest of 7: 114 ms against 186 ms (the top-k alone on the permuted
  scores: 85 ms). Other backends, and a last axis that is not a multiple of k,
  take `jax.lax.top_k` as it is.

  Args:
    scores: [..., n] float.
  Returns:
    values [..., k] in descending order, and their int32 indices into the last axis.
  """
  def plain():  # a tuple, as leaders_first returns (platform_dependent's branches match)
    return tuple(jax.lax.top_k(scores, k))

  n = scores.shape[-1]
  if n % k or n == k:
    return plain()

  def leaders_first():
    groups = scores.reshape(*scores.shape[:-1], n // k, k)  # member m of group j: m * k + j
    leader = jnp.argmax(groups, axis=-2).astype(jnp.int32)  # [..., k]
    member = jnp.arange(n // k, dtype=jnp.int32)[:, None]
    swapped = jnp.where(member == 0, jnp.max(groups, axis=-2)[..., None, :],
                        jnp.where(member == leader[..., None, :], groups[..., :1, :], groups))
    values, place = jax.lax.top_k(swapped.reshape(scores.shape), k)
    place_member, group = place // k, place % k
    group_leader = jnp.take_along_axis(leader, group, axis=-1)
    original = jnp.where(place_member == 0, group_leader,
                         jnp.where(place_member == group_leader, 0, place_member))
    return values, original * k + group

  return jax.lax.platform_dependent(cpu=leaders_first, default=plain)


def like_varying(x: jax.Array, *like: jax.Array) -> jax.Array:
  """`x`, marked as varying over the shard_map axes that any of `like` varies over.

  Inside `jax.shard_map` a loop carry must keep its type, so an initial value built
  from constants must vary over the same manual axes as its updates. A zero made by
  `full_like` inherits those axes; adding it changes nothing else. Outside
  shard_map this is an addition of zero.
  """
  zero = sum(jax.lax.full_like(y, 0, dtype=x.dtype, shape=()) for y in like)
  return x + zero


def unpack_member(packed: jax.Array, slots: int, bins: int) -> jax.Array:
  """The member index written by `bin_maxima(..., pack_members=True)`; int32."""
  member_bits = max(1, (slots // bins - 1).bit_length())
  bits = jax.lax.bitcast_convert_type(packed, jnp.int32)
  return bits & ((1 << member_bits) - 1)
