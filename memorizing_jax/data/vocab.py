"""Vocabularies: SentencePiece trained locally on a task's training split, or bytes.

`get_vocabulary(task, kind="sentencepiece", size=...)` trains a SentencePiece model on
a sample of the task's training split the first time and caches it under
`<data_dir>/vocab/<task>/` (local or remote: see `load_sentencepiece`), keyed by
everything that shapes it (task, size, sample size, sample seed, the source's
fingerprint, the trainer options). The options keep
text exactly: identity normalisation, no whitespace folding, no dummy prefix,
newline and tab as pieces of their own, whitespace-only pieces allowed, and byte
fallback for any character outside the vocabulary, so code and LaTeX round-trip.

Ids follow the seqio/T5 convention: 0 pad, 1 EOS, 2 unknown, no BOS.
Each trained model has a JSON sidecar recording the task it was trained on;
`check_vocabulary_for_task` rejects a vocabulary trained on another task.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from typing import Iterable, Optional

from etils import epath
import numpy as np
import seqio
import sentencepiece as spm

from memorizing_jax.data import data_dir as data_dir_lib
from memorizing_jax.data import tasks
from memorizing_jax.data.data_dir import PathLike, resolve_data_dir

VOCAB_KINDS = ("sentencepiece", "byte")
DEFAULT_VOCAB_SIZE = 32000
# Default sample: max(2 MB, 250 characters per piece) of training text.
MIN_DEFAULT_SAMPLE_BYTES = 2_000_000
SAMPLE_BYTES_PER_PIECE = 250
# Ids reserved below the learned pieces: pad, EOS, unknown, 256 bytes, "\n", "\t".
_RESERVED_PIECES = 3 + 256 + 2
MIN_SENTENCEPIECE_SIZE = _RESERVED_PIECES + 64
# Lines longer than this are cut into pieces of this many characters for training.
_MAX_TRAINING_LINE = 4096
TRAINER_OPTIONS = dict(
    model_type="unigram",
    pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
    normalization_rule_name="identity",
    remove_extra_whitespaces=False,
    add_dummy_prefix=False,
    user_defined_symbols=["\n", "\t"],
    allow_whitespace_only_pieces=True,
    byte_fallback=True,
    character_coverage=0.9995,
    hard_vocab_limit=False,
    max_sentence_length=4 * _MAX_TRAINING_LINE,
    shuffle_input_sentence=False,
    # Fixed (not the host's core count) so that every host trains the same model.
    num_threads=2,
)
# Bump when the sampling changes (the options are part of the cache key themselves).
_RECIPE_VERSION = 2


def byte_vocabulary() -> seqio.ByteVocabulary:
  """UTF-8 bytes as tokens (ids 3..258), seqio's byte vocabulary."""
  return seqio.ByteVocabulary()


def _default_sample_bytes(size: int) -> int:
  """Characters of training text sampled for a vocabulary of `size` pieces."""
  return max(MIN_DEFAULT_SAMPLE_BYTES, SAMPLE_BYTES_PER_PIECE * size)


def sample_training_text(texts: Iterable[str], sample_bytes: int, seed: int = 0) -> list[str]:
  """A deterministic sample of lines from `texts`, at most `sample_bytes` characters.

  From each text in turn, a contiguous slice of at most `max(sample_bytes // 128,
  4096)` characters starting at a seeded position, until `sample_bytes` characters
  are collected: the sample spans many documents, and a huge corpus is not read to
  the end. Returns the sample's lines, long ones cut into pieces, empty ones dropped.
  """
  if sample_bytes <= 0:
    raise ValueError(f"sample_bytes must be positive, got {sample_bytes}")
  per_text = max(sample_bytes // 128, 4096)
  rng = np.random.default_rng(seed)
  lines, collected = [], 0
  for text in texts:
    start = int(rng.integers(0, max(len(text) - per_text, 0) + 1))
    chunk = text[start:start + min(per_text, sample_bytes - collected)]
    collected += len(chunk)
    for line in chunk.split("\n"):
      for i in range(0, len(line), _MAX_TRAINING_LINE):
        lines.append(line[i:i + _MAX_TRAINING_LINE])
    if collected >= sample_bytes:
      break
  return [line for line in lines if line]


def train_sentencepiece(lines: Iterable[str], size: int) -> bytes:
  """Trains a SentencePiece model with `TRAINER_OPTIONS`; returns the serialised model."""
  if size < MIN_SENTENCEPIECE_SIZE:
    raise ValueError(
        f"SentencePiece vocabulary size {size} is too small: byte fallback and the "
        f"special pieces take {_RESERVED_PIECES} ids; use size >= {MIN_SENTENCEPIECE_SIZE}")
  model = io.BytesIO()
  lines = list(lines)
  if not lines:
    raise ValueError("no text to train a SentencePiece model on (the sample is empty)")
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(lines), model_writer=model, vocab_size=size, minloglevel=2,
      **TRAINER_OPTIONS)
  return model.getvalue()


