"""The kNN-augmented part of a layer: retrieve from the external memory and gate.

For each (row, head, query): the top-k entries of the row's memory by cosine
similarity (queries and keys are L2-normalised), a softmax over the valid retrieved
scores times the head's temperature, and V_mem = sum of weights x retrieved values.
A learned per-head gate g = sigmoid(b_h) (b_h initialised to
`gate_bias_init`, 0 by default) mixes
out = g * V_mem + (1 - g) * V_local. No position bias on retrieved entries and no
gradient into the memory: only the queries (and the temperature) get gradients
through the retrieved scores; the selection itself is not differentiated.

Order: reset the rows that start a new document, look up, then write the segment's
keys/values, so a segment never retrieves itself. A query with no valid entry (the
first segment of a document) gets V_mem = 0.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp

from memorizing_jax import memory
from memorizing_jax.model import axes
from memorizing_jax.model.config import ModelConfig

DIAGNOSTICS = "diagnostics"


def _keep_last(_, value):
  return value


def _none():
  return None


def sown_by_layer(sown: Any) -> Dict[int, Dict[str, jax.Array]]:
  """The kNN layers' sown diagnostics by layer: {layer index: {name: value}}, from the
  `DIAGNOSTICS` collection of the model applied with it mutable (names and shapes:
  `MemoryMix._sow_diagnostics`). Empty for a model without memory. This is the one
  place that reads the collection's module paths (`layer_<i>/.../<name>`)."""
  layers: Dict[int, Dict[str, jax.Array]] = {}
  for path, value in flax.traverse_util.flatten_dict(nn.unbox(sown)).items():
    index = next(int(part[len("layer_"):]) for part in path if part.startswith("layer_"))
    layers.setdefault(index, {})[path[-1]] = value
  return dict(sorted(layers.items()))


class MemoryMix(nn.Module):
  """Retrieves from a kNN layer's memory and mixes it with the local attention.

  Attributes:
    config: the model config (knn_k, lookup_method, recall_target).
  """

  config: ModelConfig

  @nn.compact
  def __call__(self, queries: jax.Array, keys: jax.Array, values: jax.Array,
               local_out: jax.Array, memory_state: memory.MemoryState,
               start_of_sequence: jax.Array, scale: jax.Array,
               query_offset: Optional[jax.Array] = None
               ) -> Tuple[jax.Array, memory.MemoryState]:
    """Args:
      queries: [batch, heads, length, head_dim] normalised queries of the segment.
      keys, values: [batch, heads, length, head_dim] the segment's (normalised) keys
        and values, written to the memory after the lookup.
      local_out: [batch, heads, length, head_dim] the local attention's output.
      memory_state: the layer's memory before this segment.
      start_of_sequence: [batch] bool.
      scale: [heads] temperature applied to the cosine similarities.
      query_offset: incremental decoding: [batch] int32 index in each row's current
        segment of its first query. The memory is then only read (reset where
        `start_of_sequence`, looked up) and returned unchanged: the segment is written
        when it completes (`decoding.complete_segment`).
    Returns:
      the gated output [batch, heads, length, head_dim] and the new memory.
    """
    cfg = self.config
    state = memory.reset(memory_state, start_of_sequence)
    # The memory stays on its shards: each device searches and writes its own rows,
    # heads and slots (see memory/shard_local.py).
    placement = axes.ambient_spec(axes.MEMORY_AXES, state.key_shape)
    # Decoding reads the memory only; the segment is written when it completes.
    found, new_state = memory.retrieve_then_write(
        state, queries, keys, values, cfg.knn_k, scale, method=cfg.lookup_method,
        recall_target=cfg.recall_target, placement=placement, dtype=local_out.dtype,
        write_too=query_offset is None)
    if query_offset is not None:
      new_state = memory_state
    memory_out, weights = found.out, found.weights

    gate_bias = self.param("gate_bias",
                           nn.with_logical_partitioning(
                               nn.initializers.constant(cfg.gate_bias_init), ("heads",)),
                           (cfg.num_heads,), jnp.float32)
    gate = jax.nn.sigmoid(gate_bias)
    g = gate[None, :, None, None].astype(local_out.dtype)
    out = g * memory_out + (1 - g) * local_out
    if self.is_mutable_collection(DIAGNOSTICS):  # computed only when asked for
      self._sow_diagnostics(gate, memory_out, local_out, state, found, weights,
                            0 if query_offset is None else query_offset[:, None])
    return out, new_state

  def _sow_diagnostics(self, gate, memory_out, local_out, state, found, weights,
                       query_offset=0):
    """Sows what the training metrics and the retrieval analysis read.

    gate [heads]; memory_share [batch, heads, length] (g|V_mem| / (g|V_mem| +
    (1-g)|V_local|), the gate-weighted share of the output norm from memory);
    memory_fill [batch] (filled slots / slots at lookup time); mean_distance
    [batch, heads, length] (mean over valid retrieved entries of query position minus
    entry position, in tokens; 0 where none); retrieved_positions, retrieved_weights,
    retrieved_valid [batch, heads, length, k].
    """
    g = gate[None, :, None]
    mem_norm = jnp.linalg.norm(memory_out.astype(jnp.float32), axis=-1)
    local_norm = jnp.linalg.norm(local_out.astype(jnp.float32), axis=-1)
    share = g * mem_norm / jnp.maximum(g * mem_norm + (1 - g) * local_norm, 1e-9)
    fill = jnp.minimum(state.count, state.slots).astype(jnp.float32) / state.slots
    length = memory_out.shape[2]
    query_positions = (state.count[:, None] + query_offset
                       + jnp.arange(length, dtype=jnp.int32)[None])
    positions = memory.ring_positions(state.count, found.slots, state.slots)
    distance = (query_positions[:, None, :, None] - positions).astype(jnp.float32)
    valid_count = jnp.sum(found.valid, axis=-1)
    mean_distance = jnp.sum(jnp.where(found.valid, distance, 0.0), axis=-1) / jnp.maximum(
        valid_count, 1)
    for name, value in (("gate", gate), ("memory_share", share), ("memory_fill", fill),
                        ("mean_distance", mean_distance),
                        ("retrieved_positions", positions),
                        ("retrieved_weights", weights), ("retrieved_valid", found.valid)):
      self.sow(DIAGNOSTICS, name, value, init_fn=_none, reduce_fn=_keep_last)
