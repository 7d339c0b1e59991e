"""`retrieval.attend` against a numpy softmax attention, and `lookup_slot_shard` on 4
CPU devices against the brute-force top-k of the whole memory."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

from memorizing_jax import memory
from memorizing_jax.memory import retrieval
from memory_reference import brute_force_top_k


jit_attend = jax.jit(retrieval.attend, static_argnums=2)


def numpy_attention(scores, valid, values, scale):
  """(out [b, h, q, d], weights [b, h, q, k]) float64: a softmax of scale[head] * score
  over the valid entries (none valid: weights and out 0)."""
  logits = np.where(valid, scores * scale[None, :, None, None], -np.inf)
  top = np.max(np.where(valid, logits, -1e300), axis=-1, keepdims=True)
  weights = np.where(valid, np.exp(logits - top), 0.0)
  weights = weights / np.maximum(weights.sum(-1, keepdims=True), 1e-300)
  return np.einsum("bhqk,bhqkd->bhqd", weights, values), weights


def test_attend_is_a_softmax_over_the_valid_entries():
  rng = np.random.default_rng(0)
  b, h, q, k, d = 2, 3, 4, 5, 2
  scores = rng.normal(size=(b, h, q, k)).astype(np.float32)
  valid = rng.random(size=(b, h, q, k)) < 0.7
  valid[0, 0, 0] = False  # a query that found nothing
  values = rng.normal(size=(b, h, q, k, d)).astype(np.float32)
  scale = np.array([0.5, 2.0, 4.0], np.float32)
  keys = rng.normal(size=(b, h, q, k, d)).astype(np.float32)  # not read by the attention
  found = memory.LookupResult(
      scores=np.where(valid, scores, np.float32(memory.NEG_INF)),
      entries=np.stack([keys, values], axis=4), positions=None, valid=valid,
      slots=np.zeros((b, h, q, k), np.int32))
  out, weights = jit_attend(found, jnp.asarray(scale), jnp.float32)
  want_out, want_weights = numpy_attention(scores.astype(np.float64), valid, values, scale)
  assert out.shape == (b, h, q, d) and weights.dtype == jnp.float32
  np.testing.assert_allclose(weights, want_weights, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(out)[0, 0, 0], 0.0)
  half = jax.eval_shape(lambda f: retrieval.attend(f, jnp.asarray(scale), jnp.bfloat16), found)
  assert half[0].dtype == jnp.bfloat16
  # The entries are taken without gradient; the scores are differentiated.
  grad_scores, grad_entries = jax.jit(jax.grad(
      lambda s, e: retrieval.attend(found.replace(scores=s, entries=e), jnp.asarray(scale),
                                    jnp.float32)[0].sum(), argnums=(0, 1)))(
                                        found.scores, found.entries)
  np.testing.assert_array_equal(grad_entries, 0.0)
  assert np.abs(np.asarray(grad_scores)).sum() > 0


SHARDS, SLOTS, K = 4, 32, 6


def test_lookup_slot_shard_on_4_shards_finds_the_whole_memorys_top_k():
  """Row 0 full (wrapped around: count 45), row 1 holding 5 entries (fewer than k, all
  on the first of the 4 shards of 8 slots)."""
  rng = np.random.default_rng(1)
  keys = rng.normal(size=(2, 2, SLOTS, 4)).astype(np.float32)
  values = rng.normal(size=(2, 2, SLOTS, 4)).astype(np.float32)
  count = np.array([45, 5], np.int32)
  state = memory.MemoryState.from_keys_values(keys, values, count,
                                              np.zeros((2, SLOTS), np.int32))
  queries = rng.normal(size=(2, 2, 3, 4)).astype(np.float32)
  mesh = Mesh(np.array(jax.devices()[:SHARDS]), ("memory",))
  split = P(None, None, "memory")
  state_spec = memory.MemoryState(entries=split, count=P(), positions=P(None, "memory"))

  def per_shard(shard_state, q):
    found = retrieval.lookup_slot_shard(shard_state, q, K, slot_axis="memory",
                                        total_slots=SLOTS, method="exact",
                                        recall_target=0.95)
    assert found.entries.shape == (2, 2, 3, K, 2, 4) and found.positions is None
    # Each entry's key and value come from the one shard that holds it (0 elsewhere).
    return found.replace(entries=jax.lax.psum(found.entries, "memory"))

  result_spec = memory.LookupResult(scores=P(), entries=P(), positions=None, valid=P(),
                                    slots=P())
  got = jax.jit(jax.shard_map(per_shard, mesh=mesh, in_specs=(state_spec, P()),
                              out_specs=result_spec))(state, queries)
  scores, slots, _ = brute_force_top_k(queries, keys, np.minimum(count, SLOTS), K)
  valid = slots >= 0
  np.testing.assert_array_equal(got.valid, valid)
  np.testing.assert_array_equal(valid.sum(-1), [[[6] * 3] * 2, [[5] * 3] * 2])
  np.testing.assert_array_equal(np.where(valid, got.slots, -1), slots)
  np.testing.assert_allclose(np.where(valid, got.scores, 0), np.where(valid, scores, 0),
                             rtol=1e-5, atol=1e-5)
  assert (np.asarray(got.scores)[~valid] <= memory.NEG_INF).all()
  rows, heads = np.arange(2)[:, None, None, None], np.arange(2)[None, :, None, None]
  taken = np.maximum(slots, 0)
  for name, table in (("keys", keys), ("values", values)):
    np.testing.assert_array_equal(np.where(valid[..., None], getattr(got, name), 0),
                                  np.where(valid[..., None], table[rows, heads, taken], 0))
