"""The decoder stack: embeddings, pre-norm layers, logits, and the state it carries.

    logits, new_state = MemorizingTransformer(config).apply(
        {"params": params}, tokens, state, start_of_sequence)

A model without kNN layers (`knn_layers=()`) and/or without XL cache
(`use_xl_cache=False`) is this same code with those options off.

Memory diagnostics (gate, memory share, fill, retrieval distances and the retrieved
positions with their weights; see `knn_attention.MemoryMix`) are computed only when
asked for:

    (logits, new_state), variables = model.apply(
        {"params": params}, tokens, state, start_of_sequence, mutable=["diagnostics"])
    variables["diagnostics"]["layer_8"]["attention"]["memory"]["gate"]  # [heads]

`model.init` returns them too (every collection is mutable there): keep only
`model.init(...)["params"]`.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from memorizing_jax import memory
from memorizing_jax.model.config import ModelConfig
from memorizing_jax.model.dense_matmul import dense_dot_general
from memorizing_jax.model.local_attention import SelfAttention
from memorizing_jax.model.state import ModelState, SegmentCache, XLCache


def _rms_norm(name: str, dtype) -> nn.RMSNorm:
  return nn.RMSNorm(epsilon=1e-6, dtype=dtype, name=name,
                    scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)))


class MLP(nn.Module):
  """Feed-forward block: embed -> mlp (GELU) -> embed, no biases."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[batch, length, embed] -> [batch, length, embed]."""
    cfg = self.config
    init = nn.initializers.lecun_normal()
    h = nn.Dense(cfg.mlp_dim, use_bias=False, dtype=cfg.compute_jnp_dtype, name="wi",
                 kernel_init=nn.with_logical_partitioning(init, ("embed", "mlp")),
                 dot_general=dense_dot_general)(x)
    h = nn.gelu(h)
    return nn.Dense(cfg.d_model, use_bias=False, dtype=cfg.compute_jnp_dtype, name="wo",
                    kernel_init=nn.with_logical_partitioning(init, ("mlp", "embed")),
                    dot_general=dense_dot_general)(h)


class _DecoderLayer(nn.Module):
  """Pre-norm residual layer: x + attention(norm(x)), then x + mlp(norm(x))."""

  config: ModelConfig
  use_memory: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, cache: Optional[XLCache],
               memory_state: Optional[memory.MemoryState], start_of_sequence: jax.Array,
               deterministic: bool, segment: Optional[SegmentCache] = None
               ) -> Tuple[jax.Array, Any, Optional[memory.MemoryState]]:
    """x: [batch, length, embed]; returns the new x, XL cache (in decoding: the new
    `SegmentCache`) and memory."""
    cfg = self.config
    dropout = nn.Dropout(cfg.dropout_rate, deterministic=deterministic)
    attn, new_cache, new_memory = SelfAttention(cfg, self.use_memory, name="attention")(
        _rms_norm("pre_attention_norm", cfg.compute_jnp_dtype)(x), cache, memory_state,
        start_of_sequence, segment)
    x = x + dropout(attn)
    mlp = MLP(cfg, name="mlp")(_rms_norm("pre_mlp_norm", cfg.compute_jnp_dtype)(x))
    return x + dropout(mlp), new_cache, new_memory


def _layer_class(cfg: ModelConfig):
  """_DecoderLayer, rematerialised per `cfg.remat`.

  Under every policy the retrieved memory entries (named RETRIEVED by the lookup)
  are kept, so the backward pass never searches the memory again.
  """
  if cfg.remat == "none":
    return _DecoderLayer
  policies = jax.checkpoint_policies
  policy = policies.save_only_these_names(memory.RETRIEVED)
  if cfg.remat == "dots":
    policy = policies.save_from_both_policies(policies.dots_with_no_batch_dims_saveable, policy)
  # Argument 5 (counting self) is `deterministic`, a Python bool.
  return nn.remat(_DecoderLayer, policy=policy, static_argnums=(5,))


