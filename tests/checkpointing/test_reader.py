"""The one checkpoint reader: a state the trainer saved on a 4 x 2 mesh, read back onto
a 2 x 4 mesh and onto one device, equals what was saved; the parameters alone; those
that fit another model; a damaged step, and a model the checkpoint does not fit."""
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P, SingleDeviceSharding

from memorizing_jax.checkpointing import reader, trees
from memorizing_jax.checkpointing.fallback import CorruptCheckpointError
from memorizing_jax.train.checkpoints import Checkpointer
from memorizing_jax.train.train_state import TrainState
from meshes import cpu_mesh  # pylint: disable=g-bad-import-order

SPECS = {"step": P(), "params.embed": P("data", "model"), "params.layer.kernel": P("model"),
         "opt_state.mu": P("data"), "model_state.memory": P("data", None, "model")}


def state_at(step: int) -> TrainState:
  """Host arrays: params [8, 8] and [4], an optimizer moment [8, 8], a memory [8, 2, 4]."""
  embed = np.arange(64, dtype=np.float32).reshape(8, 8) * step
  return TrainState(step=np.int32(step),
                    params={"embed": embed, "layer": {"kernel": np.float32([1, 2, 3, 4]) + step}},
                    opt_state={"mu": embed / 2}, model_state={"memory": np.full(
                        (8, 2, 4), step, np.int32)})


def placed(tree, mesh):
  """`tree` as ShapeDtypeStructs on `mesh` by SPECS (or on one device when `mesh` is a
  device)."""
  def place(path, x):
    name = trees.leaf_name(path)
    sharding = (SingleDeviceSharding(mesh) if isinstance(mesh, jax.Device)
                else NamedSharding(mesh, SPECS[name]))
    return jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=sharding)

  return jax.tree_util.tree_map_with_path(place, tree)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> pathlib.Path:
  """A workdir whose checkpoints/ holds steps 3 and 6, saved by the trainer's writer
  from a 4 x 2 mesh (with their digests and data positions)."""
  workdir = tmp_path_factory.mktemp("reader") / "run"
  checkpointer = Checkpointer(str(workdir / "checkpoints"), asynchronous=False)
  for step in (3, 6):
    host = state_at(step)
    abstract = placed(host, cpu_mesh(4, 2))
    state = jax.tree.map(lambda x, a: jax.device_put(x, a.sharding), host, abstract)
    checkpointer.save(state, {"0": {"documents": step}}, "# gin")
  checkpointer.close()
  return workdir


