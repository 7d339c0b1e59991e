"""sharded_lookup on 8 forced CPU devices against the unsharded lookup and numpy."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memorizing_jax import memory
from memory_reference import brute_force_top_k, jit_lookup, make_mesh, recall

BATCH, HEADS, SLOTS, HEAD_DIM, QUERIES, K = 8, 2, 512, 8, 6, 8


@pytest.fixture(scope="module")
def state_and_queries():
  rng = np.random.default_rng(0)
  state = memory.init(BATCH, HEADS, SLOTS, HEAD_DIM)
  # Rows end up with different fills: full and wrapped, partial (reset mid-batch),
  # fewer entries than k, and empty.
  state = memory.write(state, jnp.asarray(rng.normal(size=(BATCH, HEADS, 600, HEAD_DIM)),
                                          jnp.float32),
                       jnp.asarray(rng.normal(size=(BATCH, HEADS, 600, HEAD_DIM)), jnp.float32))
  state = memory.reset(state, jnp.array([0, 0, 1, 0, 1, 0, 0, 1], bool))
  fresh = rng.normal(size=(BATCH, HEADS, 300, HEAD_DIM)).astype(np.float32)
  state = memory.write(state, jnp.asarray(fresh), jnp.asarray(fresh))
  state = memory.reset(state, jnp.array([0, 0, 0, 0, 0, 1, 0, 0], bool))
  state = memory.write(state, jnp.asarray(fresh[:, :, :5]), jnp.asarray(fresh[:, :, :5]))
  state = memory.reset(state, jnp.array([0, 0, 0, 0, 0, 0, 1, 0], bool))
  queries = jnp.asarray(rng.normal(size=(BATCH, HEADS, QUERIES, HEAD_DIM)), jnp.float32)
  return state, queries


@pytest.mark.parametrize("mesh_shape", [(8, 1), (2, 4), (1, 8)])
def test_sharded_exact_equals_unsharded(state_and_queries, mesh_shape):
  state, queries = state_and_queries
  mesh = make_mesh(*mesh_shape)
  sharded = jax.jit(lambda s, q: memory.sharded_lookup(s, q, K, mesh=mesh))(state, queries)
  unsharded = jit_lookup(state, queries, K)
  np.testing.assert_array_equal(sharded.valid, unsharded.valid)
  np.testing.assert_allclose(sharded.scores, unsharded.scores, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(sharded.positions, unsharded.positions)
  np.testing.assert_array_equal(sharded.slots, unsharded.slots)
  np.testing.assert_array_equal(sharded.keys, unsharded.keys)
  np.testing.assert_array_equal(sharded.values, unsharded.values)
  # And both are the brute-force top-k.
  filled = np.minimum(np.asarray(state.count), SLOTS)
  true_scores, _, _ = brute_force_top_k(np.asarray(queries), np.asarray(state.keys), filled, K)
  np.testing.assert_allclose(np.where(sharded.valid, sharded.scores, 0),
                             np.where(np.isfinite(true_scores), true_scores, 0),
                             rtol=1e-5, atol=1e-5)

  grad = lambda f: jax.grad(lambda q: jnp.sum(jnp.where(f(q).valid, f(q).scores, 0)))(queries)
  np.testing.assert_allclose(
      jax.jit(lambda: grad(lambda q: memory.sharded_lookup(state, q, K, mesh=mesh)))(),
      grad(lambda q: jit_lookup(state, q, K)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mesh_shape", [(8, 1), (2, 4), (1, 8)])
def test_sharded_approx(mesh_shape):
  rng = np.random.default_rng(1)
  slots, k = 4096, 16
  keys = rng.normal(size=(8, 1, slots, 16)).astype(np.float32)
  queries = rng.normal(size=(8, 1, 32, 16)).astype(np.float32)
  state = memory.write(memory.init(8, 1, slots, 16), jnp.asarray(keys), jnp.asarray(keys))
  mesh = make_mesh(*mesh_shape)
  sharded = jax.jit(lambda s, q: memory.sharded_lookup(s, q, k, mesh=mesh, method="approx"))(
      state, jnp.asarray(queries))
  if mesh_shape[1] == 1:  # the slots are not split: the same bins, the same answer
    unsharded = jit_lookup(state, jnp.asarray(queries), k, method="approx")
    np.testing.assert_array_equal(np.sort(sharded.positions, -1),
                                  np.sort(unsharded.positions, -1))
  _, true_slots, _ = brute_force_top_k(queries, keys, np.full(8, slots), k)
  assert recall(np.asarray(sharded.positions), true_slots) >= 0.95


def test_sharded_lookup_rejects_bad_layouts(state_and_queries):
  state, queries = state_and_queries
  with pytest.raises(ValueError, match="not divisible by the 8 shards of mesh axis 'model'"):
    small = memory.init(8, 1, 100, 4)
    memory.sharded_lookup(small, jnp.zeros((8, 1, 2, 4)), 4, mesh=make_mesh(1, 8))
  with pytest.raises(ValueError, match="batch=4 is not divisible by the 8 shards"):
    small = memory.init(4, 1, 64, 4)
    memory.sharded_lookup(small, jnp.zeros((4, 1, 2, 4)), 4, mesh=make_mesh(8, 1))
  with pytest.raises(ValueError, match="not 'slots'"):
    memory.sharded_lookup(state, queries, K, mesh=make_mesh(2, 4), slot_axis="slots")
  with pytest.raises(ValueError, match="exceeds the memory's 512 slots"):
    memory.sharded_lookup(state, queries, 513, mesh=make_mesh(2, 4))


def test_sharded_exact_with_fewer_slots_per_shard_than_k():
  rng = np.random.default_rng(2)
  keys = rng.normal(size=(2, 1, 16, 4)).astype(np.float32)
  state = memory.write(memory.init(2, 1, 16, 4), jnp.asarray(keys[:, :, :11]),
                       jnp.asarray(keys[:, :, :11]))
  queries = jnp.asarray(rng.normal(size=(2, 1, 3, 4)).astype(np.float32))
  sharded = memory.sharded_lookup(state, queries, 5, mesh=make_mesh(1, 8))  # 2 slots each
  unsharded = jit_lookup(state, queries, 5)
  # The scores come from each shard's own matmul: rounding differs from the whole memory's.
  np.testing.assert_allclose(sharded.scores, unsharded.scores, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(sharded.positions, unsharded.positions)
