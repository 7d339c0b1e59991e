"""lookup against brute-force numpy top-k: exact results, approximate recall,
masking by count, gradients and argument errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memorizing_jax import memory
from memorizing_jax.memory import binning, lookup_lib, selection
from memory_reference import brute_force_top_k, jit_lookup, recall


def filled_memory(rng, batch, heads, slots, head_dim, writes, reset_after=()):
  """A memory after `writes` (lengths) with some rows reset in between.

  Returns the state and the numpy keys as the lookup should see them.
  """
  state = memory.init(batch, heads, slots, head_dim)
  for i, length in enumerate(writes):
    keys = rng.normal(size=(batch, heads, length, head_dim)).astype(np.float32)
    state = memory.write(state, jnp.asarray(keys), jnp.asarray(keys * 2))
    if i in reset_after:
      state = memory.reset(state, jnp.arange(batch) % 2 == 0)
  return state


def slots_of(result, state):
  """Slot ids of the retrieved entries (positions are unique within a row)."""
  positions = np.asarray(state.positions)
  out = np.full(result.positions.shape, -1)
  for row in range(positions.shape[0]):
    lookup_table = {p: s for s, p in enumerate(positions[row]) if p >= 0}
    found = np.asarray(result.positions[row])
    valid = np.asarray(result.valid[row])
    out[row] = np.where(valid, np.vectorize(lambda p: lookup_table.get(p, -2))(found), -1)
  return out


def assert_exact(result, state, queries, k):
  keys = np.asarray(state.keys)
  filled = np.minimum(np.asarray(state.count), state.slots)
  true_scores, true_slots, all_scores = brute_force_top_k(np.asarray(queries), keys, filled, k)
  valid = np.asarray(result.valid)
  np.testing.assert_array_equal(valid, np.isfinite(true_scores))
  scores = np.asarray(result.scores)
  np.testing.assert_allclose(np.where(valid, scores, 0), np.where(valid, true_scores, 0),
                             rtol=1e-5, atol=1e-5)
  assert (scores[~valid] <= memory.NEG_INF).all()
  found = slots_of(result, state)
  assert (found[valid] >= 0).all(), "every valid entry names a stored, live slot"
  # The retrieved set is the true one, up to ties at the k-th score: each retrieved
  # slot's true score equals the score reported for it, and no slot is repeated.
  rescored = np.take_along_axis(all_scores, np.maximum(found, 0), axis=-1)
  np.testing.assert_allclose(np.where(valid, rescored, 0), np.where(valid, scores, 0),
                             rtol=1e-5, atol=1e-5)
  for f in found.reshape(-1, k):
    f = f[f >= 0]
    assert len(set(f)) == len(f)
  # With continuous random data there are no ties: the sets match exactly.
  np.testing.assert_array_equal(np.sort(found, axis=-1), np.sort(true_slots, axis=-1))


@pytest.mark.parametrize("slots,k,writes,bins,block", [
    (64, 4, (40,), None, None),              # partially filled
    (64, 8, (50, 30), None, None),            # wrapped around
    (256, 8, (300,), 32, 64),                 # bins < block: rescoring 8 members per bin
    (256, 8, (300,), 64, 16),                 # block < bins
    (256, 8, (100, 90), 256, 32),             # one slot per bin
    (96, 5, (70, 20), None, None),            # slots not a power of two
    (1024, 8, (1000,), 8, 1024),              # 128 members a block: reshape-and-reduce
])
def test_exact_equals_brute_force(slots, k, writes, bins, block):
  rng = np.random.default_rng(slots + k)
  state = filled_memory(rng, 2, 3, slots, 8, writes, reset_after=(0,))
  queries = jnp.asarray(rng.normal(size=(2, 3, 7, 8)).astype(np.float32))
  result = jax.jit(lambda s, q: jit_lookup(s, q, k, bins=bins, block=block))(state, queries)
  assert_exact(result, state, queries, k)


def test_exact_over_groups_of_memories():
  # 300 queries per memory exceed the group limit: memories are searched one by one.
  rng = np.random.default_rng(0)
  state = filled_memory(rng, 2, 2, 128, 4, (128,))
  queries = jnp.asarray(rng.normal(size=(2, 2, 300, 4)).astype(np.float32))
  assert_exact(jit_lookup(state, queries, 6), state, queries, 6)


def test_fewer_entries_than_k_are_marked_invalid():
  rng = np.random.default_rng(1)
  state = filled_memory(rng, 2, 1, 32, 4, (10,), reset_after=(0,))
  state = memory.write(state, jnp.ones((2, 1, 3, 4)), jnp.ones((2, 1, 3, 4)))
  queries = jnp.asarray(rng.normal(size=(2, 1, 5, 4)).astype(np.float32))
  for method in ("exact", "approx"):
    result = jit_lookup(state, queries, 8, method=method)
    # Row 0 was reset and holds 3 entries; row 1 holds 13.
    np.testing.assert_array_equal(np.asarray(result.valid).sum(-1), [[[3] * 5], [[8] * 5]])


@pytest.mark.parametrize("method", ["exact", "approx"])
def test_empty_slots_are_masked_by_count_not_by_key_content(method):
  # Stale keys left by a reset score highest but must not be retrieved, while
  # valid all-zero keys must be.
  state = memory.init(1, 1, 64, 2)
  state = memory.write(state, jnp.full((1, 1, 64, 2), 100.0), jnp.ones((1, 1, 64, 2)))
  state = memory.reset(state, jnp.array([True]))
  state = memory.write(state, jnp.zeros((1, 1, 4, 2)), jnp.zeros((1, 1, 4, 2)))
  state = memory.write(state, -jnp.ones((1, 1, 4, 2)), jnp.zeros((1, 1, 4, 2)))
  result = jit_lookup(state, jnp.ones((1, 1, 1, 2)), 6, method=method, bins=8)
  assert np.asarray(result.valid).all()
  np.testing.assert_array_equal(np.sort(np.asarray(result.positions)[0, 0, 0])[:4],
                                [0, 1, 2, 3] if method == "exact" else
                                np.sort(np.asarray(result.positions)[0, 0, 0])[:4])
  assert (np.asarray(result.scores) <= 0).all(), "no stale key was retrieved"
  if method == "exact":
    np.testing.assert_array_equal(np.asarray(result.scores)[0, 0, 0], [0, 0, 0, 0, -2, -2])


@pytest.mark.parametrize("slots,k,recall_target", [
    (1024, 8, 0.95), (4096, 32, 0.95), (8192, 16, 0.9), (4096, 8, 0.99),
])
def test_approx_recall_meets_target(slots, k, recall_target):
  recalls = []
  for seed in range(3):
    rng = np.random.default_rng(seed)
    keys = rng.normal(size=(1, 2, slots, 16)).astype(np.float32)
    queries = rng.normal(size=(1, 2, 64, 16)).astype(np.float32)
    state = memory.write(memory.init(1, 2, slots, 16), jnp.asarray(keys), jnp.asarray(keys))
    result = jax.jit(lambda s, q: jit_lookup(s, q, k, method="approx",
                                                recall_target=recall_target))(state, queries)
    _, true_slots, all_scores = brute_force_top_k(queries, keys, np.array([slots]), k)
    found = np.asarray(result.positions)  # a full memory: position == slot
    recalls.append(recall(found, true_slots))
    # Reported scores are the exact scores of the retrieved slots.
    np.testing.assert_allclose(result.scores, np.take_along_axis(all_scores, found, -1),
                               rtol=1e-5, atol=1e-5)
  assert min(recalls) >= recall_target, recalls


def test_tpu_branch_returns_slots_and_scores_per_query():
  """The TPU selection (approx_max_k over the entries' [memories, 2 * slots, queries]
  scores), run on CPU, where XLA computes approx_max_k exactly: its slots and scores
  are the brute-force top-k of each query's valid slots' keys, in the [memories,
  queries, k] order; no value is ever taken for a key."""
  rng = np.random.default_rng(5)
  memories, slots, nq, d, k = 3, 256, 5, 8, 4
  keys = rng.normal(size=(memories, slots, d)).astype(np.float32)
  queries = rng.normal(size=(memories, nq, d)).astype(np.float32)
  num_valid = np.array([256, 100, 3], np.int32)  # full, partly filled, fewer than k
  # Values 10x the keys score far above them: any value taken would show.
  entries = np.stack([keys, 10 * keys], axis=2)
  ids, scores = jax.jit(selection._approx_max_k, static_argnums=(3, 4))(
      entries, queries, num_valid, k, 0.95)
  assert ids.shape == scores.shape == (memories, nq, k) and ids.dtype == jnp.int32
  true_scores, true_slots, _ = brute_force_top_k(queries[:, None], keys[:, None], num_valid, k)
  true_scores, true_slots = true_scores[:, 0], true_slots[:, 0]  # one head per memory
  valid = true_slots >= 0
  np.testing.assert_array_equal(np.where(valid, ids, -1), true_slots)
  np.testing.assert_allclose(np.where(valid, scores, 0), np.where(valid, true_scores, 0),
                             rtol=1e-5, atol=1e-5)
  assert np.all(np.asarray(scores)[~valid] <= binning.EMPTY_SCORE)


@pytest.mark.parametrize("slots,k,recall_target", [
    (8192, 32, 0.95), (65536, 32, 0.95), (262144, 32, 0.9), (2048, 16, 0.99),
    (1536, 32, 0.95), (49152, 32, 0.9),
])
def test_tpu_approx_max_k_uses_the_binned_lookups_bin_count(slots, k, recall_target):
  """XLA's ApproxTopK, given `xla_recall_target`, reduces the slots into the bins the
  binned lookup uses for the same target (more where XLA rounds the count up), so
  its expected recall meets the target as well."""
  def xla_bins(target):  # the width approx_max_k reduces to before its final top-k
    out = jax.eval_shape(lambda x: jax.lax.approx_max_k(
        x, k, recall_target=target, aggregate_to_topk=False),
        jax.ShapeDtypeStruct((4, slots), jnp.float32))
    return out[0].shape[1]
  ours = binning.approx_bin_count(slots, k, recall_target)
  theirs = xla_bins(binning.xla_recall_target(slots, k, recall_target))
  assert theirs >= ours and binning.expected_recall(theirs, k) >= recall_target
  if slots & (slots - 1) == 0:  # power-of-two memories (all the configs'): exactly ours
    assert theirs == ours
    # Over the entries' 2 * slots rows (a key and a value per slot), twice the bins:
    # the keys, at the even rows, then fall into the even bins as into ours.
    paired = jax.eval_shape(lambda x: jax.lax.approx_max_k(
        x, k, recall_target=binning.xla_recall_target(slots, k, recall_target, 2),
        aggregate_to_topk=False), jax.ShapeDtypeStruct((4, 2 * slots), jnp.float32))
    assert paired[0].shape[1] == 2 * ours
  # Given the expected recall itself, XLA reads it as a per-entry bound and uses more.
  assert xla_bins(recall_target) >= theirs


def test_approx_bin_count_follows_recall_formula():
  bins = binning.approx_bin_count(65536, 32, 0.95)
  assert binning.expected_recall(bins, 32) >= 0.95
  assert binning.expected_recall(bins // 2, 32) < 0.95  # the fewest power-of-two bins
  # Monte Carlo check of the formula: drop top-k entries sharing a bin with a larger one.
  rng = np.random.default_rng(0)
  kept = [len(set(rng.integers(0, 64, 16))) for _ in range(20000)]
  # Recall = distinct bins among the top-k / k (the largest entry of each bin is kept).
  assert abs(np.mean(kept) / 16 - binning.expected_recall(64, 16)) < 0.005


@pytest.mark.parametrize("method", ["exact", "approx"])
def test_gradients_reach_queries_only(method):
  rng = np.random.default_rng(2)
  state = filled_memory(rng, 2, 2, 64, 4, (80,), reset_after=())
  state = memory.reset(state, jnp.array([False, True]))
  state = memory.write(state, jnp.ones((2, 2, 5, 4)), jnp.ones((2, 2, 5, 4)))
  queries = jnp.asarray(rng.normal(size=(2, 2, 3, 4)).astype(np.float32))
  weights = jnp.asarray(rng.normal(size=(2, 2, 3, 8)).astype(np.float32))

  def loss(queries, entries):
    result = jit_lookup(state.replace(entries=entries), queries, 8, method=method)
    return jnp.sum(jnp.where(result.valid, result.scores * weights, 0.0)
                   + jnp.sum(result.values, -1) + jnp.sum(result.keys, -1))

  grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(queries, state.entries)
  result = jit_lookup(state, queries, 8, method=method)
  # d/dq sum_k w_k (q . key_k) = sum_k w_k key_k over the valid entries.
  expected = np.einsum("bhqk,bhqkd->bhqd", np.where(result.valid, weights, 0.0), result.keys)
  np.testing.assert_allclose(grads[0], expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(grads[1], 0.0)


def test_backward_pass_has_no_search():
  # The gradient needs only the retrieved keys: the linearised lookup holds no loop
  # and no top-k (the selection is not differentiated).
  state = filled_memory(np.random.default_rng(3), 1, 2, 256, 8, (256,))
  queries = jnp.ones((1, 2, 4, 8))
  for method in ("exact", "approx"):
    _, linear = jax.linearize(lambda q: jit_lookup(state, q, 8, method=method).scores,
                              queries)
    text = str(jax.make_jaxpr(linear)(queries))
    assert "while" not in text and "top_k" not in text, text


def test_writes_do_not_pass_gradients_to_what_was_written():
  keys = jnp.ones((1, 1, 4, 2))
  grad = jax.grad(lambda k: jit_lookup(memory.write(memory.init(1, 1, 8, 2), k, k),
                                          jnp.ones((1, 1, 1, 2)), 2).scores.sum())(keys)
  np.testing.assert_array_equal(grad, 0.0)


def test_bfloat16_memory_with_float32_queries():
  rng = np.random.default_rng(4)
  keys = rng.normal(size=(1, 2, 128, 8)).astype(np.float32)
  state = memory.write(memory.init(1, 2, 128, 8, dtype=jnp.bfloat16), jnp.asarray(keys),
                       jnp.asarray(keys))
  queries = jnp.asarray(rng.normal(size=(1, 2, 4, 8)).astype(np.float32))
  result = jit_lookup(state, queries, 4)
  assert result.scores.dtype == jnp.float32 and result.keys.dtype == jnp.bfloat16
  stored = np.asarray(state.keys.astype(jnp.float32))
  true_scores, _, _ = brute_force_top_k(np.asarray(queries), stored, np.array([128]), 4)
  np.testing.assert_allclose(result.scores, true_scores, rtol=2e-2, atol=2e-2)


def test_lookup_rejects_bad_arguments():
  state = memory.init(2, 3, 16, 4)
  queries = jnp.zeros((2, 3, 5, 4))
  with pytest.raises(ValueError, match="exceeds the memory's 16 slots"):
    memory.lookup(state, queries, 17)
  with pytest.raises(ValueError, match="head_dim=4"):
    memory.lookup(state, jnp.zeros((2, 3, 5, 8)), 2)
  with pytest.raises(ValueError, match="heads=3"):
    memory.lookup(state, jnp.zeros((2, 2, 5, 4)), 2)
  with pytest.raises(ValueError, match="floating"):
    memory.lookup(state, queries.astype(jnp.int32), 2)
  with pytest.raises(ValueError, match="method"):
    memory.lookup(state, queries, 2, method="fast")
  with pytest.raises(ValueError, match="recall_target"):
    memory.lookup(state, queries, 2, method="approx", recall_target=1.5)
  with pytest.raises(ValueError, match="bins=5 must divide"):
    memory.lookup(state, queries, 2, bins=5)
  with pytest.raises(ValueError, match="block=6 must divide slots=16"):
    memory.lookup(state, queries, 2, bins=4, block=6)
  with pytest.raises(ValueError, match="positive int"):
    memory.lookup(state, queries, 0)


@pytest.mark.parametrize("method", ["exact", "approx"])
def test_ties_give_k_distinct_entries_with_the_tied_score(method):
  # Every stored key is the same: any k distinct live slots are a correct answer.
  state = memory.write(memory.init(1, 1, 128, 4), jnp.ones((1, 1, 100, 4)),
                       jnp.ones((1, 1, 100, 4)))
  result = jit_lookup(state, jnp.ones((1, 1, 3, 4)), 16, method=method)
  np.testing.assert_array_equal(result.scores, 4.0)
  assert np.asarray(result.valid).all()
  for positions in np.asarray(result.positions).reshape(-1, 16):
    assert len(set(positions)) == 16 and positions.max() < 100


def test_check_lookup_args_accepts_what_lookup_serves_and_names_the_fix_otherwise():
  zeros = lambda *shape: np.zeros(shape, np.float32)  # numpy: nothing to compile
  state = memory.MemoryState(entries=zeros(2, 3, 16, 2, 4), count=np.zeros(2, np.int32),
                             positions=np.zeros((2, 16), np.int32))
  queries = zeros(2, 3, 5, 4)
  assert lookup_lib.check_lookup_args(state, queries, 16, "approx", 1.0) is None
  with pytest.raises(ValueError, match=r"memory values \(2, 3, 16, 8\) must match keys"):
    memory.MemoryState.from_keys_values(zeros(2, 3, 16, 4), zeros(2, 3, 16, 8), state.count,
                                        state.positions)
  with pytest.raises(ValueError, match=r"memory entries must be \[batch, heads, slots, 2"):
    lookup_lib.check_lookup_args(state.replace(entries=zeros(2, 3, 16, 4)), queries, 2,
                                 "exact", 0.95)
  with pytest.raises(ValueError, match="memory entries must be floating point"):
    lookup_lib.check_lookup_args(state.replace(entries=state.entries.astype(np.int32)),
                                 queries, 2, "exact", 0.95)
  with pytest.raises(ValueError, match="queries must be"):
    lookup_lib.check_lookup_args(state, queries[0], 2, "exact", 0.95)
  with pytest.raises(ValueError, match="recall_target"):
    lookup_lib.check_lookup_args(state, queries, 2, "approx", 0.0)
  with pytest.raises(ValueError, match="k=17 exceeds"):
    lookup_lib.check_lookup_args(state, queries, 17, "exact", 0.95)
  with pytest.raises(ValueError, match="positive int"):
    lookup_lib.check_lookup_args(state, queries, 2.0, "exact", 0.95)


# select_slots compiled whole, its options static.
jit_select_slots = jax.jit(selection.select_slots, static_argnums=3,
                           static_argnames=("method", "recall_target", "bins", "block"))


@pytest.mark.parametrize("bins", [None, 8])  # one slot per bin; 4 members per bin
def test_select_slots_are_the_brute_force_top_k_of_the_valid_slots(bins):
  rng = np.random.default_rng(6)
  keys = rng.normal(size=(2, 3, 32, 4)).astype(np.float32)
  queries = rng.normal(size=(2, 3, 5, 4)).astype(np.float32)
  num_valid = np.array([32, 9], np.int32)
  entries = np.stack([keys, np.zeros_like(keys)], axis=3)
  ids, scores, top_entries = jit_select_slots(entries, num_valid, queries, 6, method="exact",
                                              recall_target=0.95, bins=bins)
  assert ids.shape == scores.shape == (2, 3, 5, 6) and ids.dtype == jnp.int32
  true_scores, true_slots, _ = brute_force_top_k(queries, keys, num_valid, 6)
  np.testing.assert_array_equal(ids, true_slots)  # no row has fewer than 6 entries
  np.testing.assert_allclose(scores, true_scores, rtol=1e-5, atol=1e-5)
  assert (np.asarray(ids)[1] < 9).all()
  assert top_entries is None  # the exact lookup leaves the entries to gather_result


def test_approximate_select_slots_returns_the_entries_of_its_slots_and_their_exact_scores():
  rng = np.random.default_rng(16)
  # Small integers: every dot product is an integer, exact in float32, so a packed
  # maximum (its low mantissa bits holding the member index) would differ from it.
  keys = rng.integers(-3, 4, size=(2, 3, 64, 4)).astype(np.float32)
  queries = rng.integers(-3, 4, size=(2, 3, 5, 4)).astype(np.float32)
  num_valid = np.array([64, 40], np.int32)
  entries = np.stack([keys, rng.normal(size=keys.shape).astype(np.float32)], axis=3)
  ids, scores, top_entries = jit_select_slots(entries, num_valid, queries, 4, method="approx",
                                              recall_target=0.9, bins=16)
  rows, heads = np.arange(2)[:, None, None, None], np.arange(3)[None, :, None, None]
  np.testing.assert_array_equal(top_entries, entries[rows, heads, ids])
  np.testing.assert_array_equal(scores, np.einsum("bhqd,bhqkd->bhqk", queries,
                                                  entries[rows, heads, ids, 0]))
  assert (np.asarray(ids)[1] < 40).all()


@pytest.mark.parametrize("recall_target,bfloat16_scores", [(0.9, True), (0.93, False)])
def test_cpu_approximate_selection_scores_in_bfloat16_only_with_recall_to_spare(
    recall_target, bfloat16_scores):
  # 8 bins of 2 members, k 2: expected recall 0.9375, so 0.0375 to spare against 0.9
  # (>= binning.BFLOAT16_RECALL_MARGIN) and 0.0075 against 0.93 (below).
  assert binning.expected_recall(8, 2) == pytest.approx(0.9375)
  # Slot s is member s // 8 of bin s % 8. Bin 0's members score 1 + 2**-10 (slot 0)
  # and 1 (slot 8): apart in float32, equal in bfloat16 (spacing 2**-7 at 1), where the
  # later member's packed index wins the tie. Bin 1 (slot 1) scores 0.5, the rest -1.
  keys = np.zeros((1, 1, 16, 4), np.float32)
  keys[..., 0] = -1.0
  keys[0, 0, [0, 8, 1], 0] = [1 + 2**-10, 1.0, 0.5]
  entries = np.stack([keys, np.zeros_like(keys)], axis=3)
  queries = np.zeros((1, 1, binning.PAIRED_QUERIES + 1, 4), np.float32)
  queries[..., 0] = 1.0
  ids, scores, _ = jit_select_slots(entries, np.array([16], np.int32), queries, 2,
                                    method="approx", recall_target=recall_target, bins=8)
  first = 8 if bfloat16_scores else 0
  np.testing.assert_array_equal(np.asarray(ids)[0, 0], [[first, 1]] * queries.shape[2])
  # The scores are the float32 products with the keys retrieved, whichever they are.
  np.testing.assert_array_equal(np.asarray(scores)[0, 0],
                                [[keys[0, 0, first, 0], 0.5]] * queries.shape[2])


def test_scores_with_gradient_passes_scores_and_differentiates_as_q_dot_key():
  rng = np.random.default_rng(7)
  queries = rng.normal(size=(1, 2, 3, 4)).astype(np.float32)
  top_entries = rng.normal(size=(1, 2, 3, 5, 2, 4)).astype(np.float32)  # keys, values
  scores = rng.normal(size=(1, 2, 3, 5)).astype(np.float32)  # any scores: passed through
  weights = rng.normal(size=(1, 2, 3, 5)).astype(np.float32)
  out = jax.jit(lookup_lib.scores_with_gradient)(queries, top_entries, scores)
  np.testing.assert_array_equal(out, scores)
  grads = jax.jit(jax.grad(
      lambda q, e, s: jnp.sum(weights * lookup_lib.scores_with_gradient(q, e, s)),
      argnums=(0, 1, 2)))(queries, top_entries, scores)
  # d/dq sum_k w_k (q . key_k) = sum_k w_k key_k (the values play no part); nothing
  # reaches the entries or the scores.
  np.testing.assert_allclose(grads[0], np.einsum("bhqk,bhqkd->bhqd", weights,
                                                 top_entries[..., 0, :]), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(grads[1], 0.0)
  np.testing.assert_array_equal(grads[2], 0.0)
  # bfloat16 queries get a bfloat16 gradient.
  half = jax.eval_shape(jax.grad(
      lambda q: lookup_lib.scores_with_gradient(q, top_entries, scores).sum()),
      jax.ShapeDtypeStruct(queries.shape, jnp.bfloat16))
  assert half.dtype == jnp.bfloat16


def test_take_rows_indexes_each_memory_from_first_memory_on():
  rng = np.random.default_rng(8)
  table = rng.normal(size=(5, 6, 3)).astype(np.float32)  # 5 memories of 6 slots
  slot_ids = rng.integers(0, 6, size=(3, 2, 4)).astype(np.int32)  # memories 2, 3, 4
  got = jax.jit(selection.take_rows, static_argnums=2)(table, slot_ids, 2)
  want = np.stack([table[2 + m][slot_ids[m]] for m in range(3)])
  np.testing.assert_array_equal(got, want)
  # One part of each entry ([.., 2, d] rows): the values of memories 2, 3, 4.
  entries = rng.normal(size=(5, 6, 2, 3)).astype(np.float32)
  got = jax.jit(selection.take_rows, static_argnums=(2, 3))(entries, slot_ids, 2, memory.VALUE)
  np.testing.assert_array_equal(got, np.stack([entries[2 + m, slot_ids[m], 1] for m in range(3)]))
  positions = np.arange(12, dtype=np.int32).reshape(2, 6)  # a table without trailing axes
  np.testing.assert_array_equal(jax.jit(selection.take_rows)(positions, slot_ids[:2, 0]),
                                [positions[0][slot_ids[0, 0]], positions[1][slot_ids[1, 0]]])


def test_gather_result_takes_the_selected_entries_and_marks_the_invalid_ones():
  rng = np.random.default_rng(9)
  b, h, slots, d, k = 2, 2, 8, 3, 4
  keys = rng.normal(size=(b, h, slots, d)).astype(np.float32)
  values = rng.normal(size=(b, h, slots, d)).astype(np.float32)
  positions = rng.integers(0, 100, size=(b, slots)).astype(np.int32)
  queries = rng.normal(size=(b, h, 1, d)).astype(np.float32)
  num_valid = np.array([8, 2], np.int32)
  slot_ids = rng.permuted(np.broadcast_to(np.arange(slots), (b, h, 1, slots)),
                          axis=-1)[..., :k].astype(np.int32)
  scores = rng.normal(size=(b, h, 1, k)).astype(np.float32)
  entries = np.stack([keys, values], axis=3)
  result = jax.jit(lookup_lib.gather_result)(entries, positions, num_valid, queries, slot_ids,
                                             scores)
  assert isinstance(result, memory.LookupResult)
  rows = np.arange(b)[:, None, None, None]
  heads = np.arange(h)[None, :, None, None]
  np.testing.assert_array_equal(result.keys, keys[rows, heads, slot_ids])
  np.testing.assert_array_equal(result.values, values[rows, heads, slot_ids])
  np.testing.assert_array_equal(result.positions, positions[np.arange(b)[:, None, None, None],
                                                            slot_ids])
  valid = slot_ids < num_valid[:, None, None, None]
  np.testing.assert_array_equal(result.valid, valid)
  np.testing.assert_array_equal(result.slots, slot_ids)
  np.testing.assert_array_equal(result.scores, np.where(valid, scores, memory.NEG_INF))
  assert jax.eval_shape(lookup_lib.gather_result, entries, None, num_valid, queries,
                        slot_ids, scores).positions is None
  # Entries the selection already gathered are used as they are.
  given = rng.normal(size=(b, h, 1, k, 2, d)).astype(np.float32)
  np.testing.assert_array_equal(jax.jit(lookup_lib.gather_result)(
      entries, positions, num_valid, queries, slot_ids, scores, top_entries=given).entries,
      given)
