"""The dot product of flax's Dense layers, with a gradient written for XLA's CPU backend.

`nn.Dense` and `nn.DenseGeneral` contract the inputs' trailing axes with the kernel's
leading ones. JAX's own gradient of that dot writes the kernel's gradient as a product
of the output's cotangent with the inputs, contracted over the tokens; XLA:CPU then
transposes the whole cotangent (a [tokens, features] copy, fused with whatever produced
it) before the matrix multiply. `dense_dot_general` computes the same products as
`inputs^T @ cotangent` instead, which XLA:CPU multiplies as they lie. Both gradients are
the same sums of the same products. Measured on the 2-core CPU host, the gradient of
step_time.py's MLP block (4 x 512 tokens, 512 -> 2048 -> 512, GELU) took 159 ms against
237 ms (fastest of 9), with bit-identical results.

On CPU only: compiled for a v5p chip (`benchmarks/tpu_compile.py --topologies v5p:2x2x1
--experiments table4_512_xl`), the same gradient raised the XL step's bytes accessed from
303.4 to 325.8 GB (roofline 109.9 -> 118.0 ms), so other backends keep JAX's gradient.

Pass it as `dot_general=dense_dot_general` to `nn.Dense` / `nn.DenseGeneral`.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp


@jax.custom_vjp
def _matmul(inputs: jax.Array, kernel: jax.Array) -> jax.Array:
  """[rows, k] @ [k, features]."""
  return jnp.dot(inputs, kernel)


def _matmul_forward(inputs, kernel):
  return jnp.dot(inputs, kernel), (inputs, kernel)


def _matmul_backward(residuals, cotangent):
  inputs, kernel = residuals
  return jnp.dot(cotangent, kernel.T), jnp.dot(inputs.T, cotangent)


_matmul.defvjp(_matmul_forward, _matmul_backward)


def dense_dot_general(lhs: jax.Array, rhs: jax.Array, dimension_numbers, precision=None,
                      preferred_element_type=None) -> jax.Array:
  """`jax.lax.dot_general` for a Dense layer: `lhs`'s last n axes against `rhs`'s first n.

  Other contractions (batch axes, other axes) go to `jax.lax.dot_general` unchanged, as
  do calls that ask for a precision or an output dtype, and every call on a backend
  other than CPU.
  """
  (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
  n = len(lhs_contract)
  dense = (not lhs_batch and not rhs_batch and precision is None
           and preferred_element_type is None and lhs.dtype == rhs.dtype
           and tuple(lhs_contract) == tuple(range(lhs.ndim - n, lhs.ndim))
           and tuple(rhs_contract) == tuple(range(n)))
  if not dense:
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                               preferred_element_type=preferred_element_type)

  def on_cpu(lhs, rhs):
    k = math.prod(rhs.shape[:n])
    out = _matmul(lhs.reshape(-1, k), rhs.reshape(k, -1))
    return out.reshape(lhs.shape[:lhs.ndim - n] + rhs.shape[n:])

  def elsewhere(lhs, rhs):
    return jax.lax.dot_general(lhs, rhs, dimension_numbers)

  return jax.lax.platform_dependent(lhs, rhs, cpu=on_cpu, default=elsewhere)
