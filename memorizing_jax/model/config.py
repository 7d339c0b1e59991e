"""The model's configuration: a frozen dataclass that validates itself.

gin binds this class at the edge (the training entry point); nothing inside the
model reads gin. Defaults are the paper's 200M model (12 layers, d_model 1024,
8 heads x 128, MLP 4096, 32K vocabulary, segments of 512 with an XL cache, one kNN
layer at index -4 with k = 32).
"""
from __future__ import annotations

import dataclasses
from typing import Tuple

import jax.numpy as jnp

from memorizing_jax import memory

# Rematerialisation of each decoder layer in the backward pass (see transformer.py):
# none; full (keep only the layer's inputs and the retrieved memory entries); dots
# (also keep the matmul results that have no batch dimension).
REMAT_POLICIES = ("none", "full", "dots")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def _dtype_name(value) -> str:
  """The canonical name of a dtype given as a string or a numpy/jax dtype."""
  if isinstance(value, str):
    return value
  try:
    return jnp.dtype(value).name
  except TypeError:
    return repr(value)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Sizes and options of a Memorizing Transformer.

  Attributes:
    vocab_size: number of token ids.
    num_layers: decoder layers.
    d_model: width of the residual stream.
    num_heads: attention heads per layer.
    head_dim: width of each head's queries, keys and values.
    mlp_dim: hidden width of the feed-forward block.
    dropout_rate: dropout on embeddings, attention output and MLP output.
    segment_length: tokens per segment; also the length of the XL cache.
    use_xl_cache: attend to the previous segment's keys/values of the same document.
    knn_layers: indices (negative counts from the end) of the kNN-augmented layers;
      empty for a model without memory.
    knn_k: entries retrieved per query.
    memory_slots: capacity of each (row, head) memory, in tokens; at least
      `segment_length` when there is a kNN layer.
    lookup_method: "approx" (the default: the faster at every measured size and
      backend, at or above `recall_target`; see `memory.lookup`) or "exact" top-k.
    recall_target: expected recall of the "approx" lookup.
    memory_dtype: dtype of the stored keys/values ("float32", "bfloat16", "float16").
    compute_dtype: dtype of activations and matmuls; parameters stay float32.
    normalize_qk: L2-normalise queries and keys with a learned per-head temperature
      in the local-only layers too (the kNN layers always do).
    temperature_init: initial value of the learned per-head temperature that
      multiplies normalised query-key similarities; 0 means sqrt(head_dim).
    gate_bias_init: initial bias of the kNN layers' per-head memory gate
      (sigmoid(0) = 0.5 mixes memory and local attention equally).
    relative_position_buckets: T5 relative position buckets (causal).
    relative_position_max_distance: distance beyond which buckets saturate.
    tie_embeddings: compute logits with the input embedding matrix.
    remat: recompute each layer's activations in the backward pass instead of
      keeping them: "none", "full" or "dots" (see REMAT_POLICIES); the kNN lookup
      is never run twice.
  """

  vocab_size: int = 32000
  num_layers: int = 12
  d_model: int = 1024
  num_heads: int = 8
  head_dim: int = 128
  mlp_dim: int = 4096
  dropout_rate: float = 0.0
  segment_length: int = 512
  use_xl_cache: bool = True
  knn_layers: Tuple[int, ...] = (-4,)
  knn_k: int = 32
  memory_slots: int = 8192
  lookup_method: str = "approx"
  recall_target: float = 0.95
  memory_dtype: str = "float32"
  compute_dtype: str = "float32"
  normalize_qk: bool = True
  temperature_init: float = 0.0
  gate_bias_init: float = 0.0
  relative_position_buckets: int = 32
  relative_position_max_distance: int = 128
  tie_embeddings: bool = True
  remat: str = "none"

  def __post_init__(self):
    # Normalise list-like and dtype-like inputs (gin passes lists) before checking.
    object.__setattr__(self, "knn_layers", tuple(int(i) for i in self.knn_layers))
    object.__setattr__(self, "memory_dtype", _dtype_name(self.memory_dtype))
    object.__setattr__(self, "compute_dtype", _dtype_name(self.compute_dtype))
    for name in ("vocab_size", "num_layers", "d_model", "num_heads", "head_dim", "mlp_dim",
                 "segment_length", "memory_slots", "knn_k"):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"ModelConfig.dropout_rate must be in [0, 1), got {self.dropout_rate}")
    for index in self.knn_layers:
      if not -self.num_layers <= index < self.num_layers:
        raise ValueError(
            f"ModelConfig.knn_layers holds {index}, outside the {self.num_layers} layers "
            f"(valid: {-self.num_layers}..{self.num_layers - 1}); use an index in range "
            "or set knn_layers=() for a model without memory")
    if len(set(self.knn_layer_indices)) != len(self.knn_layers):
      raise ValueError(f"ModelConfig.knn_layers {self.knn_layers} names a layer twice "
                       f"(as indices {sorted(i % self.num_layers for i in self.knn_layers)})")
    if self.knn_layers and self.knn_k > self.memory_slots:
      raise ValueError(f"ModelConfig.knn_k={self.knn_k} exceeds memory_slots="
                       f"{self.memory_slots}: retrieve at most as many entries as the memory "
                       "holds (lower knn_k or raise memory_slots)")
    if self.knn_layers and self.memory_slots < self.segment_length:
      # Each segment's keys are written after its lookups; a memory smaller than a
      # segment keeps only the newest memory_slots of them, so it never reaches past
      # the previous segment (which the XL cache already attends to).
      raise ValueError(
          f"ModelConfig.memory_slots={self.memory_slots} is smaller than one segment "
          f"(segment_length={self.segment_length}): each segment's write would overwrite "
          "the whole memory, so it would never hold anything older than the previous "
          f"segment. Set memory_slots >= {self.segment_length} (the paper uses 1536 to "
          "262144 for segments of 512), or knn_layers=() for a model without memory")
    if self.lookup_method not in memory.METHODS:
      raise ValueError(f"ModelConfig.lookup_method must be one of {memory.METHODS}, "
                       f"got {self.lookup_method!r}")
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f"ModelConfig.remat must be one of {REMAT_POLICIES}, got {self.remat!r}")
    if not 0.0 < self.recall_target <= 1.0:
      raise ValueError(f"ModelConfig.recall_target must be in (0, 1], got {self.recall_target}")
    for name in ("memory_dtype", "compute_dtype"):
      if getattr(self, name) not in DTYPES:
        raise ValueError(f"ModelConfig.{name} must be one of {sorted(DTYPES)}, "
                         f"got {getattr(self, name)!r}")
    if self.temperature_init < 0:
      raise ValueError(f"ModelConfig.temperature_init must be positive (or 0 for "
                       f"sqrt(head_dim)), got {self.temperature_init}")
    if self.relative_position_buckets < 2:
      raise ValueError("ModelConfig.relative_position_buckets must be at least 2, got "
                       f"{self.relative_position_buckets}")
    if self.relative_position_max_distance <= self.relative_position_buckets // 2:
      raise ValueError(
          f"ModelConfig.relative_position_max_distance={self.relative_position_max_distance} "
          f"must exceed relative_position_buckets // 2 = {self.relative_position_buckets // 2} "
          "(the exact buckets); raise the distance or use fewer buckets")

  @property
  def knn_layer_indices(self) -> Tuple[int, ...]:
    """The kNN layers as sorted non-negative indices."""
    return tuple(sorted(i % self.num_layers for i in self.knn_layers))

  @property
  def initial_temperature(self) -> float:
    """The temperature's initial value: `temperature_init`, or sqrt(head_dim) if 0."""
    return self.temperature_init or float(self.head_dim) ** 0.5

  @property
  def memory_jnp_dtype(self):
    return DTYPES[self.memory_dtype]

  @property
  def compute_jnp_dtype(self):
    return DTYPES[self.compute_dtype]
