"""The strided-bin reduction (`memory/binning.py`) against numpy and hand-worked sizes."""
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from memorizing_jax.memory import binning
from meshes import cpu_mesh  # pylint: disable=g-bad-import-order

# The reduction compiled whole (its sizes static), as the lookup runs it.
jit_bin_maxima = jax.jit(binning.bin_maxima,
                         static_argnames=("bins", "block", "pack_members", "bfloat16_scores"))


def round_to_bfloat16(x):
  """`x` rounded to bfloat16 by ml_dtypes (numpy's bfloat16), back in float32."""
  return np.asarray(x, dtype=ml_dtypes.bfloat16).astype(np.float32)


def test_divisors_are_every_divisor_in_ascending_order():
  for n in (1, 2, 7, 12, 36, 97, 1024, 1536):
    assert binning.divisors(n) == [d for d in range(1, n + 1) if n % d == 0], n
  assert binning.divisors(36) == [1, 2, 3, 4, 6, 9, 12, 18, 36]  # a square root once


@pytest.mark.parametrize("slots,k,head_dim,bins", [
    # Row cost 40 + 64 / 2 = 72. 16384 bins: 16384 + 32 * 4 * 72 = 25600, against 37376
    # for 32768 bins, 26624 for 8192 and 65536 for one slot per bin.
    (65536, 32, 64, 16384),
    # 1024 bins cost 1024; 512 bins 512 + 8 * 2 * 72 = 1664: one slot per bin wins.
    (1024, 8, 64, 1024),
    # Row cost 44: 1024 bins 1024 + 4 * 4 * 44 = 1728, 512 bins 1920, 2048 bins 2400.
    (4096, 4, 8, 1024),
    (96, 96, 8, 96),  # k = slots: only one bin count is at least k
    (96, 40, 8, 96),  # 48 bins (the other count >= 40) cost 48 + 40 * 2 * 44 = 3568
    # 512 + 4 * 3 * 44 = 1040 against 1088 for 384 bins and 1120 for 768.
    (1536, 4, 8, 512),
])
def test_exact_bin_count_minimises_top_k_plus_rescoring_cost(slots, k, head_dim, bins):
  assert binning.exact_bin_count(slots, k, head_dim) == bins


@pytest.mark.parametrize("slots,bins,rows,block_elements,max_block_elements,block", [
    (1024, 64, 4, 1024, 1024, 256),   # the largest multiple of the bins with 4 * block <= 1024
    (96, 32, 1, 1 << 20, 1 << 23, 96),  # everything fits: the whole memory
    (96, 24, 1, 48, 48, 48),          # a multiple of the bins
    (96, 32, 10, 200, 400, 32),       # no multiple fits 200, the bins fit the larger limit
    (96, 32, 10, 200, 200, 16),       # nor that: the largest divisor of the bins that fits
    (96, 32, 1000, 10, 10, 1),        # nothing fits: one slot
    (8192, 512, 512, 1 << 20, 1 << 23, 2048),   # the approximate lookup at 8K: 4 MiB blocks
    (8192, 8192, 512, 1 << 20, 1 << 23, 8192),  # one slot per bin: one block, not split
])
def test_block_slots_prefers_whole_bins_and_the_largest_fitting_block(
    slots, bins, rows, block_elements, max_block_elements, block):
  assert binning.block_slots(slots, bins, rows, block_elements, max_block_elements) == block
  assert slots % block == 0 and (bins % block == 0 or block % bins == 0)