@pytest.fixture
def damaged(saved, tmp_path) -> pathlib.Path:
  """A copy of `saved` whose step 6 has its arrays' data files cut to an eighth."""
  copy = tmp_path / "run"
  shutil.copytree(saved, copy)
  for chunk in (copy / "checkpoints" / "6" / "state").rglob("*"):
    if chunk.is_file() and chunk.parent.name == "d":
      chunk.write_bytes(chunk.read_bytes()[:chunk.stat().st_size // 8])
  return copy


def assert_equal_to_saved(tree, step, prefix=""):
  want = trees.flatten_with_names(state_at(step))
  for name, value in trees.flatten_with_names(tree).items():
    np.testing.assert_array_equal(np.asarray(value), want[prefix + name], err_msg=name)


def test_stored_arrays_are_named_with_their_shapes(saved):
  stored = reader.stored_arrays(str(saved / "checkpoints"), 3)
  assert {name: tuple(leaf.shape) for name, leaf in stored.items()} == {
      "step": (), "params.embed": (8, 8), "params.layer.kernel": (4,), "opt_state.mu": (8, 8),
      "model_state.memory": (8, 2, 4)}


def test_restore_state_onto_another_mesh_equals_the_saved_arrays(saved):
  mesh = cpu_mesh(2, 4)
  abstract = placed(state_at(0), mesh)
  step, state, positions, damaged = reader.restore_state(
      str(saved / "checkpoints"), [3, 6], abstract, advice="")
  assert (step, positions, damaged) == (6, {"0": {"documents": 6}}, {})
  assert isinstance(state, TrainState)
  assert_equal_to_saved(state, 6)
  for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(abstract)):
    assert got.sharding == want.sharding and got.dtype == want.dtype
  _, older, _, _ = reader.restore_state(str(saved / "checkpoints"), [3], abstract, advice="")
  assert_equal_to_saved(older, 3)


def test_restore_params_onto_one_device(saved):
  device = jax.devices()[0]
  abstract = placed(state_at(0).params, device)
  step, params = reader.restore_params(str(saved / "checkpoints"), 6, abstract, advice="")
  assert step == 6
  assert_equal_to_saved(params, 6, prefix="params.")
  assert all(x.sharding == SingleDeviceSharding(device) for x in jax.tree.leaves(params))


def test_a_damaged_step_gives_way_to_the_newest_intact_one(damaged):
  directory = str(damaged / "checkpoints")
  abstract = placed(state_at(0), cpu_mesh(2, 4))
  step, state, _, problems = reader.restore_state(directory, [3, 6], abstract, advice="")
  assert step == 3 and list(problems) == [6]
  assert problems[6].startswith("it does not read (")
  assert_equal_to_saved(state, 3)
  step, params = reader.restore_params(directory, 6, abstract.params, advice="")
  assert step == 3
  assert_equal_to_saved(params, 3, prefix="params.")
  with pytest.raises(CorruptCheckpointError, match="Load another step") as error:
    reader.restore_params(directory, 6, abstract.params, advice="Load another step.",
                          older_if_damaged=False)
  assert list(error.value.problems) == [6]


def test_a_model_the_checkpoint_does_not_fit_is_a_config_error(saved):
  directory = str(saved / "checkpoints")
  wider = state_at(0).replace(params={"embed": np.zeros((8, 12), np.float32),
                                      "layer": {"kernel": np.zeros(4, np.float32)}})
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype),
                          wider)
  with pytest.raises(trees.CheckpointMismatchError) as error:
    reader.restore_state(directory, [3, 6], abstract, advice="", mismatch_advice="Try init_from.")
  message = str(error.value)
  assert message.startswith(f"the checkpoint {directory}/6 does not fit the configured model")
  assert "params.embed: checkpoint shape (8, 8), model shape (8, 12)" in message
  assert message.endswith("Try init_from.")
  with pytest.raises(trees.CheckpointMismatchError, match="params.embed: checkpoint shape"):
    reader.restore_params(directory, 6, abstract.params, advice="")
  # Parameters only in the checkpoint are not read.
  step, fewer = reader.restore_params(directory, 6, {"layer": placed(
      state_at(0).params, jax.devices()[0])["layer"]}, advice="")
  assert step == 6 and sorted(trees.flatten_with_names(fewer)) == ["layer.kernel"]


def test_restore_matching_params_takes_what_fits(saved):
  mesh = cpu_mesh(2, 4)
  mine = {"embed": jnp.zeros((8, 8)), "layer": {"kernel": jnp.zeros(5)},
          "gate": jnp.full((2,), 7.0)}
  mine = {"embed": jax.device_put(mine["embed"], NamedSharding(mesh, P("model", "data"))),
          "layer": {"kernel": jax.device_put(mine["layer"]["kernel"], NamedSharding(mesh, P()))},
          "gate": jax.device_put(mine["gate"], NamedSharding(mesh, P("data")))}
  params, report = reader.restore_matching_params(str(saved), mine)
  assert report == {"loaded": ["embed"], "initialized": ["gate"],
                    "mismatched": ["layer.kernel"], "unused": []}
  np.testing.assert_array_equal(np.asarray(params["embed"]), state_at(6).params["embed"])
  np.testing.assert_array_equal(np.asarray(params["gate"]), np.full((2,), 7.0))
  np.testing.assert_array_equal(np.asarray(params["layer"]["kernel"]), np.zeros(5))
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(mine)):
    assert got.sharding == want.sharding
  # A step folder names its step.
  older, _ = reader.restore_matching_params(str(saved / "checkpoints" / "3"), mine)
  np.testing.assert_array_equal(np.asarray(older["embed"]), state_at(3).params["embed"])
