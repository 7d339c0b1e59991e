"""A trained model in a notebook: score, generate and explain texts.

    import memorizing_jax as mj
    m = mj.load("runs/quickstart")
    m.score("def f(x):\n  return x\n")           # Score: per-token loss, perplexity
    m.score(["text one", "text two"])             # [Score, Score], read as one batch
    m.generate("import os\n", max_new_tokens=64)  # Generation
    m.generate(["a", "b"], temperature=0.8, top_p=0.9)  # [Generation, Generation]
    e = m.explain(text); e.top_gains(10)          # Explanation
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Any, Callable, List, Optional, Sequence, Union

import jax
import numpy as np

from memorizing_jax.inference import explanation, generation, reading, scoring
from memorizing_jax.model import MemorizingTransformer, ModelConfig

Text = Union[str, Sequence[int], np.ndarray]
Texts = Union[Text, Sequence[Text]]
ACCEPTED_TEXT = ("a str, or token ids: a 1-D sequence or array of ints (e.g. a list of "
                 "ints, a numpy or jax int array)")


def _as_batch(texts: Any) -> Optional[list]:
  """The texts of a batch, or None when `texts` is one text.

  A batch is a list or tuple of texts (strs, or token-id sequences or arrays) or a
  2-D array of token ids [batch, length] (every row's tokens all real); a str or a
  flat sequence of ints is one text.
  """
  if hasattr(texts, "ndim") and hasattr(texts, "shape"):  # numpy or jax array
    return list(np.asarray(texts)) if texts.ndim == 2 else None
  if isinstance(texts, (list, tuple)) and texts and all(
      isinstance(t, str) or (not isinstance(t, (bytes, bytearray)) and np.ndim(t) == 1)
      for t in texts):
    return list(texts)
  return None


def _token_ids(text: Any, what: str = "text") -> Optional[np.ndarray]:
  """`text` as token ids [n] int64 when it is ids, None when it is a str.

  Raises:
    TypeError: `text` is neither a str nor integer ids (bytes, None, floats, ...),
      naming what is accepted.
    ValueError: ids of another shape than [n].
  """
  if isinstance(text, str):
    return None
  if isinstance(text, (bytes, bytearray)):
    raise TypeError(f"{what} must be {ACCEPTED_TEXT}; got bytes: decode them first, "
                    "e.g. text.decode('utf-8')")
  if text is None or not hasattr(text, "__len__") and not hasattr(text, "__array__"):
    raise TypeError(f"{what} must be {ACCEPTED_TEXT}; got {type(text).__name__}")
  try:
    ids = np.asarray(text)
  except ValueError as error:  # ragged nested lists
    raise TypeError(f"{what} must be {ACCEPTED_TEXT}; got a ragged nested sequence") from error
  if ids.size == 0:
    return np.zeros((0,), np.int64)
  if not np.issubdtype(ids.dtype, np.integer):
    kinds = sorted({type(x).__name__ for x in np.ravel(ids.astype(object))[:10]})
    raise TypeError(f"{what} must be {ACCEPTED_TEXT}; got a {type(text).__name__} of "
                    f"{'/'.join(kinds)} (dtype {ids.dtype})")
  if ids.ndim != 1:
    raise ValueError(f"{what}: token ids must have shape [n] (or be a batch: a list of "
                     f"texts or a 2-D array), got shape {ids.shape}")
  return ids.astype(np.int64)


@dataclasses.dataclass(eq=False)
class LoadedModel:
  """A checkpoint's config, parameters and vocabulary.

  Attributes:
    config: the `ModelConfig` of the run.
    params: its parameters (on this process's devices).
    vocabulary: the seqio vocabulary the run was trained with.
    step: the checkpoint's step.
    workdir: where it came from.
    data_config: the run's `DataConfig` (task, vocabulary settings).
    mesh: the mesh the parameters are laid out on (None: one device). `score`,
      `generate` and `explain` run with it set (`jax.set_mesh`), so the memory is
      split over it as in training: rows, heads and, with a `memory` axis, slots.
  """

  config: ModelConfig
  params: Any
  vocabulary: Any
  step: int
  workdir: str
  data_config: Any = None
  mesh: Any = None

  def __repr__(self) -> str:
    c = self.config
    memory = (f"kNN layers {c.knn_layer_indices} x {c.memory_slots} slots, k={c.knn_k}"
              if c.knn_layers else "no memory")
    return (f"LoadedModel({self.workdir} step {self.step}: {c.num_layers} layers, "
            f"d_model {c.d_model}, segments of {c.segment_length}"
            f"{' + XL cache' if c.use_xl_cache else ''}, {memory}, "
            f"vocabulary of {self.vocabulary.vocab_size})")

  # -- tokens ---------------------------------------------------------------------

  def encode(self, text: Text, what: str = "text") -> np.ndarray:
    """Token ids [n] int32 of a str (or the ids themselves, when given ids).

    Raises:
      TypeError: `text` is not a str or integer ids (see `_token_ids`).
      ValueError: an id outside [0, config.vocab_size).
    """
    ids = _token_ids(text, what)
    if ids is None:
      return np.asarray(self.vocabulary.encode(text), np.int32).reshape(-1)
    bad = ids[(ids < 0) | (ids >= self.config.vocab_size)]
    if bad.size:
      raise ValueError(f"{what}: token id {int(bad[0])} is outside the model's "
                       f"[0, {self.config.vocab_size}) ids")
    return ids.astype(np.int32)

  def decode(self, ids: Sequence[int]) -> str:
    return self.vocabulary.decode([int(i) for i in ids])

  def pieces(self, ids: Sequence[int]) -> List[str]:
    """Each token as text (ids beyond the vocabulary, which a model may emit, as <id>)."""
    size = self.vocabulary.vocab_size
    return [self.vocabulary.decode([int(i)]) if int(i) < size else f"<{int(i)}>"
            for i in ids]

  @property
  def pad_id(self) -> int:
    return int(self.vocabulary.pad_id)

  @property
  def eos_id(self) -> int:
    return int(self.vocabulary.eos_id)

  # -- compiled pieces, built once ------------------------------------------------

  def _on_mesh(self):
    """The context the model runs in: its mesh set, if it has one."""
    return contextlib.nullcontext() if self.mesh is None else jax.set_mesh(self.mesh)

  @functools.cached_property
  def module(self) -> MemorizingTransformer:
    return MemorizingTransformer(self.config)

  @functools.cached_property
  def _reader(self):
    return reading.make_segment_reader(self.module, diagnostics=False)

  @functools.cached_property
  def _diagnostics_reader(self):
    return reading.make_segment_reader(self.module, diagnostics=True)

  @functools.cached_property
  def decoder(self) -> generation.Decoder:
    return generation.Decoder(self.config)

  # -- the notebook API -----------------------------------------------------------

  def score(self, texts: Texts, memory: bool = True
            ) -> Union[scoring.Score, List[scoring.Score]]:
    """Per-token loss of each text read as its own document, segment by segment with
    XL cache and memory as in training; a batch of texts is read as one batch.

    Args:
      texts: a str or token ids (a 1-D list or array of ints): one text, one `Score`;
        or a batch (a list of those, or a 2-D array of ids): a list of `Score`s, the
        same as scoring each text alone (up to float rounding).
      memory: False ablates the memory: it stays empty, so every lookup finds nothing
        and each kNN layer outputs (1 - g) * its local attention, as in a document's
        first segment (`inference/ablation.py`).
    Raises:
      TypeError: a text is neither a str nor token ids (e.g. bytes or None).
      ValueError: a text has no tokens, or an id is outside the vocabulary.
    """
    batch = _as_batch(texts)
    rows = [self.encode(t) for t in (batch if batch is not None else [texts])]
    for row, ids in enumerate(rows):
      if ids.size == 0:
        which = f" (text {row} of the batch)" if batch is not None else ""
        raise ValueError(f"score: the text is empty{which} (it has no tokens); give a "
                         "non-empty text")
    with self._on_mesh():
      segments = list(reading.read_batch(self.config, self._reader, self.params, rows,
                                         self.pad_id, memory=memory))
    scores = []
    for row, ids in enumerate(rows):
      cut = [(s.loss[row, :s.counts[row]], s.predictions[row, :s.counts[row]])
             for s in segments]
      scores.append(scoring.Score(tokens=ids, pieces=self.pieces(ids),
                                  loss=np.concatenate([c[0] for c in cut]),
                                  predictions=np.concatenate([c[1] for c in cut]),
                                  memory=memory))
    return scores if batch is not None else scores[0]

  def generate(self, prompts: Texts = "", max_new_tokens: int = 64,
               temperature: float = 0.0, top_k: Optional[int] = None, top_p: float = 1.0,
               seed: int = 0, memory: bool = True, stop_at_eos: bool = True,
               on_token: Optional[Callable] = None
               ) -> Union[generation.Generation, List[generation.Generation]]:
    """Continues each prompt (the beginning of its own document).

    The prompts are read with XL cache and memory, then tokens are decoded in one
    compiled loop for the whole batch (`inference/generation.py`); every completed
    segment becomes the XL cache and is written to the memory. The sampling settings
    are traced: new values do not compile again.

    Args:
      prompts: a str or token ids (a 1-D list or array of ints; "" or [] starts a
        document from nothing): one `Generation`; or a batch (a list of those, or a
        2-D array of ids): a list of `Generation`s, row b the same as generating from
        prompt b alone with seed `seed + b`.
      max_new_tokens: at most this many tokens per prompt.
      temperature: 0 (the default) decodes greedily; a finite number above 0 samples.
      top_k: sample among the k most likely tokens: a positive int, or None (all).
      top_p: then among the fewest most likely tokens whose probabilities sum to at
        least top_p (nucleus sampling; 1, the default, keeps all).
      seed: sampling seed (row b of a batch uses seed + b).
      memory: False ablates the memory (as in `score`).
      stop_at_eos: a row stops after an end-of-document token.
      on_token: streams tokens as they come: called as on_token(step, ids), ids [batch]
        int32 of that step (-1 for rows that have stopped); see `pieces`/`decode`.
    """
    generation.check_sampling(temperature, top_k, max_new_tokens, top_p)
    batch = _as_batch(prompts)
    rows = [self.encode(p, what="prompt") for p in (batch if batch is not None
                                                   else [prompts])]
    with self._on_mesh():
      tokens, log_probs, lengths = self.decoder.generate(
          self.params, rows, self.pad_id, max_new_tokens, temperature=temperature,
          top_k=top_k, top_p=top_p, seeds=[seed + b for b in range(len(rows))],
          stop_ids=(self.eos_id,) if stop_at_eos else (), on_token=on_token, memory=memory)
    results = []
    for row, ids in enumerate(rows):
      new = tokens[row, :lengths[row]]
      text_ids = [t for t in new if t != self.eos_id and t < self.vocabulary.vocab_size]
      results.append(generation.Generation(prompt_tokens=ids, tokens=new.astype(np.int32),
                                           log_probs=log_probs[row, :lengths[row]],
                                           text=self.decode(text_ids)))
    return results if batch is not None else results[0]

  def explain(self, text: Text, memory: bool = True) -> explanation.Explanation:
    """Per-token memory analysis of `text`: the loss with and without memory, the gates,
    the share of attention output from memory, and what each head retrieved.

    Args:
      text: a string or token ids.
      memory: False ablates the memory (`score`) in both passes: every gain is then 0.
    """
    ids = self.encode(text)
    if ids.size == 0:
      raise ValueError("explain: the text is empty (it has no tokens); give a non-empty text")
    # Both passes run the same compiled function, so where the memory is empty in both
    # (the first segment) their losses agree bit for bit.
    with self._on_mesh():
      with_memory, without = (
          list(reading.read_tokens(self.config, self._diagnostics_reader, self.params, ids,
                                   self.pad_id, with_diagnostics=True, memory=on))
          for on in (memory, False))
    return explanation.assemble(ids, self.pieces(ids), with_memory, without, memory,
                                self.config.num_heads, self.config.knn_k)
