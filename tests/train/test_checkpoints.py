"""The size of a checkpoint, which the trainer checks the workdir's free space against, and
`Checkpointer.restore_latest` on checkpoints it saved itself."""
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec as P

from memorizing_jax.train import checkpoints
from memorizing_jax.train.train_state import TrainState
from meshes import cpu_mesh  # pylint: disable=g-bad-import-order


def test_checkpoint_bytes_count_every_global_array_once():
  mesh = cpu_mesh(4, 2)
  abstract = TrainState(
      step=jax.ShapeDtypeStruct((), jnp.int32),
      params={"w": jax.ShapeDtypeStruct((3, 4), jnp.float32),
              # Sharded: the global array is saved once, whatever the mesh.
              "e": jax.ShapeDtypeStruct((8, 6), jnp.bfloat16,
                                        sharding=NamedSharding(mesh, P("data", "model")))},
      opt_state=(), model_state={"keys": jax.ShapeDtypeStruct((2, 5), np.int64)})
  assert checkpoints.checkpoint_bytes(abstract) == 4 + 3 * 4 * 4 + 8 * 6 * 2 + 2 * 5 * 8
  assert checkpoints.checkpoint_bytes({}) == 0


def _state(step: int, mesh) -> TrainState:
  """A small train state on `mesh` whose values follow from `step`."""
  sharded = NamedSharding(mesh, P("data", None))
  replicated = NamedSharding(mesh, P())
  return TrainState(
      step=jax.device_put(jnp.int32(step), replicated),
      params={"w": jax.device_put(jnp.arange(12, dtype=jnp.float32).reshape(4, 3) * step,
                                  sharded)},
      opt_state={"count": jax.device_put(jnp.int32(10 * step), replicated)},
      model_state={"keys": jax.device_put(jnp.full((4, 2), step, jnp.bfloat16), sharded)})


def test_restore_latest_is_none_without_checkpoints_else_the_newest_step(tmp_path):
  mesh = cpu_mesh(4, 2)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                          _state(0, mesh))
  checkpointer = checkpoints.Checkpointer(str(tmp_path / "run" / "checkpoints"),
                                          asynchronous=False)
  try:
    assert checkpointer.restore_latest(abstract) is None
    for step in (1, 2):
      checkpointer.save(_state(step, mesh), {"0": {"read": 8 * step}}, "# gin\n")
    checkpointer.wait()
    step, state, positions = checkpointer.restore_latest(abstract)
  finally:
    checkpointer.close()
  assert step == 2 and positions == {"0": {"read": 16}}
  np.testing.assert_array_equal(np.asarray(state.params["w"]),
                                np.arange(12, dtype=np.float32).reshape(4, 3) * 2)
  assert int(state.step) == 2 and int(state.opt_state["count"]) == 20
  assert state.model_state["keys"].dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(state.model_state["keys"], np.float32),
                                np.full((4, 2), 2.0))
  for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(abstract)):
    assert got.sharding == want.sharding  # read straight into the shardings asked for


def test_small_replicated_arrays_are_saved_without_per_device_slices(tmp_path, caplog):
  """A replicated array splits over its 8 replicas only where each slice has at least
  MIN_REPLICA_SLICE_BYTES: orbax then compiles a slice for the large array and none for
  the small one. (Shapes no other test uses, so no compilation is already cached.)"""
  replicated = NamedSharding(cpu_mesh(8), P())
  rows = checkpoints.MIN_REPLICA_SLICE_BYTES // 4 + 3  # one row per replica: just over
  tree = {"small": jax.device_put(np.ones((8, 7), np.float32), replicated),
          "large": jax.device_put(np.ones((8, rows), np.float32), replicated)}
  checkpoints.save_small_replicated_arrays_whole()
  with ocp.StandardCheckpointer() as checkpointer:
    with jax.log_compiles(True), caplog.at_level("WARNING"):
      checkpointer.save(tmp_path / "state", tree)
      checkpointer.wait_until_finished()
    restored = checkpointer.restore(tmp_path / "state")
  sliced = [r.getMessage() for r in caplog.records
            if r.getMessage().startswith("Compiling jit(slice)")]
  assert any(f"float32[8,{rows}]" in message for message in sliced)
  assert not any("float32[8,7]" in message for message in sliced)
  np.testing.assert_array_equal(restored["large"], np.ones((8, rows), np.float32))
