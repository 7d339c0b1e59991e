"""Reads a token sequence segment by segment, as training does, with XL cache and memory.

A text of tokens t_0..t_{n-1} is read as the document `[pad] t_0 .. t_{n-1}` (the pad
id is the start token, see `data/streams.py`): the input at index i predicts
t_i, so every token of the text is scored. Segment k reads inputs
`[kL, kL + L)`; the last one is padded to L (the padding follows every real token,
so causality keeps it out of their logits).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterator, Sequence

import jax
import numpy as np

from memorizing_jax.inference import ablation
from memorizing_jax.model import MemorizingTransformer, ModelConfig, init_state, sown_by_layer
from memorizing_jax.model import scoring

DIAGNOSTIC_NAMES = ("gate", "memory_share", "retrieved_positions", "retrieved_weights",
                    "retrieved_valid")


@dataclasses.dataclass
class SegmentOutput:
  """What one segment's reading gives.

  Attributes:
    start: index of the segment's first input (= its first target's text index).
    count: real (unpadded) tokens in the segment.
    loss: [count] float32 negative log-likelihood of each target, nats.
    predictions: [count] int32 argmax next-token ids.
    diagnostics: per kNN layer (in layer order) {name: array} with the batch axis
      removed and the length cut to `count`: gate [heads], memory_share
      [heads, count], retrieved_positions / retrieved_weights / retrieved_valid
      [heads, count, k]. Empty unless asked for.
  """

  start: int
  count: int
  loss: np.ndarray
  predictions: np.ndarray
  diagnostics: list


def make_segment_reader(model: MemorizingTransformer, diagnostics: bool):
  """A jitted (params, state, inputs [batch, L], targets [batch, L], sos [batch]) ->
  (state, nll [batch, L], predictions [batch, L], diagnostics) step."""

  def read(params, state, inputs, targets, start_of_sequence):
    scores = scoring.score_segment(model, params, state, inputs, targets, start_of_sequence,
                                   diagnostics=diagnostics)
    return scores.state, scores.nll, scores.predictions, scores.diagnostics

  return jax.jit(read, donate_argnums=(1,))


def _layer_diagnostics(sown: Dict[str, Any], count: int) -> list:
  """Per kNN layer, DIAGNOSTIC_NAMES of row 0 cut to `count` tokens."""
  return [{name: np.asarray(values[name]) if name == "gate"
           else np.asarray(values[name])[0, :, :count] for name in DIAGNOSTIC_NAMES}
          for values in sown_by_layer(sown).values()]


@dataclasses.dataclass
class BatchSegment:
  """One segment of a batch of texts, each row its own document.

  Attributes:
    start: index of the segment's first input (= its first target's text index).
    counts: [batch] real (unpadded) tokens of each row in the segment (0 once the
      row's text has ended).
    loss: [batch, L] float32 negative log-likelihood of each target, nats.
    predictions: [batch, L] int32 argmax next-token ids.
    sown: the kNN layers' sown diagnostics (empty unless asked for).
  """

  start: int
  counts: np.ndarray
  loss: np.ndarray
  predictions: np.ndarray
  sown: Any


def read_batch(config: ModelConfig, reader, params: Any, texts: Sequence[Sequence[int]],
               pad_id: int, memory: bool = True) -> Iterator[BatchSegment]:
  """Yields each segment of the texts, read as one batch (row b: the document
  `[pad] texts[b]`); rows shorter than the longest are padded after their end.

  Args:
    reader: `make_segment_reader(model, diagnostics=...)`.
    texts: per row, its token ids (at least one each).
    memory: False reads with the memory ablated (`ablation.py`).
  """
  texts = [np.asarray(ids, np.int32) for ids in texts]
  if not texts or any(ids.ndim != 1 or ids.size == 0 for ids in texts):
    raise ValueError("nothing to read: a text has no tokens (give non-empty texts)")
  length, batch = config.segment_length, len(texts)
  sizes = np.array([ids.size for ids in texts])
  sequences = [np.concatenate([[pad_id], ids]).astype(np.int32) for ids in texts]
  state = init_state(config, batch)
  for start in range(0, int(sizes.max()), length):
    counts = np.clip(sizes - start, 0, length)
    inputs = np.full((batch, length), pad_id, np.int32)
    targets = np.full((batch, length), pad_id, np.int32)
    for row, (sequence, count) in enumerate(zip(sequences, counts)):
      inputs[row, :count] = sequence[start:start + count]
      targets[row, :count] = sequence[start + 1:start + 1 + count]
    if not memory:
      state = ablation.empty_memories(state)
    state, nll, predictions, sown = reader(params, state, inputs, targets,
                                           np.full((batch,), start == 0))
    yield BatchSegment(start=start, counts=counts, loss=np.asarray(nll),
                       predictions=np.asarray(predictions), sown=sown)


def read_tokens(config: ModelConfig, reader, params: Any, ids: Sequence[int], pad_id: int,
                with_diagnostics: bool = False, memory: bool = True
                ) -> Iterator[SegmentOutput]:
  """Yields each segment's `SegmentOutput` for the text tokens `ids` (one document).

  Args:
    reader: `make_segment_reader(model, diagnostics=with_diagnostics)`.
    ids: the text's token ids (at least one).
    memory: False reads with the memory ablated (`ablation.py`).
  """
  for segment in read_batch(config, reader, params, [ids], pad_id, memory):
    count = int(segment.counts[0])
    yield SegmentOutput(
        start=segment.start, count=count, loss=segment.loss[0, :count],
        predictions=segment.predictions[0, :count],
        diagnostics=_layer_diagnostics(segment.sown, count) if with_diagnostics else [])
