"""Sampling text: the prompt is read with memory, then tokens are decoded one at a time.

The prompt is the document `[pad] prompt...`. Its complete segments are read by
the full forward pass (XL cache and memory as in training); the rest, the
current partial segment, is prefilled into the per-layer segment caches in one
call (`model/decoding.py`). Then each new token is one jit-compiled step that
reads the last token into the segment caches and samples the next. When a segment
is complete it becomes the XL cache and is written to the memory, so the memory
keeps growing while generating.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from memorizing_jax.inference import ablation
from memorizing_jax.model import MemorizingTransformer, ModelConfig, init_state
from memorizing_jax.model import decoding


@dataclasses.dataclass
class Generation:
  """A prompt and what was generated after it.

  Attributes:
    prompt_tokens: [p] int32 ids of the prompt.
    tokens: [g] int32 generated ids (ending with EOS when generation stopped there).
    text: the generated tokens as text.
  """

  prompt_tokens: np.ndarray
  tokens: np.ndarray
  text: str

  def __str__(self) -> str:
    return self.text


def check_sampling(temperature: float, top_k: Optional[int], max_new_tokens: int) -> None:
  """Raises TypeError or ValueError, naming the value, unless `temperature` is a finite
  number >= 0, `top_k` a positive integer or None, and `max_new_tokens` an integer >= 0."""
  if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
    raise TypeError(f"temperature must be a number >= 0 (0 decodes greedily), got "
                    f"{temperature!r} of type {type(temperature).__name__}")
  if not math.isfinite(temperature) or temperature < 0:
    raise ValueError(f"temperature must be a finite number >= 0 (0 decodes greedily), "
                     f"got {temperature!r}")
  if top_k is not None:
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral):
      raise TypeError(f"top_k must be a positive int or None (all tokens), got {top_k!r} "
                      f"of type {type(top_k).__name__}")
    if top_k < 1:
      raise ValueError(f"top_k must be a positive int or None (all tokens), got {top_k}")
  if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral):
    raise TypeError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r} of type "
                    f"{type(max_new_tokens).__name__}")
  if max_new_tokens < 0:
    raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")


def sample(logits: jax.Array, key: jax.Array, temperature: float, top_k: Optional[int]
           ) -> jax.Array:
  """Next tokens [batch] from logits [batch, vocab]: argmax when temperature is 0,
  else a sample of softmax(logits / temperature) restricted to the top_k best."""
  if temperature == 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / temperature
  if top_k is not None and top_k < logits.shape[-1]:
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


class Decoder:
  """The jitted pieces of generation for one model (compiled once, reused).

  Args:
    config: the model's config.
  """

  def __init__(self, config: ModelConfig):
    self.config = config
    model = MemorizingTransformer(config)
    self.model = model

    def read_segment(params, state, tokens, start_of_sequence):
      return model.apply({"params": params}, tokens, state, start_of_sequence)[1]

    def prefill(params, state, segments, tokens, count):
      logits, segments = decoding.decode(model, params, tokens, state, segments)
      segments = tuple(s.replace(position=count) for s in segments)
      return jnp.take(logits, count - 1, axis=1), segments

    def step(params, state, segments, token, key, temperature, top_k):
      logits, segments = decoding.decode(model, params, token[:, None], state, segments)
      return sample(logits[:, 0], key, temperature, top_k), logits[:, 0], segments

    self.read_segment = jax.jit(read_segment, donate_argnums=(1,))
    self.prefill = jax.jit(prefill, donate_argnums=(2,))
    self.step = jax.jit(step, static_argnames=("temperature", "top_k"), donate_argnums=(2,))
    self.sample = jax.jit(sample, static_argnames=("temperature", "top_k"))
    self.complete = jax.jit(lambda state, segments: decoding.complete_segment(
        config, state, segments), donate_argnums=(0, 1))

  def generate(self, params: Any, prompt: Sequence[int], pad_id: int, max_new_tokens: int,
               temperature: float = 0.0, top_k: Optional[int] = None, seed: int = 0,
               stop_ids: Sequence[int] = (), on_token: Optional[Callable] = None,
               memory: bool = True) -> List[int]:
    """Generated token ids after `prompt` (ids of one document's beginning).

    Args:
      params: the model's parameters.
      prompt: token ids (may be empty: the document's start token alone).
      pad_id: the start token.
      max_new_tokens: at most this many tokens.
      temperature: 0 for greedy decoding, else a finite number > 0.
      top_k: sample among the k most likely tokens: a positive int, or None (all).
      seed: the sampling seed.
      stop_ids: stop after generating one of these (e.g. EOS); () never stops early
        (and never waits for a token to reach the host).
      on_token: called as on_token(step, token_array) after every step (benchmarks).
      memory: False keeps the memory empty (`ablation.py`).
    """
    forget = (lambda s: s) if memory else ablation.empty_memories
    check_sampling(temperature, top_k, max_new_tokens)
    temperature, top_k = float(temperature), None if top_k is None else int(top_k)
    cfg, length = self.config, self.config.segment_length
    sequence = np.concatenate([[pad_id], np.asarray(prompt, np.int32)]).astype(np.int32)
    state = init_state(cfg, 1)
    full = (sequence.size - 1) // length  # complete segments; 1..L tokens remain
    for k in range(full):
      state = forget(self.read_segment(
          params, state, sequence[None, k * length:(k + 1) * length], np.array([k == 0])))
    rest = sequence[full * length:]
    padded = np.full((1, length), pad_id, np.int32)
    padded[0, :rest.size] = rest
    segments = decoding.init_segment_cache(cfg, 1)
    logits, segments = self.prefill(params, state, segments, padded, jnp.int32(rest.size))
    position = rest.size
    key = jax.random.PRNGKey(seed)
    token = self.sample(logits, jax.random.fold_in(key, 0), temperature=temperature,
                        top_k=top_k)
    generated = []
    stop = set(int(i) for i in stop_ids)
    for i in range(max_new_tokens):
      if position == length:
        state, segments = self.complete(state, segments)
        state, position = forget(state), 0
      generated.append(token)
      if on_token is not None:
        on_token(i, token)
      if stop and int(token[0]) in stop:
        break
      if i + 1 == max_new_tokens:
        break
      token, _, segments = self.step(params, state, segments, token,
                                     jax.random.fold_in(key, i + 1),
                                     temperature=temperature, top_k=top_k)
      position += 1
    return [int(t[0]) for t in jax.device_get(generated)]
