"""The mesh from its config, the sharding layout of parameters, optimizer state and
model state (golden layouts), how the batch splits over the mesh, and `in_mesh`."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from memorizing_jax.model import axes
from memorizing_jax.model.state import init_state
from memorizing_jax.model.transformer import MemorizingTransformer
from memorizing_jax.train import optimizer, partitioner, train_state


@pytest.mark.parametrize("data,model,memory,devices,expected", [
    (-1, 1, 1, 8, (8, 1, 1)), (-1, 2, 1, 8, (4, 2, 1)), (2, -1, 1, 8, (2, 4, 1)),
    (1, 1, 1, 8, (1, 1, 1)), (4, 2, 1, 8, (4, 2, 1)), (-1, 1, 4, 8, (2, 1, 4)),
    (2, -1, 2, 8, (2, 2, 2))])
def test_mesh_shape_resolves_minus_one(data, model, memory, devices, expected):
  config = partitioner.MeshConfig(data=data, model=model, memory=memory)
  assert config.shape(devices) == expected


def test_mesh_that_does_not_fit_is_named():
  with pytest.raises(ValueError, match=r"MeshConfig\(data=-1, model=3, memory=1\) does not fit 8"):
    partitioner.MeshConfig(data=-1, model=3).shape(8)
  with pytest.raises(ValueError, match="at most one of data and model may be -1"):
    partitioner.MeshConfig(data=-1, model=-1)


def test_partitioner_builds_the_mesh_with_auto_axes():
  part = partitioner.Partitioner(partitioner.MeshConfig(data=4, model=2))
  assert dict(part.mesh.shape) == {"data": 4, "model": 2, "memory": 1}
  assert all(t == jax.sharding.AxisType.Auto for t in part.mesh.axis_types)
  assert part.sharding(P("batch", "length")).spec == P("data", None)
  small = partitioner.Partitioner(partitioner.MeshConfig(data=1, model=1))
  assert small.mesh.devices.size == 1


def test_sharding_layout_of_the_train_state(tiny):
  """Heads, MLP and vocabulary over `model`, rows over `data`; Adafactor's factored
  statistics keep the sharding of the axis they still have."""
  part = partitioner.Partitioner(tiny.mesh)
  tx = optimizer.make_optimizer(optimizer.OptimizerConfig(name="adafactor"))
  layout = train_state.train_state_layout(tiny.model, tx, 8, part)
  params = layout.shardings.params
  assert params["layer_0"]["attention"]["query"]["kernel"].spec == P(None, "model", None)
  assert params["layer_0"]["mlp"]["wi"]["kernel"].spec == P(None, "model")
  assert params["layer_0"]["mlp"]["wo"]["kernel"].spec == P("model", None)
  assert params["embed"]["embedding"].spec == P("model", None)
  memory = layout.shardings.model_state.memories[0]
  assert memory.entries.spec == P("data", "model", "memory", None, None)  # "memory": 1 device
  assert memory.positions.spec == P("data", "memory")
  assert memory.count.spec == P("data")
  assert layout.shardings.model_state.xl_caches[0].valid.spec == P("data", None)
  # Adam moments mirror the parameters' shardings.
  adam = optimizer.make_optimizer(optimizer.OptimizerConfig(name="adamw"))
  adam_layout = train_state.train_state_layout(tiny.model, adam, 8, part)
  mu = adam_layout.shardings.opt_state[1][0].mu
  assert jax.tree.map(lambda s: s.spec, mu) == jax.tree.map(lambda s: s.spec, params)


def test_the_created_state_has_the_layout_of_the_abstract_one(tiny):
  """`create_train_state` makes exactly the shapes, dtypes and shardings of the layout,
  and the values that the trainer's own initialisation (written out here) made."""
  part = partitioner.Partitioner(tiny.mesh)
  tx = optimizer.make_optimizer(optimizer.OptimizerConfig(name="adafactor"))
  layout = train_state.train_state_layout(tiny.model, tx, 8, part)
  state = train_state.create_train_state(tiny.model, tx, 8, layout, seed=3)
  assert jax.tree.structure(state) == jax.tree.structure(layout.abstract)
  for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(layout.abstract)):
    assert (got.shape, got.dtype) == (want.shape, want.dtype)
    assert got.sharding.is_equivalent_to(want.sharding, got.ndim)
  assert jax.tree.leaves(layout.abstract) and all(
      a.sharding == s for a, s in zip(jax.tree.leaves(layout.abstract),
                                      jax.tree.leaves(layout.shardings)))

  model = MemorizingTransformer(tiny.model)

  def reference(rng):
    tokens = jnp.zeros((1, tiny.model.segment_length), jnp.int32)
    params = nn.unbox(model.init(rng, tokens, init_state(tiny.model, 1),
                                 jnp.ones((1,), bool))["params"])
    return train_state.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                                  opt_state=tx.init(params),
                                  model_state=init_state(tiny.model, 8))

  want = jax.jit(reference, out_shardings=layout.shardings)(jax.random.key(3))
  for got, expected in zip(jax.tree.leaves(state), jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


def test_factored_adafactor_statistics_keep_the_remaining_axis():
  part = partitioner.Partitioner(partitioner.MeshConfig(data=4, model=2))
  params = {"w": jax.ShapeDtypeStruct((256, 512), "float32")}
  param_sh = {"w": part.sharding(P(None, "mlp"))}
  tx = optimizer.make_optimizer(optimizer.OptimizerConfig(name="adafactor"))
  state = jax.eval_shape(tx.init, params)
  shardings = partitioner.param_shardings_for_optimizer(tx, state, params, param_sh,
                                                        part.replicated())
  factored = shardings[1][0]
  assert isinstance(factored, optax.FactoredState)
  assert state[1][0].v_row["w"].shape == (256,) and factored.v_row["w"].spec == P(None)
  assert state[1][0].v_col["w"].shape == (512,) and factored.v_col["w"].spec == P("model")
  assert factored.v["w"].spec == P()  # (1,) placeholder
  assert factored.count.spec == P()


def test_rules_naming_another_mesh_axis_are_refused():
  with pytest.raises(ValueError, match=r"name mesh axes \['fsdp'\]"):
    partitioner.MeshConfig(logical_axis_rules=(("batch", ("data", "fsdp")),))
  rules = partitioner.MeshConfig(logical_axis_rules=[["batch", "data"], ["heads", None]])
  assert rules.logical_axis_rules == (("batch", "data"), ("heads", None))


def test_the_batch_must_split_over_the_processes():
  partitioner.check_data_parallelism_fits_processes(4, 2)
  partitioner.check_data_parallelism_fits_processes(8, 1)
  with pytest.raises(ValueError, match=r"split 1 ways.*2 processes.*multiple of 2"):
    partitioner.check_data_parallelism_fits_processes(1, 2)
  mesh = partitioner.Partitioner(partitioner.MeshConfig(data=2, model=4))
  mesh.check_processes_feed_distinct_rows(2)
  with pytest.raises(ValueError, match=r"split 2 ways.*4 processes"):
    mesh.check_processes_feed_distinct_rows(4)


def _rules(**changes):
  """The default logical-axis rules with some names mapped elsewhere."""
  return tuple((name, changes.get(name, axis)) for name, axis in axes.DEFAULT_LOGICAL_AXIS_RULES)


@pytest.mark.parametrize("mesh, rules, shards", [
    ((4, 2, 1), None, 4),                            # rows over data
    ((2, 2, 2), None, 2),                            # model and memory hold whole rows
    ((8, 1, 1), None, 8),
    ((4, 2, 1), _rules(batch=("data", "model")), 8),  # rows over data x model
    ((4, 2, 1), _rules(batch=None), 1),               # rows replicated
])
def test_batch_shards_is_the_product_of_the_mesh_axes_the_batch_maps_to(mesh, rules, shards):
  data, model, memory = mesh
  part = partitioner.Partitioner(partitioner.MeshConfig(data=data, model=model, memory=memory,
                                                        logical_axis_rules=rules))
  assert part.batch_shards() == shards


def test_check_batch_size_accepts_multiples_of_the_batch_shards_and_names_the_fix():
  part = partitioner.Partitioner(partitioner.MeshConfig(data=4, model=2))
  for size in (4, 8, 12):
    part.check_batch_size(size)
  with pytest.raises(ValueError) as error:
    part.check_batch_size(6, "DataConfig.eval_batch_size")
  assert str(error.value) == (
      "DataConfig.eval_batch_size=6 does not divide over the 4 data-parallel devices of the "
      "mesh {'data': 4, 'model': 2, 'memory': 1}; use a multiple of 4")
  with pytest.raises(ValueError, match=r"^batch_size=2 does not divide"):
    part.check_batch_size(2)
  across = partitioner.Partitioner(partitioner.MeshConfig(
      data=4, model=2, logical_axis_rules=_rules(batch=("data", "model"))))
  across.check_batch_size(8)
  with pytest.raises(ValueError, match="over the 8 data-parallel devices"):
    across.check_batch_size(4)


def test_in_mesh_traces_with_the_partitioners_mesh_and_rules():
  shape = (8, 4, 64, 16)  # a memory's [batch, heads, slots, head_dim]

  def memory_spec():
    return axes.ambient_spec(axes.MEMORY_AXES, shape)

  def traced_spec(part):
    """The spec `memory_spec` gives while jit traces `part.in_mesh` of a step."""
    seen = []

    def step(x):
      seen.append(memory_spec())
      return x + 1

    assert int(jax.jit(part.in_mesh(step))(1)) == 2
    return seen[0]

  part = partitioner.Partitioner(partitioner.MeshConfig(data=2, model=2, memory=2))
  assert part.in_mesh(memory_spec)() == traced_spec(part) == P("data", "model", "memory", None)
  other = partitioner.Partitioner(partitioner.MeshConfig(
      data=2, model=2, memory=2, logical_axis_rules=_rules(heads=None, batch="model")))
  assert other.in_mesh(memory_spec)() == traced_spec(other) == P("model", None, "memory", None)
  assert memory_spec() is None  # no mesh outside
