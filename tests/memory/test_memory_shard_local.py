"""retrieve_then_write / retrieve on 8 CPU devices, rows, heads and slots split, against
the whole-array lookup, a numpy attention and the whole-array write."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from memorizing_jax import memory
from memorizing_jax.train import compiled
from memory_reference import brute_force_top_k, recall
from meshes import cpu_mesh  # pylint: disable=g-bad-import-order

BATCH, HEADS, SLOTS, HEAD_DIM, LENGTH, K = 8, 8, 256, 8, 16, 6


@pytest.fixture(scope="module")
def inputs():
  """A memory with rows at different fills (one wrapped around, two almost empty), a
  segment's queries, keys and values, and a scale per head."""
  rng = np.random.default_rng(0)
  normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  state = memory.init(BATCH, HEADS, SLOTS, HEAD_DIM)
  state = memory.write(state, normal(BATCH, HEADS, 300, HEAD_DIM),
                       normal(BATCH, HEADS, 300, HEAD_DIM))
  state = memory.reset(state, jnp.array([0, 1, 0, 0, 1, 0, 0, 0], bool))
  state = memory.write(state, normal(BATCH, HEADS, 3, HEAD_DIM), normal(BATCH, HEADS, 3, HEAD_DIM))
  segment = [normal(BATCH, HEADS, LENGTH, HEAD_DIM) for _ in range(3)]
  scale = jnp.asarray(rng.uniform(1, 4, size=HEADS), jnp.float32)
  return state, segment, scale


def reference(state, queries, keys, values, scale):
  """(out, weights, found, new state): the whole-array lookup, the attention in numpy
  (float64) and the whole-array write."""
  found = memory.lookup(state, queries, K)
  scores, valid = np.asarray(found.scores, np.float64), np.asarray(found.valid)
  logits = np.where(valid, scores * np.asarray(scale)[None, :, None, None], -np.inf)
  logits = logits - np.max(np.where(valid, logits, -1e300), axis=-1, keepdims=True)
  weights = np.where(valid, np.exp(logits), 0.0)
  weights = weights / np.maximum(weights.sum(-1, keepdims=True), 1e-300)
  out = np.einsum("bhqk,bhqkd->bhqd", weights, np.asarray(found.values, np.float64))
  return out, weights, found, memory.write(state, keys, values)


def on_mesh(mesh, placement, fn):
  """`fn(state, queries, keys, values, scale)` jitted with its inputs placed as the
  memory (`placement`) and the queries (its rows and heads), the mesh set."""
  entries = tuple(placement) + (None,) * (3 - len(placement))
  rows_heads = NamedSharding(mesh, P(entries[0], entries[1]))
  memory_sh = NamedSharding(mesh, P(*entries))
  state_sh = memory.MemoryState(entries=memory_sh,
                                count=NamedSharding(mesh, P(entries[0])),
                                positions=NamedSharding(mesh, P(entries[0], entries[2])))
  jitted = jax.jit(fn, in_shardings=(state_sh, rows_heads, rows_heads, rows_heads,
                                     NamedSharding(mesh, P(entries[1]))))

  def run(*args):
    with jax.set_mesh(mesh):
      return jitted(*args)

  def lower(*args):
    with jax.set_mesh(mesh):
      return jitted.lower(*args)

  run.lower = lower
  return run


PLACEMENTS = [((8, 1), P("data", None)),
              ((2, 4), P("data", "model")),
              ((1, 8), P(None, "model")),
              ((2, 4), P("data", None, "model")),        # 4 shards of 64 slots
              ((1, 8), P(None, None, "model")),          # 8 shards of 32 slots
              ((2, 2, 2), P("data", "model", "memory"))]  # rows, heads and slots