def _check_inputs(cfg: ModelConfig, tokens: jax.Array, state: ModelState,
                  start_of_sequence: jax.Array) -> None:
  if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
    raise ValueError(f"tokens must be an integer array [batch, length], got {tokens.dtype} "
                     f"{tokens.shape}")
  batch = tokens.shape[0]
  if start_of_sequence.shape != (batch,):
    raise ValueError(f"start_of_sequence must be [batch={batch}] bool, got "
                     f"{start_of_sequence.shape}")
  want_caches = cfg.num_layers if cfg.use_xl_cache else 0
  if len(state.xl_caches) != want_caches or len(state.memories) != len(cfg.knn_layer_indices):
    raise ValueError(
        f"state holds {len(state.xl_caches)} XL caches and {len(state.memories)} memories, "
        f"but the config needs {want_caches} and {len(cfg.knn_layer_indices)}: build it with "
        "init_state(config, batch_size) for this config")
  for leaf in jax.tree.leaves(state):
    if leaf.shape[0] != batch:
      raise ValueError(f"state batch size {leaf.shape[0]} differs from tokens' {batch}: "
                       "build the state with init_state(config, batch_size=tokens.shape[0])")


class MemorizingTransformer(nn.Module):
  """Decoder-only transformer with XL cache and kNN memory (Wu et al. 2022).

  Attributes:
    config: a `ModelConfig`.
  """

  config: ModelConfig

  @nn.compact
  def __call__(self, tokens: jax.Array, state: ModelState, start_of_sequence: jax.Array,
               deterministic: bool = True,
               segments: Optional[Tuple[SegmentCache, ...]] = None
               ) -> Tuple[jax.Array, Any]:
    """Reads one segment of each row's document.

    Args:
      tokens: [batch, length] int32 token ids.
      state: the `ModelState` after the previous segment (see `init_state`).
      start_of_sequence: [batch] bool; rows whose segment begins a new document start
        from an empty XL cache and memory.
      deterministic: disables dropout; pass rngs={"dropout": key} when False.
      segments: incremental decoding (use `model/decoding.py` rather than this
        directly): one `SegmentCache` per layer, and `tokens` the next tokens of the
        current segment. The XL caches and memories in `state` are only read.
    Returns:
      logits [batch, length, vocab] float32 and the new `ModelState` (in decoding:
      the new tuple of `SegmentCache`s).
    """
    cfg = self.config
    start_of_sequence = jnp.asarray(start_of_sequence, bool)
    _check_inputs(cfg, tokens, state, start_of_sequence)
    if segments is not None and len(segments) != cfg.num_layers:
      raise ValueError(f"segments holds {len(segments)} segment caches, the model has "
                       f"{cfg.num_layers} layers: build them with init_segment_cache")
    dtype = cfg.compute_jnp_dtype
    embed = nn.Embed(cfg.vocab_size, cfg.d_model, dtype=dtype, name="embed",
                     embedding_init=nn.with_logical_partitioning(
                         nn.initializers.normal(stddev=1.0), ("vocab", "embed")))
    x = embed(tokens)
    x = nn.Dropout(cfg.dropout_rate, deterministic=deterministic)(x)

    knn = cfg.knn_layer_indices
    layer_class = _layer_class(cfg)
    new_caches, new_memories = [], []
    for i in range(cfg.num_layers):
      cache = state.xl_caches[i] if cfg.use_xl_cache else None
      mem = state.memories[knn.index(i)] if i in knn else None
      segment = None if segments is None else segments[i]
      x, cache, mem = layer_class(cfg, use_memory=i in knn, name=f"layer_{i}")(
          x, cache, mem, start_of_sequence, deterministic, segment)
      if cache is not None:  # in decoding: the new SegmentCache
        new_caches.append(cache)
      if mem is not None:
        new_memories.append(mem)

    x = _rms_norm("final_norm", dtype)(x)
    if cfg.tie_embeddings:
      # Scaling the [batch, length, embed] input rather than the [batch, length, vocab]
      # logits: the same product, and XLA's CPU backend then no longer copies the
      # logits' gradient through a scaled transpose (4% of the CPU step).
      logits = embed.attend(x / np.sqrt(cfg.d_model).astype(dtype))
    else:
      logits = nn.Dense(cfg.vocab_size, use_bias=False, dtype=dtype, name="logits",
                        kernel_init=nn.with_logical_partitioning(
                            nn.initializers.lecun_normal(), ("embed", "vocab")))(x)
    if segments is not None:
      return logits.astype(jnp.float32), tuple(new_caches)
    return logits.astype(jnp.float32), ModelState(xl_caches=tuple(new_caches),
                                                  memories=tuple(new_memories))
