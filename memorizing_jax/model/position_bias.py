"""The T5 relative position bias, causal form (Raffel et al. 2020).

A query at position i and a key at position j <= i get a learned per-head bias that
depends on the bucket of the distance i - j: exact buckets for small distances,
logarithmically wider ones up to `max_distance`, the last bucket beyond.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def causal_bucket(distance: jax.Array, num_buckets: int, max_distance: int) -> jax.Array:
  """Bucket of each non-negative distance (query position - key position).

  Args:
    distance: int array of any shape; negative values (future keys) go to bucket 0.
    num_buckets: number of buckets; the first `num_buckets // 2` are exact.
    max_distance: distances at or beyond this share the last bucket.
  Returns:
    int32 array of the same shape, values in [0, num_buckets).
  """
  distance = jnp.maximum(distance, 0)
  exact = num_buckets // 2
  # log-spaced buckets for exact <= distance < max_distance; guard log(0) for small ones.
  scaled = jnp.log(jnp.maximum(distance, exact).astype(jnp.float32) / exact) / np.log(
      max_distance / exact)
  large = exact + (scaled * (num_buckets - exact)).astype(jnp.int32)
  large = jnp.minimum(large, num_buckets - 1)
  return jnp.where(distance < exact, distance, large).astype(jnp.int32)


class RelativePositionBias(nn.Module):
  """Learned per-head bias for every (query, key) pair, from their positions.

  Attributes:
    num_heads: heads.
    num_buckets: T5 buckets.
    max_distance: T5 max distance.
  """

  num_heads: int
  num_buckets: int = 32
  max_distance: int = 128

  @nn.compact
  def __call__(self, query_positions: jax.Array, key_positions: jax.Array) -> jax.Array:
    """Args: query_positions [..., queries], key_positions [keys] int (same origin).

    Returns: [..., heads, queries, keys] float32 bias.
    """
    table = self.param(
        "rel_embedding",
        nn.with_logical_partitioning(nn.initializers.normal(stddev=0.1),
                                     ("relpos_buckets", "heads")),
        (self.num_buckets, self.num_heads), jnp.float32)
    buckets = causal_bucket(query_positions[..., :, None] - key_positions,
                            self.num_buckets, self.max_distance)
    return jnp.moveaxis(table[buckets], -1, -3)
