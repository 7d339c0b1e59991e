"""Which vocabulary a training run uses, decided before its data stream is built.

  fresh run (no checkpoint in the workdir)
      process 0 builds the task's vocabulary from the data (`inputs.load_vocabulary`:
      trained once, cached in the data directory) and stores it in
      `<workdir>/vocabulary/` (`data/stored_vocab.py`), replacing one left by an
      earlier start that saved no checkpoint. The other processes wait for it (a
      collective that also tells them whether process 0 failed) and every process
      then reads the stored files: all hosts use one model, trained once, whatever
      their data directories hold.
  resumed run (a checkpoint in the workdir)
      every process reads the stored vocabulary: a corpus that grew since the run
      started (whose fingerprint, and so its freshly trained vocabulary, changed)
      resumes with the run's own vocabulary, and its stream restores over the
      grown corpus. The stored vocabulary must be the one `DataConfig` describes,
      and the one the checkpoints saved.
  resumed run whose workdir lost its `vocabulary/` (checkpoints copied alone)
      every process reads the vocabulary saved in the newest checkpoint that has
      one; `store_if_missing` stores it in the workdir again.
  resumed run stored without one (workdirs of older versions)
      every process builds it from the data as before; once the checkpoint has been
      restored with it (proof that it is the run's), `store_if_missing` keeps it.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Optional

import jax

from memorizing_jax.checkpointing import discovery
from memorizing_jax.data.config import DataConfig
from memorizing_jax.train import inputs as inputs_lib
from memorizing_jax.train import multihost

if TYPE_CHECKING:
  import seqio


def _stored_vocab():
  """`memorizing_jax.data.stored_vocab`, imported on first use (it imports seqio and
  TensorFlow, which the trainer's import path leaves out)."""
  from memorizing_jax.data import stored_vocab  # pylint: disable=g-import-not-at-top
  return stored_vocab


def _has_checkpoint(workdir: str) -> bool:
  """Whether `<workdir>/checkpoints` holds a saved step (intact or not)."""
  return bool(discovery.committed_steps(os.path.join(workdir, "checkpoints")))


def vocabulary_for_run(workdir: str, data: DataConfig,
                       model_vocab_size: Optional[int] = None) -> "seqio.Vocabulary":
  """The run's vocabulary, the same on every process (see the module docstring).

  A collective on a fresh run: every process calls it.

  Args:
    model_vocab_size: when given, the model's embedding rows
      (`ModelConfig.vocab_size`), checked to hold every id of the vocabulary.
  Raises:
    StoredVocabularyError: the stored vocabulary is damaged, is not the one `data`
      describes, or is not the one the checkpoints saved.
    ValueError: the model has fewer embedding rows than the vocabulary has ids.
  """
  if not _has_checkpoint(workdir):
    vocabulary = _build_and_store(workdir, data)
  else:
    checkpoints = os.path.join(workdir, "checkpoints")
    vocabulary = _stored_vocab().run_vocabulary(
        workdir, data.task, data.vocabulary, data.vocabulary_size, data_dir=data.data_dir,
        text_feature=data.text_feature, checkpoints=checkpoints,
        steps=discovery.committed_steps(checkpoints))
  if model_vocab_size is not None:
    # The training run's model config is what to change, so no workdir to blame.
    _stored_vocab().check_fits_model(vocabulary, model_vocab_size)
  return vocabulary


def _build_and_store(workdir: str, data: DataConfig) -> "seqio.Vocabulary":
  """Process 0 builds the vocabulary from the data and stores it; then every process
  reads the stored one."""
  stored_vocab = _stored_vocab()
  # The collective also tells the other processes that the files are written.
  multihost.on_process_zero(
      lambda: stored_vocab.store_vocabulary(workdir, inputs_lib.load_vocabulary(data),
                                            data.task),
      RuntimeError("process 0 could not build and store the run's vocabulary (its log "
                   "says why)"))
  vocabulary, _ = stored_vocab.load_stored_vocabulary(workdir)
  return vocabulary


def store_if_missing(workdir: str, vocabulary: "seqio.Vocabulary",
                     data: DataConfig) -> None:
  """Process 0 stores `vocabulary` when the workdir has none (an older run, once its
  checkpoint restored with it)."""
  stored_vocab = _stored_vocab()
  if jax.process_index() == 0 and not stored_vocab.has_stored_vocabulary(workdir):
    stored_vocab.store_vocabulary(workdir, vocabulary, data.task)
