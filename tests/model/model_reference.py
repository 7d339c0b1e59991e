"""Independent references shared by the model tests."""
import math


def t5_causal_bucket(distance, num_buckets, max_distance):
  """T5's bucket of a key `distance` (>= 0) tokens before its query: exact below
  num_buckets / 2, then logarithmic up to max_distance, the last bucket beyond."""
  exact = num_buckets // 2
  if distance < exact:
    return distance
  bucket = exact + int(math.log(distance / exact) / math.log(max_distance / exact)
                       * (num_buckets - exact))
  return min(bucket, num_buckets - 1)