def _write_atomically(path: epath.Path, data: bytes) -> None:
  """Writes `path` (local or remote) whole or not at all: a temporary file, renamed."""
  tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
  tmp.write_bytes(data)
  tmp.replace(path)


def load_sentencepiece(model_path: PathLike) -> seqio.SentencePieceVocabulary:
  """The SentencePiece vocabulary of the model file `model_path` (local or remote).

  seqio reads models through `tf.io.gfile`, and SentencePiece only from local
  files: a remote model is read from a local copy (`data_dir.local_file`), with its
  JSON sidecar beside it, so `sentencepiece_metadata` finds it there.
  """
  sidecar = _sidecar(model_path)
  if data_dir_lib.is_remote(model_path) and sidecar.is_file():
    data_dir_lib.local_file(sidecar)
  return seqio.SentencePieceVocabulary(os.fspath(data_dir_lib.local_file(model_path)))


def sentencepiece_model_path(task: str, size: int, sample_bytes: int, seed: int,
                             source_fingerprint: str, data_dir: Optional[PathLike] = None
                             ) -> tuple[epath.Path, dict]:
  """(model path, sidecar metadata) of the cached model for these inputs."""
  meta = dict(task=task, size=size, sample_bytes=sample_bytes, seed=seed,
              source_fingerprint=source_fingerprint, recipe_version=_RECIPE_VERSION,
              options=TRAINER_OPTIONS,
              sentencepiece_version=spm.__version__)
  key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:12]
  path = resolve_data_dir(data_dir) / "vocab" / task / f"sp{size}-{key}.model"
  return path, meta


def _sidecar(model_path: PathLike) -> epath.Path:
  """The JSON beside a model file (a local path or a gs:// one)."""
  return epath.Path(model_path).with_suffix(".json")


def get_vocabulary(task: str, kind: str = "sentencepiece", size: int = DEFAULT_VOCAB_SIZE,
                   *, data_dir: Optional[PathLike] = None,
                   sample_bytes: Optional[int] = None, seed: int = 0,
                   text_feature: str = "text") -> seqio.Vocabulary:
  """The vocabulary for `task`.

  The SentencePiece model is trained the first time (seconds to a minute on a
  CPU) and read from the cache afterwards. `size` is an upper bound: a sample with
  too few distinct pieces gives a smaller vocabulary (a warning says so), so size
  the model's embedding from `vocabulary.vocab_size`. The trainer calls this on
  process 0 only, when a run starts fresh, and stores the model in the run's workdir,
  where every process (and a resumed run, and `mj.load`) reads it
  (`memorizing_jax/data/stored_vocab.py`, `memorizing_jax/train/run_vocabulary.py`).

  Args:
    task: a task registered in `memorizing_jax.data.tasks`.
    kind: "sentencepiece" (trained on the task's training split, cached) or "byte".
    size: SentencePiece vocabulary size (ignored for "byte").
    data_dir: where models are cached (see `data_dir.py`).
    sample_bytes: characters of training text sampled from the training split
      (default `SAMPLE_BYTES_PER_PIECE * size`, at least
      `MIN_DEFAULT_SAMPLE_BYTES`).
    seed: seed of the sample.
    text_feature: for a seqio task of the user's, the string feature that holds the
      text (see `tasks.get_reader`).

  Returns:
    `seqio.SentencePieceVocabulary` or `seqio.ByteVocabulary`.
  """
  if kind == "byte":
    return byte_vocabulary()
  if kind != "sentencepiece":
    raise ValueError(f"unknown vocabulary kind {kind!r}; expected one of {VOCAB_KINDS}")
  reader = tasks.get_reader(task, text_feature)
  if sample_bytes is None:
    sample_bytes = _default_sample_bytes(size)
  path, meta = sentencepiece_model_path(
      task, size, sample_bytes, seed, reader.fingerprint("train", data_dir), data_dir)
  if not path.is_file():
    texts = (doc.text for doc in reader.documents("train", data_dir))
    model = train_sentencepiece(sample_training_text(texts, sample_bytes, seed), size)
    pieces = spm.SentencePieceProcessor(model_proto=model).get_piece_size()
    if pieces < size:
      logging.warning("SentencePiece for task %r has %d pieces, fewer than the %d asked "
                      "for: the sample of %d characters has too few distinct pieces",
                      task, pieces, size, sample_bytes)
    meta = dict(meta, pieces=pieces)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(_sidecar(path), json.dumps(meta, indent=1).encode())
    _write_atomically(path, model)
  return load_sentencepiece(path)