@pytest.mark.parametrize("mesh_shape,placement", PLACEMENTS)
def test_retrieve_then_write_equals_the_whole_arrays(inputs, mesh_shape, placement):
  state, (queries, keys, values), scale = inputs
  mesh = cpu_mesh(*mesh_shape)
  sharded = on_mesh(mesh, placement, lambda s, q, kk, v, sc: memory.retrieve_then_write(
      s, q, kk, v, K, sc, placement=placement))
  got, new_state = sharded(state, queries, keys, values, scale)
  out, weights, found, want_state = reference(state, queries, keys, values, scale)
  np.testing.assert_allclose(np.asarray(got.out), out, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(got.weights), weights, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(np.asarray(got.valid), np.asarray(found.valid))
  np.testing.assert_array_equal(np.asarray(got.slots)[np.asarray(found.valid)],
                                np.asarray(found.slots)[np.asarray(found.valid)])
  for name in ("keys", "values", "count", "positions"):
    np.testing.assert_array_equal(np.asarray(getattr(new_state, name)),
                                  np.asarray(getattr(want_state, name)), err_msg=name)

  # Gradients reach the queries and the scale through the scores, as unsharded.
  cotangent = jnp.asarray(np.random.default_rng(1).normal(size=out.shape), jnp.float32)

  def loss(fn):
    return lambda s, q, kk, v, sc: jnp.sum(fn(s, q, kk, v, sc)[0].out * cotangent)

  shard_fn = lambda s, q, kk, v, sc: memory.retrieve_then_write(s, q, kk, v, K, sc,
                                                                 placement=placement)
  whole_fn = lambda s, q, kk, v, sc: memory.retrieve_then_write(s, q, kk, v, K, sc)
  grad = on_mesh(mesh, placement, jax.grad(loss(shard_fn), argnums=(1, 4)))
  want = jax.jit(jax.grad(loss(whole_fn), argnums=(1, 4)))(state, queries, keys, values, scale)
  # float32 sums in another order: absolute error to about 1e-6 of the largest
  # gradient (which reaches ~20 with these unnormalised queries).
  for g, w in zip(grad(state, queries, keys, values, scale), want):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4,
                               atol=1e-5 * float(np.abs(np.asarray(w)).max()))

  # No key or value moves between devices, forward or backward: what crosses is the
  # slot shards' candidates (scores and ids) and output and query-gradient sums, and
  # the query or scale gradients summed over an axis they are not split over.
  moved = compiled.collective_bytes(grad.lower(state, queries, keys, values, scale)
                                    .compile().as_text())["total"]
  if len(placement) < 3 and None not in placement:
    assert moved <= scale.nbytes  # the scale's gradient, summed over the rows' shards
    return
  sizes = dict(zip(mesh.axis_names, mesh_shape))
  entries = tuple(placement) + (None,) * (3 - len(placement))
  rows_heads = sizes.get(entries[0], 1) * sizes.get(entries[1], 1)
  slot_shards = sizes.get(entries[2], 1)
  # Per device: every slot shard's candidates (scores and ids, 8 bytes each), and
  # sums of queries-sized arrays (the output, the queries' gradient).
  candidates = BATCH * HEADS * LENGTH * min(K, SLOTS // slot_shards) * slot_shards * 8
  assert moved <= (candidates + 4 * queries.nbytes) // rows_heads + scale.nbytes


def test_slot_shards_with_fewer_slots_than_k_and_memories_partly_filled(inputs):
  """8 shards of 4 slots, k = 6: most winners come from other shards."""
  rng = np.random.default_rng(3)
  state = memory.init(8, 2, 32, 4)
  state = memory.write(state, jnp.asarray(rng.normal(size=(8, 2, 21, 4)), jnp.float32),
                       jnp.asarray(rng.normal(size=(8, 2, 21, 4)), jnp.float32))
  state = memory.reset(state, jnp.arange(8) == 3)
  queries = jnp.asarray(rng.normal(size=(8, 2, 5, 4)), jnp.float32)
  scale = jnp.ones((2,), jnp.float32)
  placement = P(None, None, "model")
  got = on_mesh(cpu_mesh(1, 8), placement, lambda s, q, kk, v, sc: memory.retrieve(
      s, q, K, sc, placement=placement))(state, queries, queries, queries, scale)
  _, slots, _ = brute_force_top_k(np.asarray(queries), np.asarray(state.keys),
                                  np.minimum(np.asarray(state.count), 32), K)
  np.testing.assert_array_equal(np.where(np.asarray(got.valid), np.asarray(got.slots), -1),
                                slots)
  assert not np.asarray(got.valid)[3].any() and np.all(np.asarray(got.out)[3] == 0)


def test_approx_on_slot_shards_recalls_at_least_as_well(inputs):
  state, (queries, _, _), scale = inputs
  placement = P(None, None, "model")
  got = on_mesh(cpu_mesh(1, 8), placement, lambda s, q, kk, v, sc: memory.retrieve(
      s, q, K, sc, method="approx", placement=placement))(state, queries, queries, queries,
                                                          scale)
  whole = memory.retrieve(state, queries, K, scale, method="approx")
  _, truth, _ = brute_force_top_k(np.asarray(queries), np.asarray(state.keys),
                                  np.minimum(np.asarray(state.count), SLOTS), K)
  found = lambda r: np.where(np.asarray(r.valid), np.asarray(r.slots), -2)
  assert recall(found(got), truth) >= recall(found(whole), truth) - 0.01


def test_retrieve_reads_without_writing(inputs):
  state, (queries, _, _), scale = inputs
  placement = P("data", "model")
  got = on_mesh(cpu_mesh(2, 4), placement, lambda s, q, kk, v, sc: memory.retrieve(
      s, q, K, sc, placement=placement))(state, queries, queries, queries, scale)
  out, _, _, _ = reference(state, queries, queries, queries, scale)
  np.testing.assert_allclose(np.asarray(got.out), out, rtol=1e-5, atol=1e-5)


def test_split_head_dim_is_refused(inputs):
  state, (queries, keys, values), scale = inputs
  with pytest.raises(ValueError, match="map the logical axis kv to None"):
    memory.retrieve_then_write(state, queries, keys, values, K, scale,
                               placement=P("data", None, None, "model"))


def test_without_a_mesh_the_placement_is_ignored(inputs):
  state, (queries, keys, values), scale = inputs
  got, new_state = memory.retrieve_then_write(state, queries, keys, values, K, scale,
                                              placement=P("data", "model", "memory"))
  assert isinstance(got, memory.Retrieval)
  out, _, _, want_state = reference(state, queries, keys, values, scale)
  np.testing.assert_allclose(np.asarray(got.out), out, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(new_state.keys), np.asarray(want_state.keys))
