"""`add_to_rows`: the shared bias's gradient is the sum of the rows' cotangents."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from memorizing_jax.model import axes
from memorizing_jax.model.local_attention import add_to_rows


def weighted_sum_and_grads(x, shared, weights):
  """d/d(x, shared) of sum(weights * (x + shared))."""
  return jax.jit(jax.grad(lambda a, b: jnp.sum(weights * add_to_rows(a, b)), argnums=(0, 1)))(
      x, shared)


@pytest.mark.parametrize("rows", [1, 2, 3, 5, 16, 17])  # 17: past the tree, one reduce
def test_shared_gradient_is_the_sum_over_rows(rows):
  rng = np.random.default_rng(rows)
  x = rng.normal(size=(rows, 2, 3, 4)).astype(np.float32)
  shared = rng.normal(size=(1, 2, 3, 4)).astype(np.float32)
  weights = rng.normal(size=(rows, 2, 3, 4)).astype(np.float32)
  np.testing.assert_allclose(add_to_rows(x, shared), x + shared, rtol=1e-6)
  grad_x, grad_shared = weighted_sum_and_grads(x, shared, weights)
  np.testing.assert_allclose(grad_x, weights, rtol=1e-6)
  np.testing.assert_allclose(grad_shared, weights.sum(axis=0, keepdims=True), rtol=1e-5,
                             atol=1e-6)


def test_rows_split_over_the_mesh_sum_across_devices():
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
  rng = np.random.default_rng(0)
  x = rng.normal(size=(8, 2, 3, 4)).astype(np.float32)
  shared = rng.normal(size=(1, 2, 3, 4)).astype(np.float32)
  weights = rng.normal(size=(8, 2, 3, 4)).astype(np.float32)
  rows = NamedSharding(mesh, P("data"))
  grads = jax.jit(axes.in_mesh(
      jax.grad(lambda a, b, w: jnp.sum(w * add_to_rows(a, b)), argnums=(0, 1)), mesh))(
          jax.device_put(x, rows), shared, jax.device_put(weights, rows))
  np.testing.assert_allclose(grads[1], weights.sum(axis=0, keepdims=True), rtol=1e-5,
                             atol=1e-6)
