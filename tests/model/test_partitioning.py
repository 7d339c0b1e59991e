"""The one layout authority: abstract params and ModelState, and their shardings fitted
to their shapes, on the 8 forced CPU devices.

The golden layouts are the ones the trainer and the inference loader computed before
they took theirs from `model/partitioning.py` (a byte vocabulary of 259 ids, which
does not split over 2 devices, is replicated).
"""
import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from memorizing_jax import model as M
from memorizing_jax.model import partitioning
from meshes import cpu_mesh  # pylint: disable=g-bad-import-order

# The trainer tests' tiny model, with a byte vocabulary.
CONFIG = M.ModelConfig(vocab_size=259, num_layers=2, d_model=32, num_heads=2, head_dim=16,
                       mlp_dim=64, segment_length=16, use_xl_cache=True, knn_layers=(-1,),
                       knn_k=4, memory_slots=64, relative_position_buckets=8,
                       relative_position_max_distance=32)

LAYER_PARAMS = {
    "attention.key.kernel": P(None, "model", None),
    "attention.out.kernel": P("model", None, None),
    "attention.query.kernel": P(None, "model", None),
    "attention.relative_position_bias.rel_embedding": P(None, "model"),
    "attention.temperature": P("model"),
    "attention.value.kernel": P(None, "model", None),
    "mlp.wi.kernel": P(None, "model"),
    "mlp.wo.kernel": P("model", None),
    "pre_attention_norm.scale": P(None),
    "pre_mlp_norm.scale": P(None),
}
GOLDEN_PARAMS = {
    "embed.embedding": P(None, None),  # 259 ids do not split over model=2
    "final_norm.scale": P(None),
    **{f"layer_0.{k}": v for k, v in LAYER_PARAMS.items()},
    **{f"layer_1.{k}": v for k, v in LAYER_PARAMS.items()},
    "layer_1.attention.memory.gate_bias": P("model"),
}
XL = {"keys": P("data", "model", None, None), "values": P("data", "model", None, None),
      "valid": P("data", None)}
GOLDEN_STATE = {
    "memories.0.count": P("data"),
    "memories.0.entries": P("data", "model", "memory", None, None),
    "memories.0.positions": P("data", "memory"),
    **{f"xl_caches.{i}.{k}": v for i in (0, 1) for k, v in XL.items()},
}


