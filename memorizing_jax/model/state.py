"""The model's recurrent state: each layer's XL cache and each kNN layer's memory.

`ModelState` is a plain pytree carried from one segment to the next (donated in
training). Nothing in it is differentiable: the model writes it through
`stop_gradient`.
"""
from __future__ import annotations

from typing import Tuple

import flax.struct
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from memorizing_jax import memory
from memorizing_jax.model.config import ModelConfig


@flax.struct.dataclass
class XLCache:
  """The previous segment's keys/values of one layer (Transformer-XL).

  Attributes:
    keys: [batch, heads, cache_length, head_dim] keys (normalised where the layer
      normalises keys).
    values: [batch, heads, cache_length, head_dim].
    valid: [batch, cache_length] bool; false for entries of another document or
      never written. An empty cache is masked by this, never by zeroed keys.
  """

  keys: jax.Array
  values: jax.Array
  valid: jax.Array


@flax.struct.dataclass
class SegmentCache:
  """One layer's keys/values of the current, partly read segment (incremental decoding).

  Attributes:
    keys: [batch, heads, segment_length, head_dim] keys of the segment's tokens read so
      far (normalised where the layer normalises keys); entries at or after
      `position` are not read.
    values: [batch, heads, segment_length, head_dim].
    position: [batch] int32, how many tokens of the segment each row has read (rows
      of a batch may be at different places in their segments, e.g. prompts of
      different lengths).
  """

  keys: jax.Array
  values: jax.Array
  position: jax.Array


def init_segment_cache(config: ModelConfig, batch_size: int) -> Tuple[SegmentCache, ...]:
  """Empty segment caches of every layer (every row at position 0)."""
  shape = (batch_size, config.num_heads, config.segment_length, config.head_dim)
  dtype = config.compute_jnp_dtype
  return tuple(SegmentCache(keys=jnp.zeros(shape, dtype), values=jnp.zeros(shape, dtype),
                            position=jnp.zeros((batch_size,), jnp.int32))
               for _ in range(config.num_layers))


@flax.struct.dataclass
class ModelState:
  """Everything the model carries between segments.

  Attributes:
    xl_caches: one `XLCache` per layer, in layer order; empty when the XL cache is off.
    memories: one `memory.MemoryState` per kNN layer, in the order of
      `ModelConfig.knn_layer_indices`; empty for a model without memory.
  """

  xl_caches: Tuple[XLCache, ...]
  memories: Tuple[memory.MemoryState, ...]


def _init_xl_cache(config: ModelConfig, batch_size: int) -> XLCache:
  """An empty XL cache for one layer (all entries invalid)."""
  shape = (batch_size, config.num_heads, config.segment_length, config.head_dim)
  dtype = config.compute_jnp_dtype
  return XLCache(keys=jnp.zeros(shape, dtype), values=jnp.zeros(shape, dtype),
                 valid=jnp.zeros((batch_size, config.segment_length), bool))


def init_state(config: ModelConfig, batch_size: int) -> ModelState:
  """The state before any segment: empty XL caches and empty memories."""
  if batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  xl_caches = tuple(_init_xl_cache(config, batch_size) for _ in range(config.num_layers)
                    ) if config.use_xl_cache else ()
  memories = tuple(
      memory.init(batch_size, config.num_heads, config.memory_slots, config.head_dim,
                  config.memory_jnp_dtype) for _ in config.knn_layer_indices)
  return ModelState(xl_caches=xl_caches, memories=memories)


def state_logical_axes(config: ModelConfig) -> ModelState:
  """Logical axis names of every `ModelState` leaf.

  Returns a `ModelState` of the same structure whose leaves are `PartitionSpec`s
  of logical names (`batch`, `heads`, `length`, `kv`, `memory_slots`).
  """
  xl = XLCache(keys=PartitionSpec("batch", "heads", "length", "kv"),
               values=PartitionSpec("batch", "heads", "length", "kv"),
               valid=PartitionSpec("batch", "length"))
  mem = memory.MemoryState(entries=PartitionSpec("batch", "heads", "memory_slots", None, "kv"),
                           count=PartitionSpec("batch"),
                           positions=PartitionSpec("batch", "memory_slots"))
  xl_caches = tuple(xl for _ in range(config.num_layers)) if config.use_xl_cache else ()
  return ModelState(xl_caches=xl_caches, memories=tuple(mem for _ in config.knn_layer_indices))
