"""lookup_then_write / lookup_on_shards on 8 CPU devices against the whole-array functions."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from memorizing_jax import memory
from memorizing_jax.train import compiled
from memory_reference import make_mesh

BATCH, HEADS, SLOTS, HEAD_DIM, LENGTH, K = 8, 8, 256, 8, 16, 6


@pytest.fixture(scope="module")
def inputs():
  """A memory with rows at different fills, and a segment's queries, keys, values."""
  rng = np.random.default_rng(0)
  normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  state = memory.init(BATCH, HEADS, SLOTS, HEAD_DIM)
  state = memory.write(state, normal(BATCH, HEADS, 300, HEAD_DIM),
                       normal(BATCH, HEADS, 300, HEAD_DIM))
  state = memory.reset(state, jnp.array([0, 1, 0, 0, 1, 0, 0, 0], bool))
  state = memory.write(state, normal(BATCH, HEADS, 3, HEAD_DIM), normal(BATCH, HEADS, 3, HEAD_DIM))
  segment = [normal(BATCH, HEADS, LENGTH, HEAD_DIM) for _ in range(3)]
  return state, segment


def whole(state, queries, keys, values):
  found = memory.lookup(state, queries, K)
  return found, memory.write(state, keys, values)


def on_mesh(mesh, placement, fn):
  """`fn` jitted with its inputs placed on `mesh` and the mesh set (jax.set_mesh)."""
  rows_heads = NamedSharding(mesh, placement)
  state_sh = memory.MemoryState(keys=rows_heads, values=rows_heads,
                                count=NamedSharding(mesh, P(placement[0])),
                                positions=NamedSharding(mesh, P(placement[0])))
  jitted = jax.jit(fn, in_shardings=(state_sh, rows_heads, rows_heads, rows_heads))

  def run(*args):
    with jax.set_mesh(mesh):
      return jitted(*args)

  run.lower = lambda *args: _lower(mesh, jitted, *args)
  return run


def _lower(mesh, jitted, *args):
  with jax.set_mesh(mesh):
    return jitted.lower(*args)


@pytest.mark.parametrize("mesh_shape,placement", [((8, 1), P("data", None)),
                                                  ((2, 4), P("data", "model")),
                                                  ((2, 4), P("data", None)),
                                                  ((1, 8), P(None, "model"))])
def test_lookup_then_write_equals_the_whole_arrays(inputs, mesh_shape, placement):
  state, (queries, keys, values) = inputs
  mesh = make_mesh(*mesh_shape)
  sharded = on_mesh(mesh, placement, lambda s, q, kk, v: memory.lookup_then_write(
      s, q, kk, v, K, placement=placement))
  found, new_state = sharded(state, queries, keys, values)
  want_found, want_state = jax.jit(whole)(state, queries, keys, values)
  for got, want in zip(jax.tree.leaves((found, new_state)), jax.tree.leaves((want_found,
                                                                             want_state))):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)
  assert new_state.keys.sharding.spec == placement

  # Gradients reach the queries through the retrieved scores alone, as unsharded.
  def score_sum(fn):
    return lambda s, q, kk, v: jnp.sum(jnp.where(fn(s, q, kk, v)[0].valid,
                                                 fn(s, q, kk, v)[0].scores, 0.0))
  shard_fn = lambda s, q, kk, v: memory.lookup_then_write(s, q, kk, v, K, placement=placement)
  grad = on_mesh(mesh, placement, jax.grad(score_sum(shard_fn), argnums=1))
  want_grad = jax.jit(jax.grad(score_sum(whole), argnums=1))(state, queries, keys, values)
  np.testing.assert_allclose(np.asarray(grad(state, queries, keys, values)),
                             np.asarray(want_grad), rtol=1e-5, atol=1e-6)
  # And nothing of the memory moves between devices, forward or backward: at most the
  # queries' gradient is summed over a mesh axis the heads are not split over.
  text = grad.lower(state, queries, keys, values).compile().as_text()
  moved = compiled.collective_bytes(text)["total"]
  assert moved <= queries.nbytes // mesh_shape[0] and (moved == 0) == (None not in placement)


def test_lookup_on_shards_reads_without_writing(inputs):
  state, (queries, _, _) = inputs
  placement = P("data", "model")
  sharded = on_mesh(make_mesh(2, 4), placement, lambda s, q, kk, v: memory.lookup_on_shards(
      s, q, K, placement=placement))
  found = sharded(state, queries, queries, queries)
  want = memory.lookup(state, queries, K)
  np.testing.assert_array_equal(np.asarray(found.positions), np.asarray(want.positions))
  np.testing.assert_allclose(np.asarray(found.scores), np.asarray(want.scores), rtol=1e-6)


def test_split_slots_are_refused(inputs):
  state, (queries, keys, values) = inputs
  with pytest.raises(ValueError, match="map the logical axes memory_slots and kv to None"):
    memory.lookup_then_write(state, queries, keys, values, K,
                             placement=P("data", None, "model", None))


def test_without_a_mesh_the_placement_is_ignored(inputs):
  state, (queries, keys, values) = inputs
  found, new_state = memory.lookup_then_write(state, queries, keys, values, K,
                                              placement=P("data", "model"))
  want_found, want_state = whole(state, queries, keys, values)
  np.testing.assert_array_equal(np.asarray(found.positions), np.asarray(want_found.positions))
  np.testing.assert_array_equal(np.asarray(new_state.keys), np.asarray(want_state.keys))
