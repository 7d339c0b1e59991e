"""The vocabulary stored with a run, in `<workdir>/vocabulary/`.

A run's token ids mean what its vocabulary says, so the vocabulary belongs to the
run, not to the corpus: the trainer stores it when a run starts fresh, a resumed
run reads it back (a corpus that grew since keeps its old vocabulary, so the data
stream restores over it), and `mj.load(workdir)` reads it without the corpus or
the data cache. Layout:

  vocabulary.json                 what the run uses: {"kind", "task", "size",
                                  "pieces", "vocabulary_fingerprint", and for
                                  SentencePiece "model_file", "sha256",
                                  "source_fingerprint" (the training split it was
                                  trained on), "sample_bytes", "seed", ...}
  sentencepiece-<digest>.model    the SentencePiece model (SentencePiece only)
  sentencepiece-<digest>.json     its sidecar, as in the data cache (`vocab.py`)

The model's name carries a digest of its bytes because seqio caches loaded models
by path: a fresh run that replaces the vocabulary must not get the old model back.
`vocabulary.json` is written last, so a folder without it holds no vocabulary.
Paths go through `etils.epath`, so a gs:// workdir works; a model there is read
from a local copy (`vocab.load_sentencepiece`), since SentencePiece reads only local
files.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Optional, Tuple

from etils import epath
import seqio

from memorizing_jax.data import vocab as vocab_lib

VOCABULARY_DIR = "vocabulary"
DESCRIPTION_FILE = "vocabulary.json"
_MODEL_PREFIX = "sentencepiece-"
_FIX = ("copy the run's own `vocabulary/` folder back into the workdir, or, only if the "
        "corpus has not changed since the run started, delete the folder so that the "
        "vocabulary is built again from the data")


class StoredVocabularyError(ValueError):
  """The workdir's vocabulary is unreadable, damaged, or does not fit the run."""


def vocabulary_dir(workdir: str) -> epath.Path:
  """`<workdir>/vocabulary`."""
  return epath.Path(workdir) / VOCABULARY_DIR


def has_stored_vocabulary(workdir: str) -> bool:
  """Whether `workdir` holds a stored vocabulary (its `vocabulary.json`)."""
  return (vocabulary_dir(workdir) / DESCRIPTION_FILE).exists()


def _sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def _write_atomically(path: epath.Path, data: bytes) -> None:
  """Writes `path` whole or not at all (a temporary file, then a rename)."""
  tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
  tmp.write_bytes(data)
  tmp.replace(path)


def describe_vocabulary(vocabulary: seqio.Vocabulary, task: str) -> dict:
  """The `vocabulary.json` of `vocabulary`, used to train on `task` (without the model
  file's name and digest, which `store_vocabulary` adds)."""
  fingerprint = vocab_lib.vocabulary_fingerprint(vocabulary)  # rejects other types
  if isinstance(vocabulary, seqio.ByteVocabulary):
    return dict(kind="byte", task=task, size=vocabulary.vocab_size,
                pieces=vocabulary.vocab_size, vocabulary_fingerprint=fingerprint)
  metadata = vocab_lib.sentencepiece_metadata(vocabulary) or {}
  pieces = int(vocabulary.vocab_size)
  return dict(metadata, kind="sentencepiece", task=task,
              size=int(metadata.get("size", pieces)), pieces=pieces,
              vocabulary_fingerprint=fingerprint)


def store_vocabulary(workdir: str, vocabulary: seqio.Vocabulary, task: str) -> None:
  """Stores `vocabulary` (trained for `task`) as the run's, replacing any stored one.

  Only one process may call this (process 0): see `train/run_vocabulary.py`.
  """
  folder = vocabulary_dir(workdir)
  folder.mkdir(parents=True, exist_ok=True)
  description = describe_vocabulary(vocabulary, task)
  keep = {DESCRIPTION_FILE}
  if description["kind"] == "sentencepiece":
    model = vocabulary.sp_model
    digest = _sha256(model)
    model_file = f"{_MODEL_PREFIX}{digest[:16]}.model"
    description.update(model_file=model_file, sha256=digest)
    sidecar = vocab_lib.sentencepiece_metadata(vocabulary)
    if sidecar is not None:
      _write_atomically(folder / model_file.replace(".model", ".json"),
                        json.dumps(sidecar, indent=1).encode())
      keep.add(model_file.replace(".model", ".json"))
    _write_atomically(folder / model_file, model)
    keep.add(model_file)
  _write_atomically(folder / DESCRIPTION_FILE, json.dumps(description, indent=1).encode())
  for stale in folder.iterdir():  # the models of an earlier fresh start of this workdir
    if stale.name.startswith(_MODEL_PREFIX) and stale.name not in keep:
      stale.unlink()


