"""`RelativePositionBias`: each (query, key) pair reads its head's entry of the table at
the T5 bucket of their distance, worked by hand for 8 buckets and max distance 20."""
import jax
import jax.numpy as jnp
import numpy as np

from memorizing_jax.model.position_bias import RelativePositionBias

# Buckets of distances 0..13 for 8 buckets up to 20: 0-3 exact; then 4 + floor(4 *
# log(d / 4) / log(5)), which steps at 4 * 5**0.25 = 5.98, 4 * 5**0.5 = 8.94 and
# 4 * 5**0.75 = 13.37; distances from 14 on share the last bucket, 7.
HAND_BUCKETS = [0, 1, 2, 3, 4, 4, 5, 5, 5, 6, 6, 6, 6, 6]


def hand_bucket(distance):
  if distance < 0:  # a future key
    return 0
  return HAND_BUCKETS[distance] if distance < len(HAND_BUCKETS) else 7


def test_bias_is_the_table_entry_of_each_pairs_distance_bucket():
  module = RelativePositionBias(num_heads=3, num_buckets=8, max_distance=20)
  query_positions = np.array([[0, 3, 9, 24], [5, 6, 7, 30]], np.int32)  # rows apart
  key_positions = np.arange(-4, 12, dtype=np.int32)
  shapes = jax.eval_shape(module.init, jax.random.key(0), query_positions, key_positions)
  boxed = shapes["params"]["rel_embedding"]
  assert boxed.value.shape == (8, 3) and boxed.names == ("relpos_buckets", "heads")
  table = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
  bias = jax.jit(module.apply)({"params": {"rel_embedding": table}}, query_positions,
                               key_positions)
  assert bias.shape == (2, 3, 4, 16) and bias.dtype == jnp.float32  # [rows, heads, q, k]
  want = np.array([[[[table[hand_bucket(q - k), h] for k in key_positions] for q in row]
                    for h in range(3)] for row in query_positions])
  np.testing.assert_array_equal(bias, want)
