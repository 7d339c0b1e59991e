"""The TPU branch of the approximate lookup, checked by lowering for TPU on CPU."""
import jax
import jax.numpy as jnp
import pytest

from memorizing_jax import memory
from meshes import cpu_mesh  # pylint: disable=g-bad-import-order

APPROX_TOP_K_CALL = "custom_call @ApproxTopK"


def lowered_text(method, platforms, sharded=False):
  state = jax.eval_shape(lambda: memory.init(2, 2, 1024, 16))
  queries = jax.ShapeDtypeStruct((2, 2, 8, 16), jnp.float32)
  if sharded:  # the slots split over "model" (retrieval.py)
    mesh = cpu_mesh(2, 4)
    scale = jnp.ones((2,), jnp.float32)
    placement = jax.sharding.PartitionSpec("data", None, "model")
    fn = lambda s, q: memory.retrieve(s, q, 4, scale, method=method, placement=placement)
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return jax.export.export(jax.jit(fn), platforms=platforms)(state, queries).mlir_module()
  fn = lambda s, q: memory.lookup(s, q, 4, method=method)
  return jax.export.export(jax.jit(fn), platforms=platforms)(state, queries).mlir_module()


@pytest.mark.parametrize("sharded", [False, True])
def test_approx_uses_approx_max_k_on_tpu_only(sharded):
  tpu = lowered_text("approx", ["tpu"], sharded)
  assert APPROX_TOP_K_CALL in tpu and "stablehlo.while" not in tpu  # no blocked loop on TPU
  for platform in ("cpu", "cuda"):
    text = lowered_text("approx", [platform], sharded)
    assert APPROX_TOP_K_CALL not in text and "stablehlo.while" in text  # blocked bin reduce


def test_exact_never_uses_approx_max_k():
  assert APPROX_TOP_K_CALL not in lowered_text("exact", ["tpu"])
