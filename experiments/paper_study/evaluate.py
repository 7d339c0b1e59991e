"""Scores a study run on its eval split: the evaluation command plus the synthetic task.

`evaluate_run` is `memorizing_jax.checkpoint_evaluation.evaluate_checkpoint` (perplexity from a
fresh model state, split by position in the document and by where copying would
find a target) with, on the synthetic recall task (`data/synthetic.py`), accuracy
on each kind of value token (definitions, uses whose source is inside the XL
window, uses whose source is beyond it) and, for models with memory, how often the
kNN layer's retrieval lands on the source: the share of far uses for which some
head's highest-weighted retrieved entry lies in the name's previous statement.

    result = evaluate_run(workdir, max_batches=None, position_edges=(1536, 8192))
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Sequence

import numpy as np

from memorizing_jax import checkpoint_evaluation
from memorizing_jax.data import repeats
from memorizing_jax.data import synthetic

KINDS = (synthetic.DEFINITION, synthetic.NEAR, synthetic.FAR)


@dataclasses.dataclass
class RecallCounts:
  """Running counts over value tokens of the synthetic task.

  Attributes:
    total, correct: {kind: count} for kinds DEFINITION, NEAR, FAR.
    far_retrieval_hits: far uses whose source statement held the top retrieved
      entry of some head (counted only when retrievals are given).
    far_with_retrieval: far uses counted for retrieval hits.
  """

  total: Dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(KINDS, 0))
  correct: Dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(KINDS, 0))
  far_retrieval_hits: int = 0
  far_with_retrieval: int = 0

  def accuracy(self, kind: str) -> Optional[float]:
    return self.correct[kind] / self.total[kind] if self.total[kind] else None

  def retrieval_hit_rate(self) -> Optional[float]:
    return (self.far_retrieval_hits / self.far_with_retrieval
            if self.far_with_retrieval else None)


def count_recalls(counts: RecallCounts, predictions: np.ndarray, document_id: np.ndarray,
                  token_offset: np.ndarray, recalls: Sequence[Sequence[synthetic.Recall]],
                  segment_length: int, statement_length: int, value_index: int,
                  top_positions: Optional[np.ndarray] = None) -> None:
  """Adds one batch's value tokens to `counts`.

  Args:
    predictions: [batch, length] the model's argmax next-token ids.
    document_id: [batch] the document each row reads (-1: padding row).
    token_offset: [batch] document index of each row's first target.
    recalls: per document id, its `synthetic.annotate` list (character = token).
    segment_length: L of the stream (decides near / far).
    statement_length, value_index: characters per statement, and the value's index
      in it (the extent of a source statement).
    top_positions: [batch, heads, length] memory position (input index) of each
      head's highest-weighted retrieved entry, -1 where none; None without memory.
  Predictions are compared with the document's own characters, through the byte
  vocabulary's id offset of 3 (`seqio.ByteVocabulary`).
  """
  length = predictions.shape[1]
  for row, doc in enumerate(np.asarray(document_id).tolist()):
    if doc < 0:
      continue
    start = int(token_offset[row])
    for recall in recalls[doc]:
      j = recall.position - start
      if not 0 <= j < length:
        continue
      kind = synthetic.classify(recall, segment_length)
      counts.total[kind] += 1
      counts.correct[kind] += int(predictions[row, j] == _BYTE_IDS[recall.value])
      if kind == synthetic.FAR and top_positions is not None:
        # The source statement's characters, as input indices (character + 1).
        first = recall.source + 1 - value_index
        last = first + statement_length - 1
        tops = top_positions[row, :, j]
        counts.far_with_retrieval += 1
        counts.far_retrieval_hits += int(np.any((tops >= first) & (tops <= last)))


# Byte-vocabulary ids of the value letters (seqio.ByteVocabulary: byte + 3).
_BYTE_IDS = {c: ord(c) + 3 for c in synthetic.VALUES}


class RecallTally:
  """`RecallCounts` over scored batches of the synthetic task (a tally of
  `memorizing_jax.checkpoint_evaluation.evaluate_checkpoint`)."""

  retrievals = True  # reads ScoredBatch.top_positions

  def __init__(self, reader: synthetic.SyntheticReader, split: str, segment_length: int):
    self.reader, self.segment_length = reader, segment_length
    self.recalls = [synthetic.annotate(d.text) for d in reader.documents(split)]
    self.counts = RecallCounts()

  @classmethod
  def for_run(cls, model_config, data_config) -> Optional["RecallTally"]:
    """The tally of a run on the synthetic task; None on any other task."""
    # seqio and TensorFlow load with tasks: only a run that is scored pays for them.
    from memorizing_jax.data import tasks  # pylint: disable=g-import-not-at-top
    reader = tasks.get_reader(data_config.task)
    if not isinstance(reader, synthetic.SyntheticReader):
      return None
    return cls(reader, data_config.eval_split, model_config.segment_length)

  def add(self, scored) -> None:
    batch = scored.batch
    count_recalls(self.counts, scored.predictions, batch["document_id"], batch["token_offset"],
                  self.recalls, self.segment_length, self.reader.config.statement_length,
                  self.reader.config.value_index, scored.top_positions)

  def result(self) -> Dict[str, Any]:
    """"accuracy_<kind>" and "count_<kind>" per kind, "chance", and
    "far_retrieval_hit_rate" (None for a model without memory)."""
    out: Dict[str, Any] = {}
    for kind in KINDS:
      out[f"accuracy_{kind}"] = self.counts.accuracy(kind)
      out[f"count_{kind}"] = self.counts.total[kind]
    out["chance"] = synthetic.CHANCE
    out["far_retrieval_hit_rate"] = self.counts.retrieval_hit_rate()
    return out


def evaluate_run(workdir: str, max_batches: Optional[int] = None,
                 position_edges: Sequence[int] = (), step: Optional[int] = None,
                 copy_edges: Sequence[int] = (), copy_context: int = repeats.COPY_CONTEXT
                 ) -> Dict[str, Any]:
  """Scores the checkpoint of `workdir` at `step` (default: the newest intact one) on
  the run's eval split, with the run's own config (stored with the checkpoint).

  Args:
    position_edges: increasing positions in the document (tokens before a target);
      when given, the result also splits perplexity by them ("by_position").
    copy_edges: increasing distances; when given, the result also splits perplexity
      by how far back copying after the most recent occurrence of the target's
      `copy_context` preceding tokens would find it ("by_copy_source", "copy_context").
  Returns:
    `evaluate_checkpoint`'s metrics ("step", "perplexity", "loss", "bits_per_token",
    "accuracy", "tokens", the splits) without its "evaluation" record; on the
    synthetic task also `RecallTally.result`'s.
  Raises:
    NoCheckpointError (a FileNotFoundError): no checkpoint (of that step) in workdir.
  """
  config = checkpoint_evaluation.EvaluationConfig(
      step=step, max_batches=max_batches, position_edges=tuple(position_edges),
      copy_edges=tuple(copy_edges), copy_context=copy_context)
  result = checkpoint_evaluation.evaluate_checkpoint(workdir, config,
                                            extra_tallies=(RecallTally.for_run,))
  del result["evaluation"]
  return result
