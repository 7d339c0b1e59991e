"""A digest of every saved array, stored with the checkpoint and checked on restore.

Why this hash. The arrays saved are global `jax.Array`s sharded over a mesh that
may span many processes, and a checkpoint may be restored onto another mesh (or
onto one device for inference). A byte hash such as sha256 is defined on the
whole array, so it would need every array gathered onto one host at every save
and every restore. Instead each array's digest is a sum over its elements,

    digest(x) = sum_i  f(i, bits(x_i))   (mod 2**32, for two independent seeds),

with `i` the element's flat index in the global array and `f` a bijective
32-bit mixing of the element's bits keyed by `i` (the murmur3 finaliser). A sum
does not care how the elements are split into shards, so the digest is computed
where the shards are, in one jitted reduction (XLA adds the partial sums of
the shards; the result is the same on every process), and is identical for any
mesh, any number of processes, and on restore to another layout.

What it detects: changing one element always changes its term (`f` is a bijection
for a fixed index), so one damaged element always changes the digest; any other
damage (flipped bytes anywhere, a chunk of zeros, swapped elements) leaves both
32-bit sums unchanged with probability about 2**-64. It guards against accidental
damage, not against a forger.

Stored as {"params.decoder.layer_0.kernel": "float32[32,64]:0123abcd89ef4567", ...}.
"""
from __future__ import annotations

import functools
from typing import Any, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from memorizing_jax.checkpointing import trees

ALGORITHM = "murmur3-finalised position-keyed uint32 sums, 2 lanes"
_SEEDS = (0x243F6A88, 0x85A308D3)  # two independent lanes: a 64-bit digest
_GOLDEN = 0x9E3779B9


def _fmix32(x: jax.Array) -> jax.Array:
  """murmur3's finaliser: a bijection of uint32 in which every input bit affects
  every output bit."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x85EBCA6B)
  x = x ^ (x >> 13)
  x = x * jnp.uint32(0xC2B2AE35)
  return x ^ (x >> 16)


def _as_words(x: jax.Array) -> jax.Array:
  """The element bits of `x` as uint32 (64-bit elements: a trailing axis of 2)."""
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32)
  unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
  return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


def _flat_index(shape) -> jax.Array:
  """[*shape] uint32: each element's row-major index (wrapping past 2**32)."""
  index = jnp.zeros(shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(len(shape))):
    index = index + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(
        stride % 2**32)
    stride *= shape[axis]
  return index


def _leaf_digest(x: jax.Array) -> jax.Array:
  """[2] uint32: the two lanes of `x`'s digest."""
  words = _as_words(x)
  index = _flat_index(words.shape)
  lanes = []
  for seed in _SEEDS:
    key = _fmix32(index * jnp.uint32(_GOLDEN) + jnp.uint32(seed))
    lanes.append(jnp.sum(_fmix32(words ^ key) + key, dtype=jnp.uint32))
  return jnp.stack(lanes)


@functools.lru_cache(maxsize=8)
def _jitted_digests(replicated: Optional[NamedSharding]):
  """One jitted reduction over a whole tree; outputs replicated on `replicated`'s mesh
  (so every process can read them)."""
  return jax.jit(lambda leaves: [_leaf_digest(x) for x in leaves], out_shardings=replicated)


def _replicated_sharding(leaves: List[Any]) -> Optional[NamedSharding]:
  """A replicated sharding on the leaves' mesh, when they all share one."""
  meshes = {x.sharding.mesh for x in leaves if isinstance(getattr(x, "sharding", None),
                                                          NamedSharding)}
  if len(meshes) == 1 and all(isinstance(getattr(x, "sharding", None), NamedSharding)
                              for x in leaves):
    return NamedSharding(meshes.pop(), PartitionSpec())
  return None


def _label(x: Any) -> str:
  return f"{jnp.dtype(x.dtype).name}[{','.join(str(d) for d in x.shape)}]"


def array_digests(tree: Any) -> Dict[str, str]:
  """{leaf name: "dtype[shape]:16 hex digits"} of every array in `tree`.

  A collective in a multi-process run (every process calls it with its global
  arrays; all get the same answer).
  """
  named = trees.flatten_with_names(tree)
  names = sorted(named)
  leaves = [named[n] for n in names]
  if not leaves:
    return {}
  sums = jax.device_get(_jitted_digests(_replicated_sharding(leaves))(leaves))
  return {name: f"{_label(x)}:{int(s[0]):08x}{int(s[1]):08x}"
          for name, x, s in zip(names, leaves, sums)}


def digest_problems(tree: Any, stored: Dict[str, str]) -> List[str]:
  """What in `tree` (restored arrays) differs from the `stored` digests.

  Leaves restored with another dtype or shape than saved (a cast on restore)
  cannot be compared and are skipped; leaves of `tree` not in `stored` are reported.
  """
  problems = []
  for name, found in sorted(array_digests(tree).items()):
    expected = stored.get(name)
    if expected is None:
      problems.append(f"{name}: no digest was saved for it")
    elif expected.split(":")[0] == found.split(":")[0] and expected != found:
      problems.append(f"{name}: its values differ from the ones saved (digest {found}, "
                      f"saved {expected.split(':')[1]})")
  return problems
