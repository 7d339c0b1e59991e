"""Sampling text: each row's prompt is read with memory, then tokens are decoded in
one compiled loop.

A row's prompt is the beginning of its own document, `[pad] prompt...`. Reading it
goes segment by segment for the whole batch (`Decoder.read_prompts`): each segment's
tokens are read into the per-layer segment caches in one call (`model/decoding.py`);
rows whose segment is complete then end it (it becomes the XL cache and is written
to the memory); rows whose prompt ended earlier are left as they are. Rows of
different prompt lengths so end up at different places in their segments.

Decoding is one `lax.while_loop` (`Decoder.decode_loop`): each step reads every
row's last token and samples its next; a row whose segment is complete ends it
first, so the memory keeps growing while generating. The sampling settings
(temperature, top-k, top-p, seeds) and the number of new tokens are traced values:
changing them does not compile the loop again. A row stops after a stop token
(e.g. EOS); the loop stops when every row has, or after `max_new_tokens`.

Row b samples with its own key stream, `fold_in(PRNGKey(seeds[b]), step)`, so a row
gives the same tokens alone as in any batch.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable, Optional, Sequence, Tuple

import jax
from jax.experimental import io_callback
import jax.numpy as jnp
import numpy as np

from memorizing_jax.inference import ablation
from memorizing_jax.model import MemorizingTransformer, ModelConfig, ModelState, init_state
from memorizing_jax.model import decoding

# The loop's output buffers hold a power of two of tokens (at least this many), so
# nearby `max_new_tokens` share one compiled loop.
MIN_BUFFER = 16


@dataclasses.dataclass
class Generation:
  """A prompt and what was generated after it.

  Attributes:
    prompt_tokens: [p] int32 ids of the prompt.
    tokens: [g] int32 generated ids (ending with EOS when generation stopped there).
    log_probs: [g] float32, the model's log-probability of each generated token given
      everything before it (the model's own distribution: before temperature, top-k
      and top-p).
    text: the generated tokens as text.
  """

  prompt_tokens: np.ndarray
  tokens: np.ndarray
  log_probs: np.ndarray
  text: str

  def __str__(self) -> str:
    return self.text


def _check_number(name: str, value: Any, low: float, high: float, meaning: str,
                  integral: bool = False) -> None:
  kind = numbers.Integral if integral else numbers.Real
  if isinstance(value, bool) or not isinstance(value, kind):
    raise TypeError(f"{name} must be {meaning}, got {value!r} of type "
                    f"{type(value).__name__}")
  if not math.isfinite(value) or not low <= value <= high:
    raise ValueError(f"{name} must be {meaning}, got {value!r}")


def check_sampling(temperature: float, top_k: Optional[int], max_new_tokens: int,
                   top_p: float = 1.0) -> None:
  """Raises TypeError or ValueError, naming the value, unless `temperature` is a finite
  number >= 0, `top_k` a positive integer or None, `top_p` a number in (0, 1] and
  `max_new_tokens` an integer >= 0."""
  _check_number("temperature", temperature, 0, math.inf,
                "a finite number >= 0 (0 decodes greedily)")
  if top_k is not None:
    _check_number("top_k", top_k, 1, math.inf, "a positive int or None (all tokens)",
                  integral=True)
  _check_number("top_p", top_p, 0, 1, "a number in (0, 1] (1 keeps every token)")
  if top_p == 0:
    raise ValueError("top_p must be a number in (0, 1] (1 keeps every token), got 0")
  _check_number("max_new_tokens", max_new_tokens, 0, math.inf, "an int >= 0",
                integral=True)


def filter_logits(logits: jax.Array, top_k: jax.Array, top_p: jax.Array) -> jax.Array:
  """Keeps each row's `top_k` most likely tokens (0: all), then of those the fewest
  whose probabilities sum to at least `top_p` (the nucleus); the rest get -inf.

  Args:
    logits: [batch, vocab] float32.
    top_k: [] int32, 0 for no limit.
    top_p: [] float32 in (0, 1].
  Returns:
    [batch, vocab] float32.
  """
  vocab = logits.shape[-1]
  ordered = -jnp.sort(-logits, axis=-1)  # most likely first
  rank = jnp.arange(vocab)
  in_top_k = rank < jnp.where(top_k > 0, jnp.minimum(top_k, vocab), vocab)
  ordered = jnp.where(in_top_k, ordered, -jnp.inf)
  probs = jax.nn.softmax(ordered, axis=-1)
  mass_before = jnp.cumsum(probs, axis=-1) - probs
  kept = in_top_k & ((mass_before < top_p) | (rank == 0))
  threshold = jnp.min(jnp.where(kept, ordered, jnp.inf), axis=-1, keepdims=True)
  return jnp.where(logits >= threshold, logits, -jnp.inf)


def sample(logits: jax.Array, keys: jax.Array, temperature: jax.Array, top_k: jax.Array,
           top_p: jax.Array) -> jax.Array:
  """Next tokens [batch] from logits [batch, vocab]: the argmax when temperature is 0,
  else row b's sample (with keys[b]) of softmax(logits / temperature) restricted by
  `filter_logits`. All settings are traced scalars."""

  def sampled():
    scaled = filter_logits(logits / temperature, top_k, top_p)
    return jax.vmap(jax.random.categorical)(keys, scaled).astype(jnp.int32)

  return jax.lax.cond(temperature > 0, sampled,
                      lambda: jnp.argmax(logits, axis=-1).astype(jnp.int32))


class Decoder:
  """The compiled pieces of generation for one model (compiled once per batch size).

  Args:
    config: the model's config.
  """

  def __init__(self, config: ModelConfig):
    self.config = config
    self.model = MemorizingTransformer(config)
    self._read_segment = jax.jit(self._read_segment_fn, donate_argnums=(1, 2),
                                 static_argnames=("memory",))
    self._loop = jax.jit(self._loop_fn, static_argnames=("buffer", "memory", "on_token"))

  # -- reading the prompts ---------------------------------------------------------

  def _read_segment_fn(self, params, state, segments, last_logits, tokens, counts,
                       continues, memory):
    """Reads segment k of every row: tokens [batch, L], of which counts [batch] are the
    row's (0 when its prompt ended before this segment: the row is left as it is).
    Rows whose prompt goes on after this segment (continues [batch] bool) end it; the
    others keep the logits of their last token in last_logits [batch, vocab]. Returns
    (state, segments, last_logits)."""
    active = counts > 0
    start = tuple(s.replace(position=jnp.zeros_like(s.position)) for s in segments)
    logits, read = decoding.decode(self.model, params, tokens, state, start)
    read = tuple(r.replace(position=counts) for r in read)
    segments = jax.tree.map(
        lambda new, old: jnp.where(active.reshape(active.shape + (1,) * (new.ndim - 1)),
                                   new, old), read, segments)
    last = jnp.take_along_axis(logits, jnp.maximum(counts - 1, 0)[:, None, None], axis=1)
    last_logits = jnp.where((active & ~continues)[:, None], last[:, 0], last_logits)
    return (*self._end_segments(state, segments, continues, memory), last_logits)

  def _end_segments(self, state, segments, rows, memory):
    state, segments = decoding.complete_segment(self.config, state, segments, rows)
    return (state if memory else ablation.empty_memories(state)), segments

  def read_prompts(self, params: Any, prompts: Sequence[np.ndarray], pad_id: int,
                   memory: bool = True) -> Tuple[ModelState, Tuple, jax.Array]:
    """Reads each row's prompt as the beginning of its own document.

    Args:
      prompts: per row, its prompt's token ids [p_b] (may be empty).
      pad_id: the start token.
      memory: False keeps the memories empty (`ablation.py`).
    Returns:
      (state, segment caches, logits [batch, vocab] of each row's next token). A
      prompt that fills its last segment exactly leaves that segment to be ended by
      the first decoding step, as one token more would.
    """
    cfg, length = self.config, self.config.segment_length
    batch = len(prompts)
    sequences = [np.concatenate([[pad_id], np.asarray(p, np.int32)]).astype(np.int32)
                 for p in prompts]
    state = init_state(cfg, batch)
    segments = decoding.init_segment_cache(cfg, batch)
    last_logits = jnp.zeros((batch, cfg.vocab_size), jnp.float32)
    for k in range(max(-(-s.size // length) for s in sequences)):
      tokens = np.full((batch, length), pad_id, np.int32)
      counts = np.zeros((batch,), np.int32)
      for row, sequence in enumerate(sequences):
        piece = sequence[k * length:(k + 1) * length]
        tokens[row, :piece.size] = piece
        counts[row] = piece.size
      continues = np.array([s.size > (k + 1) * length for s in sequences])
      state, segments, last_logits = self._read_segment(
          params, state, segments, last_logits, tokens, counts, continues, memory=memory)
    return state, segments, last_logits

  # -- the decoding loop -----------------------------------------------------------

  def _loop_fn(self, params, state, segments, logits, seeds, temperature, top_k, top_p,
               max_new_tokens, stop_ids, pad_id, buffer, memory, on_token):
    """The compiled decoding loop (see `generate`). Returns tokens [batch, buffer]
    (pad after a row's end), log_probs [batch, buffer] and lengths [batch]."""
    length = self.config.segment_length
    batch = logits.shape[0]
    streams = jax.vmap(jax.random.PRNGKey)(seeds)

    def choose(logits, step):
      keys = jax.vmap(jax.random.fold_in, (0, None))(streams, step)
      token = sample(logits, keys, temperature, top_k, top_p)
      log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), token[:, None],
                                     axis=-1)[:, 0]
      return token, log_prob

    def more(step, done):
      return (step < max_new_tokens) & ~jnp.all(done)

    def body(carry):
      step, state, segments, token, log_prob, done, tokens, log_probs, lengths = carry
      ended = segments[0].position == length
      state, segments = jax.lax.cond(
          jnp.any(ended), lambda: self._end_segments(state, segments, ended, memory),
          lambda: (state, segments))
      live = ~done
      tokens = tokens.at[:, step].set(jnp.where(live, token, pad_id))
      log_probs = log_probs.at[:, step].set(jnp.where(live, log_prob, 0.0))
      lengths = lengths + live
      if on_token is not None:
        io_callback(on_token, None, step, jnp.where(live, token, -1), ordered=True)
      done = done | (live & jnp.any(token[:, None] == stop_ids[None, :], axis=-1))

      def advance():
        logits, new_segments = decoding.decode(self.model, params, token[:, None], state,
                                               segments)
        return (*choose(logits[:, 0], step + 1), new_segments)

      token, log_prob, segments = jax.lax.cond(
          more(step + 1, done), advance, lambda: (token, log_prob, segments))
      return step + 1, state, segments, token, log_prob, done, tokens, log_probs, lengths

    token, log_prob = choose(logits, 0)
    carry = (jnp.int32(0), state, segments, token, log_prob, jnp.zeros((batch,), bool),
             jnp.full((batch, buffer), pad_id, jnp.int32),
             jnp.zeros((batch, buffer), jnp.float32), jnp.zeros((batch,), jnp.int32))
    carry = jax.lax.while_loop(lambda c: more(c[0], c[5]), body, carry)
    return carry[6], carry[7], carry[8]

  def generate(self, params: Any, prompts: Sequence[Sequence[int]], pad_id: int,
               max_new_tokens: int, temperature: float = 0.0, top_k: Optional[int] = None,
               top_p: float = 1.0, seeds: Sequence[int] = (0,),
               stop_ids: Sequence[int] = (), on_token: Optional[Callable] = None,
               memory: bool = True) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generates after each row's prompt (the beginning of its own document).

    Args:
      params: the model's parameters.
      prompts: per row, its prompt's token ids (may be empty: the start token alone).
      pad_id: the start token.
      max_new_tokens: at most this many tokens per row.
      temperature: 0 for greedy decoding, else a finite number > 0.
      top_k: sample among the k most likely tokens: a positive int, or None (all).
      top_p: then among the fewest most likely tokens whose probabilities sum to at
        least top_p (1: all).
      seeds: one sampling seed per row.
      stop_ids: a row stops after generating one of these (e.g. EOS).
      on_token: streams the tokens: called as on_token(step, ids) after every step
        with ids [batch] int32, -1 for rows that had already stopped. Compiles a
        loop of its own per callable.
      memory: False keeps the memories empty (`ablation.py`).
    Returns:
      tokens [batch, n] int32 (pad after a row's end), log_probs [batch, n] float32
      (see `Generation`), lengths [batch] int32: each row's generated tokens.
    """
    check_sampling(temperature, top_k, max_new_tokens, top_p)
    if len(seeds) != len(prompts):
      raise ValueError(f"give one seed per prompt: {len(seeds)} seeds for "
                       f"{len(prompts)} prompts")
    if max_new_tokens == 0:
      empty = np.zeros((len(prompts), 0))
      return empty.astype(np.int32), empty.astype(np.float32), np.zeros(len(prompts), np.int32)
    state, segments, logits = self.read_prompts(params, prompts, pad_id, memory)
    buffer = max(MIN_BUFFER, 1 << (int(max_new_tokens) - 1).bit_length())
    stops = np.asarray(list(stop_ids) or [-1], np.int32)
    tokens, log_probs, lengths = self._loop(
        params, state, segments, logits, np.asarray(seeds, np.int32),
        np.float32(temperature), np.int32(top_k or 0), np.float32(top_p),
        np.int32(max_new_tokens), stops, np.int32(pad_id), buffer=buffer, memory=memory,
        on_token=on_token)
    tokens, log_probs, lengths = jax.device_get((tokens, log_probs, lengths))
    width = int(lengths.max())
    return tokens[:, :width], log_probs[:, :width], lengths
