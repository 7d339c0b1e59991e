"""The size of a checkpoint, which the trainer checks the workdir's free space against."""
import jax
import jax.numpy as jnp
import numpy as np
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