def named(tree):
  """{"layer_0.mlp.wi.kernel": leaf}: the tree's leaves by dotted path."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {".".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                   for k in path): leaf for path, leaf in leaves}


def specs(tree):
  return {name: leaf.sharding.spec for name, leaf in named(tree).items()}


def test_param_layout_is_the_golden_one():
  mesh = cpu_mesh(2, 2, 2)
  layout = M.param_layout(CONFIG, mesh)
  assert specs(layout) == GOLDEN_PARAMS
  assert all(leaf.sharding.mesh == mesh for leaf in jax.tree.leaves(layout))
  assert named(layout)["embed.embedding"].shape == (259, 32)
  assert {n: s.spec for n, s in named(M.param_shardings(CONFIG, mesh)).items()} == GOLDEN_PARAMS


def test_param_layout_has_the_shapes_of_the_initialised_params():
  params = M.init_params(CONFIG, jax.random.key(0))
  layout = M.param_layout(CONFIG)
  assert jax.tree.structure(layout) == jax.tree.structure(params)
  for want, got in zip(jax.tree.leaves(params), jax.tree.leaves(layout)):
    assert (got.shape, got.dtype, got.sharding) == (want.shape, want.dtype, None)
  logical = named(M.param_logical_axes(CONFIG))
  assert logical["embed.embedding"] == P("vocab", "embed")
  assert logical["layer_0.mlp.wi.kernel"] == P("embed", "mlp")


def test_state_layout_is_the_golden_one_and_fits_a_single_row():
  mesh = cpu_mesh(2, 2, 2)
  layout = M.state_layout(CONFIG, 8, mesh)
  assert specs(layout) == GOLDEN_STATE
  assert named(layout)["memories.0.entries"].shape == (8, 2, 64, 2, 16)
  assert named(layout)["xl_caches.0.keys"].shape == (8, 2, 16, 16)
  assert {n: s.spec for n, s in named(M.state_shardings(CONFIG, mesh, batch_size=8)).items()
          } == GOLDEN_STATE
  # One row does not split over data=2: the rows' axis is replicated.
  one_row = specs(M.state_layout(CONFIG, 1, mesh))
  assert one_row == {name: P(None, *spec[1:]) for name, spec in GOLDEN_STATE.items()}
  # Without a batch size, the logical names' shardings as they are.
  assert named(M.state_shardings(CONFIG, mesh))["memories.0.count"].spec == P("data")
  plain = M.state_layout(CONFIG, 3)
  assert jax.tree.map(lambda x: (x.shape, x.dtype), plain) == jax.tree.map(
      lambda x: (x.shape, x.dtype), M.init_state(CONFIG, 3))


def test_a_mesh_without_the_memory_axis_leaves_the_slots_whole():
  layout = M.state_layout(CONFIG, 8, cpu_mesh(2, 4))
  assert named(layout)["memories.0.entries"].sharding.spec == P("data", None, None, None, None)
  assert named(layout)["memories.0.positions"].sharding.spec == P("data", None)


def test_fit_shardings_replicates_what_does_not_divide(caplog):
  mesh = cpu_mesh(4, 2)
  abstract = {"odd": jax.ShapeDtypeStruct((259, 32), "float32"),
              "odd_too": jax.ShapeDtypeStruct((259, 32), "float32"),
              "even": jax.ShapeDtypeStruct((260, 32), "float32")}
  shardings = {k: NamedSharding(mesh, P("model", None)) for k in abstract}
  with caplog.at_level(logging.WARNING):
    fitted = partitioning.fit_shardings(shardings, abstract)
  assert fitted["odd"].spec == P(None, None) and fitted["odd_too"].spec == P(None, None)
  assert fitted["even"].spec == P("model", None)
  assert all(s.mesh == mesh for s in fitted.values())
  # One warning per shape, not per array.
  assert caplog.text.count("dimension of size 259 of an array of shape (259, 32)") == 1


def test_with_shardings_and_shardings_of_are_inverse():
  mesh = cpu_mesh(2, 4)
  abstract = {"a": jax.ShapeDtypeStruct((8, 4), jnp.bfloat16)}
  shardings = {"a": NamedSharding(mesh, P("data", "model"))}
  placed = partitioning.with_shardings(abstract, shardings)
  assert placed["a"].shape == (8, 4) and placed["a"].dtype == jnp.bfloat16
  assert partitioning.shardings_of(placed) == shardings


def test_params_created_sharded_or_from_more_rows_equal_those_created_on_one_device():
  mesh = cpu_mesh(2, 4)
  sharded = M.init_params(CONFIG, jax.random.key(5), mesh=mesh)
  single = M.init_params(CONFIG, jax.random.key(5))
  two_rows = M.init_params(CONFIG, jax.random.key(5), batch_size=2)
  boxed = jax.jit(lambda k: partitioning.init_boxed_params(CONFIG, k))(jax.random.key(5))
  assert specs(sharded) == {n: s.spec for n, s in named(M.param_shardings(CONFIG, mesh)).items()}
  for got, want, unboxed in zip(jax.tree.leaves(sharded), jax.tree.leaves(single),
                                jax.tree.leaves(nn.unbox(boxed))):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    np.testing.assert_array_equal(np.asarray(unboxed), np.asarray(want))
  for got, want in zip(jax.tree.leaves(two_rows), jax.tree.leaves(single)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_logical_to_shardings_maps_names_by_the_rules_onto_the_mesh_axes_it_has():
  tree = {"rows_heads": P("batch", "heads"), "slots": P("memory_slots", "kv"), "scalar": P()}
  mesh = cpu_mesh(4, 2)  # no `memory` axis: the slots' rule maps them to None
  got = partitioning.logical_to_shardings(tree, mesh)
  assert {k: s.spec for k, s in got.items()} == {
      "rows_heads": P("data", "model"), "slots": P(None, None), "scalar": P()}
  assert all(s.mesh == mesh for s in got.values())
  assert got["rows_heads"].shard_shape((8, 6)) == (2, 3)
  # A rule naming several mesh axes keeps those the mesh has.
  rules = (("batch", ("data", "memory")), ("heads", "model"), ("memory_slots", "memory"))
  assert partitioning.logical_to_shardings(tree, mesh, rules)["rows_heads"].spec == P(
      "data", "model")
  on_three = partitioning.logical_to_shardings(tree, cpu_mesh(2, 2, 2), rules)
  assert on_three["rows_heads"].spec == P(("data", "memory"), "model")
  assert on_three["rows_heads"].shard_shape((8, 6)) == (2, 3)
  assert on_three["slots"].spec == P("memory", None)