def numpy_bin_maxima(queries, keys, num_valid, bins):
  """[groups, queries, bins] float64 maxima of the masked scores, and the member
  (slot // bins) attaining each."""
  scores = np.einsum("gqd,gsd->gqs", queries.astype(np.float64), keys.astype(np.float64))
  slot = np.arange(keys.shape[1])
  scores = np.where(slot[None, None, :] < num_valid[:, None, None], scores,
                    binning.EMPTY_SCORE)
  # slot s = member * bins + bin
  by_member = scores.reshape(*scores.shape[:2], keys.shape[1] // bins, bins)
  return by_member.max(axis=2), by_member.argmax(axis=2)


@pytest.mark.parametrize("block", [3, 6, 12])  # below, at and above the bin count
# Few queries score whole blocks of entries, more score the keys sliced out.
@pytest.mark.parametrize("num_queries", [binning.PAIRED_QUERIES - 1, binning.PAIRED_QUERIES + 1])
# bfloat16 scores apply to the keys sliced out only (few queries read whole blocks).
@pytest.mark.parametrize("bfloat16_scores", [False, True])
def test_bin_maxima_equals_numpy_maxima_of_the_masked_scores(block, num_queries,
                                                             bfloat16_scores):
  rng = np.random.default_rng(block)
  bins, group_start = 6, 1
  keys = rng.normal(size=(5, 24, 4)).astype(np.float32)  # 5 memories of 24 slots
  queries = rng.normal(size=(3, num_queries, 4)).astype(np.float32)  # memories 1, 2, 3
  num_valid = np.array([24, 10, 0], np.int32)  # full, partly filled, empty
  if bfloat16_scores and num_queries > binning.PAIRED_QUERIES:
    want, members = numpy_bin_maxima(round_to_bfloat16(queries), round_to_bfloat16(keys[1:4]),
                                     num_valid, bins)
  else:
    want, members = numpy_bin_maxima(queries, keys[1:4], num_valid, bins)
  # The memory's entries: the keys, and values the maxima must not read.
  entries = np.stack([keys, rng.normal(size=keys.shape).astype(np.float32)], axis=2)
  got = jit_bin_maxima(queries, entries, num_valid, bins, block=block, pack_members=False,
                       group_start=group_start, bfloat16_scores=bfloat16_scores)
  assert got.shape == (3, num_queries, bins) and got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert (np.asarray(got)[2] == binning.EMPTY_SCORE).all()
  # Packed, the maxima keep their value to 12 mantissa bits' precision and name their
  # member (4 members: 2 bits).
  packed = jit_bin_maxima(queries, entries, num_valid, bins, block=block, pack_members=True,
                          group_start=group_start, bfloat16_scores=bfloat16_scores)
  valid = want > binning.EMPTY_SCORE
  np.testing.assert_allclose(np.where(valid, packed, 0), np.where(valid, want, 0),
                             rtol=2**-20, atol=1e-6)
  found = np.asarray(jax.jit(binning.unpack_member, static_argnums=(1, 2))(packed, 24, bins))
  np.testing.assert_array_equal(found[valid], members[valid])


def test_bin_maxima_of_a_block_of_more_bins_than_unrolled_equal_numpy_maxima():
  """A block of more than MAX_SLICES bin-wide slices is reduced by a reshape."""
  rng = np.random.default_rng(5)
  bins = 2
  slots = bins * (binning.MAX_SLICES + 2)
  keys = rng.normal(size=(2, slots, 4)).astype(np.float32)
  queries = rng.normal(size=(2, binning.PAIRED_QUERIES + 1, 4)).astype(np.float32)
  num_valid = np.array([slots, 101], np.int32)
  entries = np.stack([keys, rng.normal(size=keys.shape).astype(np.float32)], axis=2)
  want, members = numpy_bin_maxima(queries, keys, num_valid, bins)
  got = jit_bin_maxima(queries, entries, num_valid, bins, block=slots, pack_members=False)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  packed = jit_bin_maxima(queries, entries, num_valid, bins, block=slots, pack_members=True)
  found = jax.jit(binning.unpack_member, static_argnums=(1, 2))(packed, slots, bins)
  np.testing.assert_array_equal(found, members)


def test_bfloat16_scores_reach_the_cpu_as_a_bfloat16_product():
  """The compiled selection keeps its score product in bfloat16 (XLA's CPU backend
  converts a bfloat16 product to float32 unless its right-hand side's contracted axis
  comes first in memory)."""
  entries = np.zeros((1, 4096, 2, 64), np.float32)
  queries = np.zeros((1, 64, 64), np.float32)

  def products(bfloat16_scores):
    """The compiled computations whose product takes the bfloat16 [2048, 64] block of
    keys and [64, 64] query columns (head_dim first) straight from their parameters."""
    hlo = jit_bin_maxima.lower(queries, entries, np.array([4096], np.int32), 512, block=2048,
                               pack_members=True,
                               bfloat16_scores=bfloat16_scores).compile().as_text()
    return [c for c in hlo.split("\n\n")
            if "(param_0: bf16[2048,64], param_1: bf16[64,64])" in c.split("{")[0]
            and "dot(%param_0, %param_1)" in c]
  assert products(True), "no bfloat16 product of the keys and the query columns"
  assert not products(False)


def test_bin_maxima_rejects_a_block_not_aligned_with_the_bins():
  entries, queries = np.zeros((1, 24, 2, 2), np.float32), np.zeros((1, 1, 2), np.float32)
  with pytest.raises(ValueError, match="block=4 must divide slots=24"):
    binning.bin_maxima(queries, entries, np.array([24]), 6, block=4, pack_members=False)


@pytest.mark.parametrize("slots,bins,bits", [(64, 8, 3), (40, 8, 3), (16, 8, 1), (8, 8, 1)])
def test_unpack_member_reads_the_low_mantissa_bits(slots, bins, bits):
  """slots // bins members take bit_length(members - 1) bits (at least 1)."""
  rng = np.random.default_rng(bits)
  scores = rng.normal(size=20).astype(np.float32)
  members = rng.integers(0, max(2, slots // bins), size=20).astype(np.int32)
  low = (1 << bits) - 1
  packed = ((scores.view(np.int32) & ~low) | members).view(np.float32)
  unpack = jax.jit(binning.unpack_member, static_argnums=(1, 2))
  np.testing.assert_array_equal(unpack(packed, slots, bins), members)


@pytest.mark.parametrize("shape,k", [((3, 7, 96), 8),   # 12 members per group
                                     ((5, 40), 4),      # 10 members
                                     ((4, 30), 4),      # 30 % 4: jax.lax.top_k as it is
                                     ((2, 8), 8)])      # n == k
def test_top_k_gives_numpy_top_k_values_in_order_and_indices_that_hold_them(shape, k):
  rng = np.random.default_rng(k + shape[-1])
  scores = rng.normal(size=shape).astype(np.float32)
  # Rows that make the permutation work: the maxima first, last, or all in one group,
  # ties, and a row of nothing but empty slots.
  n = shape[-1]
  special = [np.arange(n)[::-1],                  # every group's maximum is its first member
             np.arange(n),                        # ... its last member
             np.where(np.arange(n) % k == 0, 100.0 + np.arange(n), 0.0),  # one group: the top k
             np.round(rng.normal(size=n)),        # many equal scores
             np.full(n, binning.EMPTY_SCORE)]     # nothing but empty slots
  flat = scores.reshape(-1, n)
  for row, values in zip(flat, special):
    row[:] = values
  values, indices = jax.jit(binning.top_k, static_argnums=1)(scores, k)
  want = -np.sort(-scores, axis=-1)[..., :k]
  np.testing.assert_array_equal(values, want)  # the k largest, in descending order
  indices = np.asarray(indices)
  assert indices.dtype == np.int32
  np.testing.assert_array_equal(np.take_along_axis(scores, indices, axis=-1), want)
  for row in indices.reshape(-1, k):  # k different entries
    assert len(set(row.tolist())) == k


def test_like_varying_is_x_outside_shard_map():
  x = np.arange(6, dtype=np.float32).reshape(2, 3)
  out = jax.jit(binning.like_varying)(x, np.ones(4, jnp.bfloat16), np.ones(2, np.int32))
  assert out.dtype == jnp.float32 and out.shape == (2, 3)
  np.testing.assert_array_equal(out, x)


def test_like_varying_lets_a_constant_loop_carry_take_varying_updates():
  """Inside shard_map, a fori_loop whose constant initial carry is updated with a
  shard's data fails to trace unless the carry is marked as varying like the data."""
  mesh = cpu_mesh(4, 2)
  x = np.arange(24, dtype=np.float32).reshape(8, 3)

  def per_shard(y):  # y: this shard's [2, 3] rows
    init = binning.like_varying(jnp.zeros((2, 3)), y)
    return jax.lax.fori_loop(0, 3, lambda i, carry: carry + y, init)

  out = jax.jit(jax.shard_map(per_shard, mesh=mesh, in_specs=P("data"),
                              out_specs=P("data")))(x)
  np.testing.assert_allclose(out, 3 * x)
