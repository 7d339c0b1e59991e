"""Array digests: the documented formula, independent of sharding, sensitive to any change."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from memorizing_jax.checkpointing import digests


def _fmix32(x):
  x = x ^ (x >> 16)
  x = (x * 0x85EBCA6B) % 2**32
  x = x ^ (x >> 13)
  x = (x * 0xC2B2AE35) % 2**32
  return x ^ (x >> 16)


def _reference_digest(words):
  """The module docstring's formula, element by element in Python integers."""
  lanes = []
  for seed in (0x243F6A88, 0x85A308D3):
    total = 0
    for i, w in enumerate(int(v) for v in words):
      key = _fmix32((i * 0x9E3779B9 + seed) % 2**32)
      total += (_fmix32(w ^ key) + key) % 2**32
    lanes.append(total % 2**32)
  return f"{lanes[0]:08x}{lanes[1]:08x}"


def test_digest_follows_the_documented_formula():
  x = np.array([[1.5, -2.0, 0.0], [3.25, 1e-8, -0.0]], np.float32)
  expected = _reference_digest(x.view(np.uint32).reshape(-1))
  assert digests.array_digests({"w": jnp.asarray(x)}) == {"w": f"float32[2,3]:{expected}"}
  ints = np.array([7, -1, 2**31 - 1], np.int32)
  assert digests.array_digests({"i": jnp.asarray(ints)})["i"] == \
      f"int32[3]:{_reference_digest(ints.view(np.uint32))}"


def test_digest_is_the_same_for_any_sharding():
  x = np.random.RandomState(0).randn(8, 6).astype(np.float32)
  mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
  sharded = {"params": {"w": jax.device_put(x, NamedSharding(mesh, P("data", "model")))},
             "step": jax.device_put(jnp.int32(3), NamedSharding(mesh, P()))}
  single = {"params": {"w": jnp.asarray(x)}, "step": jnp.int32(3)}
  assert digests.array_digests(sharded) == digests.array_digests(single)
  assert sorted(digests.array_digests(single)) == ["params.w", "step"]


def test_one_ulp_or_a_swap_is_reported_and_a_cast_is_skipped():
  x = np.random.RandomState(1).randn(4, 5).astype(np.float32)
  saved = digests.array_digests({"w": jnp.asarray(x)})
  nudged = x.copy()
  nudged[2, 3] = np.nextafter(nudged[2, 3], np.inf)
  swapped = x.copy()
  swapped[0, [0, 1]] = swapped[0, [1, 0]]
  for damaged in (nudged, swapped):
    problems = digests.digest_problems({"w": jnp.asarray(damaged)}, saved)
    assert len(problems) == 1 and problems[0].startswith("w: its values differ")
  assert digests.digest_problems({"w": jnp.asarray(x)}, saved) == []
  # Restored as bfloat16 (another dtype than saved): not comparable, not reported.
  assert digests.digest_problems({"w": jnp.asarray(x, jnp.bfloat16)}, saved) == []
  assert digests.digest_problems({"v": jnp.asarray(x)}, saved) == [
      "v: no digest was saved for it"]
