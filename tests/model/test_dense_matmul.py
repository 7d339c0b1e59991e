"""dense_dot_general: Dense layers' products and gradients, against numpy."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memorizing_jax.model.dense_matmul import dense_dot_general


@pytest.mark.parametrize("features,axis", [(6, -1),          # nn.Dense: [.., 4] @ [4, 6]
                                           ((3, 2), -1),     # query projection: [4, 3, 2]
                                           (5, (-2, -1))])   # output projection: [2, 2, 5]
def test_dense_layer_output_and_gradients_are_numpys(features, axis):
  rng = np.random.default_rng(7)
  x = rng.normal(size=(2, 3, 2, 2) if axis != -1 else (2, 3, 4)).astype(np.float32)
  layer = nn.DenseGeneral(features, axis=axis, use_bias=False, dot_general=dense_dot_general)
  params = layer.init(jax.random.PRNGKey(0), x)
  kernel = np.asarray(params["params"]["kernel"], np.float64)
  out_shape = jax.eval_shape(layer.apply, params, x).shape
  assert "custom_vjp_call" in str(jax.make_jaxpr(layer.apply)(params, x))  # not the fallback
  cotangent = rng.normal(size=out_shape)

  def loss(params, x):
    return jnp.sum(layer.apply(params, x) * cotangent)
  (grad_params, grad_x) = jax.grad(loss, argnums=(0, 1))(params, x)

  n = kernel.ndim - (1 if isinstance(features, int) else len(features))  # contracted axes
  x2 = np.asarray(x, np.float64).reshape(-1, int(np.prod(kernel.shape[:n])))
  w2 = kernel.reshape(x2.shape[1], -1)
  g2 = cotangent.reshape(x2.shape[0], -1)
  np.testing.assert_allclose(layer.apply(params, x), (x2 @ w2).reshape(out_shape), rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(grad_x, (g2 @ w2.T).reshape(x.shape), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grad_params["params"]["kernel"],
                             (x2.T @ g2).reshape(kernel.shape), rtol=1e-5, atol=1e-6)


def test_other_contractions_are_jax_dot_general():
  """Batch axes, or contracted axes elsewhere, are passed through unchanged."""
  rng = np.random.default_rng(3)
  a, b = rng.normal(size=(2, 3, 4)).astype(np.float32), rng.normal(size=(2, 4, 5)).astype(np.float32)
  batched = (((2,), (1,)), ((0,), (0,)))
  np.testing.assert_allclose(dense_dot_general(a, b, batched), np.einsum("bij,bjk->bik", a, b),
                             rtol=1e-5, atol=1e-6)
  c = rng.normal(size=(3, 6)).astype(np.float32)  # contracting c's first axis with a's middle
  leading = (((1,), (0,)), ((), ()))
  np.testing.assert_allclose(dense_dot_general(a, c, leading), np.einsum("ijk,jl->ikl", a, c),
                             rtol=1e-5, atol=1e-6)