def vocabulary_fingerprint(vocabulary: seqio.Vocabulary) -> str:
  """A short string that identifies the vocabulary's token mapping."""
  if isinstance(vocabulary, seqio.ByteVocabulary):
    return f"byte-extra{vocabulary.extra_ids}"
  if isinstance(vocabulary, seqio.SentencePieceVocabulary):
    digest = hashlib.sha256(vocabulary.sp_model).hexdigest()[:16]
    return f"sentencepiece-{digest}-extra{vocabulary.extra_ids}"
  raise TypeError(
      f"unsupported vocabulary {type(vocabulary).__name__}: use seqio.ByteVocabulary or "
      f"seqio.SentencePieceVocabulary (e.g. from memorizing_jax.data.vocab.get_vocabulary)")


def sentencepiece_metadata(vocabulary: seqio.Vocabulary) -> Optional[dict]:
  """What a locally trained SentencePiece model was trained on (its JSON sidecar: task,
  size, sample_bytes, seed, source_fingerprint, pieces, ...), else None."""
  if not isinstance(vocabulary, seqio.SentencePieceVocabulary):
    return None
  sidecar = _sidecar(vocabulary.sentencepiece_model_file)
  if not sidecar.is_file():
    return None
  return json.loads(sidecar.read_text())


def vocabulary_task(vocabulary: seqio.Vocabulary) -> Optional[str]:
  """The task a locally trained SentencePiece vocabulary was trained on, else None."""
  metadata = sentencepiece_metadata(vocabulary)
  return None if metadata is None else metadata["task"]


def check_vocabulary_for_task(vocabulary: seqio.Vocabulary, task: str) -> None:
  """Raises ValueError when `vocabulary` was trained locally on a task other than `task`.

  Byte vocabularies fit every task; SentencePiece models not trained here (no
  sidecar) are taken as the user's choice.
  """
  vocabulary_fingerprint(vocabulary)  # Rejects unsupported vocabulary types.
  trained_on = vocabulary_task(vocabulary)
  if trained_on is not None and trained_on != task:
    raise ValueError(
        f"vocabulary {vocabulary.sentencepiece_model_file} was trained on task "
        f"{trained_on!r}, not {task!r}: use get_vocabulary({task!r}, ...) to get "
        f"the task's own vocabulary")


def encode(vocabulary: seqio.Vocabulary, text: str) -> np.ndarray:
  """Token ids of `text` ([tokens] int32), equal to `vocabulary.encode(text)`.

  Bytes take a numpy fast path; SentencePiece encodes in C++ already.
  """
  if type(vocabulary) is seqio.ByteVocabulary:  # pylint: disable=unidiomatic-typecheck
    return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32) + 3
  return np.asarray(vocabulary.encode(text), dtype=np.int32)