def read_description(workdir: str) -> Optional[dict]:
  """The workdir's `vocabulary.json`, or None when it has no stored vocabulary.

  Raises:
    StoredVocabularyError: the file is there but unreadable or incomplete.
  """
  path = vocabulary_dir(workdir) / DESCRIPTION_FILE
  if not path.exists():
    return None
  try:
    description = json.loads(path.read_text())
    kind = description["kind"]
    if kind == "sentencepiece":
      description["model_file"], description["sha256"]  # pylint: disable=pointless-statement
    elif kind != "byte":
      raise ValueError(f"unknown kind {kind!r}")
  except (ValueError, KeyError, TypeError) as e:
    raise StoredVocabularyError(
        f"the run's vocabulary description {path} is unreadable ({type(e).__name__}: {e}); "
        f"{_FIX}") from e
  return description


def load_stored_vocabulary(workdir: str) -> Optional[Tuple[seqio.Vocabulary, dict]]:
  """(vocabulary, description) stored in `workdir`, or None when it has none.

  Raises:
    StoredVocabularyError: the description is unreadable, or the SentencePiece model
      is missing or its bytes differ from the digest recorded when it was stored.
  """
  description = read_description(workdir)
  if description is None:
    return None
  if description["kind"] == "byte":
    return vocab_lib.byte_vocabulary(), description
  path = vocabulary_dir(workdir) / description["model_file"]
  if not path.exists():
    raise StoredVocabularyError(f"the run's SentencePiece model {path} is missing; {_FIX}")
  if _sha256(path.read_bytes()) != description["sha256"]:
    raise StoredVocabularyError(
        f"the run's SentencePiece model {path} is damaged (its bytes differ from the "
        f"digest in {DESCRIPTION_FILE}); {_FIX}")
  return vocab_lib.load_sentencepiece(path), description


def check_fits_data_config(description: dict, workdir: str, task: str, kind: str,
                           size: int) -> None:
  """The stored vocabulary must be the one the run's data settings ask for.

  Raises:
    StoredVocabularyError: another task, kind, or (SentencePiece) size.
  """
  wanted = dict(task=task, kind=kind, size=size if kind == "sentencepiece" else None)
  stored = dict(task=description.get("task"), kind=description["kind"],
                size=description.get("size") if description["kind"] == "sentencepiece"
                else None)
  if stored != wanted:
    differences = ", ".join(f"{k} {stored[k]!r} (asked: {wanted[k]!r})"
                            for k in wanted if stored[k] != wanted[k])
    raise StoredVocabularyError(
        f"the vocabulary stored in {vocabulary_dir(workdir)} differs from the one "
        f"DataConfig asks for: {differences}. Resume with the run's own settings (its "
        "config.gin), or train in a new workdir")


def check_fits_model(vocabulary: seqio.Vocabulary, model_vocab_size: int, workdir: str
                     ) -> None:
  """Every id of the stored vocabulary must have a row in the model's embedding.

  Raises:
    StoredVocabularyError: the vocabulary has more ids than `model_vocab_size`.
  """
  if vocabulary.vocab_size > model_vocab_size:
    raise StoredVocabularyError(
        f"the vocabulary stored in {vocabulary_dir(workdir)} has {vocabulary.vocab_size} "
        f"ids but the run's model only {model_vocab_size} (ModelConfig.vocab_size): it is "
        f"not this run's vocabulary; {_FIX}")


def run_vocabulary(workdir: str, task: str, kind: str, size: int, *,
                   data_dir: Optional[str] = None, text_feature: str = "text",
                   model_vocab_size: Optional[int] = None) -> seqio.Vocabulary:
  """The vocabulary of the run in `workdir`: the stored one, checked against the
  run's data settings (and, given `model_vocab_size`, against the model's
  embedding); for a run stored without one (older runs), the task's vocabulary from
  the data (`vocab.get_vocabulary`) as the run built it.

  Raises:
    StoredVocabularyError: the stored vocabulary is damaged or is not the one the
      settings describe.
  """
  stored = load_stored_vocabulary(workdir)
  if stored is None:
    logging.info("%s holds no stored vocabulary (a run of an older version): building "
                 "it from the data", workdir)
    return vocab_lib.get_vocabulary(task, kind=kind, size=size, data_dir=data_dir,
                                    text_feature=text_feature)
  vocabulary, description = stored
  check_fits_data_config(description, workdir, task, kind, size)
  if model_vocab_size is not None:
    check_fits_model(vocabulary, model_vocab_size, workdir)
  logging.info("using the vocabulary stored in %s", vocabulary_dir(workdir))
  return vocabulary
