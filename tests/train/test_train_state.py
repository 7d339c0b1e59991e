"""A fresh model state: empty everywhere, created straight into its shardings."""
import jax
import numpy as np

from memorizing_jax.model import partitioning
from memorizing_jax.model.config import ModelConfig
from memorizing_jax.train import train_state
from memorizing_jax.train.partitioner import MeshConfig, Partitioner

CONFIG = ModelConfig(vocab_size=16, num_layers=2, d_model=16, num_heads=2, head_dim=8,
                     mlp_dim=16, segment_length=4, use_xl_cache=True, knn_layers=(-1,),
                     knn_k=2, memory_slots=8, relative_position_buckets=4,
                     relative_position_max_distance=8)


def test_fresh_model_state_is_empty_and_placed_as_asked():
  partitioner = Partitioner(MeshConfig(data=4, model=2))
  shardings = partitioning.shardings_of(
      partitioning.state_layout(CONFIG, 8, partitioner.mesh, partitioner.rules))
  state = train_state.fresh_model_state(CONFIG, 8, shardings)
  for leaf, sharding in zip(jax.tree.leaves(state), jax.tree.leaves(shardings)):
    assert leaf.sharding == sharding
  (memory,) = state.memories  # one kNN layer
  assert memory.entries.shape == (8, 2, 8, 2, 8)  # [batch, heads, slots, key/value, d]
  assert not np.asarray(memory.entries).any() and not np.asarray(memory.count).any()
  np.testing.assert_array_equal(np.asarray(memory.positions), np.full((8, 8), -1))
  # Rows over the 4 data devices, heads over the 2 model devices.
  assert memory.entries.sharding.shard_shape(memory.entries.shape) == (2, 1, 8, 2, 8)
  assert len(state.xl_caches) == 2
  assert not any(np.asarray(cache.valid).any() for cache in state.xl_caches)  # new documents
