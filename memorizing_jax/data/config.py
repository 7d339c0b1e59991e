"""`DataConfig`: which task, vocabulary and batch sizes a run reads.

The trainer builds its streams from it (`train/inputs.py`), and `mj.load` reads it
back from a run's operative gin config (`inference/run_config.py`). Gin files bind
it as `data_config.DataConfig` (`from memorizing_jax.data import config as
data_config`); runs trained before it moved here name it `inputs.DataConfig`, through
the trainer's `train/inputs.py`, which imports this class, so that name still resolves.
"""
from __future__ import annotations

import dataclasses
from typing import List, Optional

import jax


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Which task, vocabulary and batch sizes.

  Attributes:
    task: a task registered in `memorizing_jax.data.tasks` (python_stdlib, pg19, ...).
    vocabulary: "sentencepiece" (trained locally on the task, cached) or "byte".
    vocabulary_size: SentencePiece size (ignored for bytes).
    batch_size: global training rows (one document each at a time).
    eval_batch_size: global evaluation rows.
    train_split, eval_split: the task's splits to train and evaluate on.
    data_dir: where tasks cache tokens and vocabularies (None: the default).
    seed: order of the training documents.
    data_shards: how many shards the documents are split into (None: one per
      process). Must be a multiple of the process count; keep it when resuming a
      run on another number of processes to continue its data exactly.
    text_feature: for a seqio task registered by the user (not one of
      `memorizing_jax.data.tasks`), the string feature of its examples that holds
      the text.
    keep_binary_files: also train on files of folder corpora that look binary or
      are not UTF-8 (skipped by default, and counted in the log; see
      `memorizing_jax.data.documents`).
  """

  task: str = "python_stdlib"
  vocabulary: str = "sentencepiece"
  vocabulary_size: int = 32000
  batch_size: int = 8
  eval_batch_size: int = 8
  train_split: str = "train"
  eval_split: str = "validation"
  data_dir: Optional[str] = None
  seed: int = 0
  data_shards: Optional[int] = None
  text_feature: str = "text"
  keep_binary_files: bool = False

  def __post_init__(self):
    if self.vocabulary not in ("sentencepiece", "byte"):
      raise ValueError(f"DataConfig.vocabulary must be 'sentencepiece' or 'byte', got "
                       f"{self.vocabulary!r}")
    for name in ("batch_size", "eval_batch_size", "vocabulary_size"):
      if getattr(self, name) < 1:
        raise ValueError(f"DataConfig.{name} must be positive, got {getattr(self, name)}")
    if self.data_shards is not None and (
        self.data_shards < 1 or self.data_shards % jax.process_count()):
      raise ValueError(f"DataConfig.data_shards={self.data_shards} must be a positive "
                       f"multiple of the {jax.process_count()} processes")
    for name in ("batch_size", "eval_batch_size"):
      if getattr(self, name) % self.num_shards:
        raise ValueError(f"DataConfig.{name}={getattr(self, name)} must divide over the "
                         f"{self.num_shards} data shards (one per process unless "
                         "data_shards is set)")

  @property
  def num_shards(self) -> int:
    return self.data_shards or jax.process_count()

  def process_shards(self) -> List[int]:
    """The shards this process reads."""
    per_process = self.num_shards // jax.process_count()
    return list(range(jax.process_index() * per_process,
                      (jax.process_index() + 1) * per_process))
