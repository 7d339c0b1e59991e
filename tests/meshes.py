"""Meshes of the 8 forced CPU devices (tests/conftest.py) for the sharding tests."""
import jax

AXES = ("data", "model", "memory")


def cpu_mesh(*shape: int) -> jax.sharding.Mesh:
  """A (data, model[, memory]) mesh of `shape` over the first prod(shape) CPU devices,
  with Auto axes as the trainer's meshes have."""
  return jax.make_mesh(shape, AXES[:len(shape)],
                       axis_types=(jax.sharding.AxisType.Auto,) * len(shape))
