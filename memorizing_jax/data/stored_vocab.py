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

Every checkpoint carries a copy too (its JSON item `vocabulary`, `checkpoint_item`:
the description and the files, base64; a SentencePiece model is small), so that a
checkpoint folder copied without its workdir still loads. Which copy a run uses
(`run_vocabulary`): the workdir's when it has one (the trainer reads the same, and
a damaged one is reported rather than passed over), checked to be the one its
checkpoints saved; else the checkpoint's (read through a local copy of its files,
`local_copies_dir()/vocabularies/`); else, for runs of versions that stored
neither, the data's.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
from typing import Optional, Sequence, Tuple

from etils import epath
import seqio

from memorizing_jax.checkpointing import items as checkpoint_items
from memorizing_jax.data import data_dir as data_dir_lib
from memorizing_jax.data import vocab as vocab_lib

VOCABULARY_DIR = "vocabulary"
DESCRIPTION_FILE = "vocabulary.json"
_MODEL_PREFIX = "sentencepiece-"
_FIX = ("copy the run's own `vocabulary/` folder back into the workdir, or, only if the "
        "corpus has not changed since the run started, delete the folder so that the "
        "vocabulary is built again from the data")
_CHECKPOINT_FIX = ("load another step (mj.load(workdir, step=...)), or copy the run's own "
                   "`vocabulary/` folder into the workdir")


class StoredVocabularyError(ValueError):
  """The workdir's vocabulary is unreadable, damaged, or does not fit the run."""


def _vocabulary_dir(workdir: str) -> epath.Path:
  """`<workdir>/vocabulary`."""
  return epath.Path(workdir) / VOCABULARY_DIR


def has_stored_vocabulary(workdir: str) -> bool:
  """Whether `workdir` holds a stored vocabulary (its `vocabulary.json`)."""
  return (_vocabulary_dir(workdir) / DESCRIPTION_FILE).exists()


def _sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def _write_atomically(path: epath.Path, data: bytes) -> None:
  """Writes `path` whole or not at all (a temporary file, then a rename)."""
  tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
  tmp.write_bytes(data)
  tmp.replace(path)


def _describe_vocabulary(vocabulary: seqio.Vocabulary, task: str) -> dict:
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
  folder = _vocabulary_dir(workdir)
  folder.mkdir(parents=True, exist_ok=True)
  description = _describe_vocabulary(vocabulary, task)
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


def _read_description(workdir: str) -> Optional[dict]:
  """The workdir's `vocabulary.json`, or None when it has no stored vocabulary.

  Raises:
    StoredVocabularyError: the file is there but unreadable or incomplete.
  """
  path = _vocabulary_dir(workdir) / DESCRIPTION_FILE
  if not path.exists():
    return None
  try:
    return _checked_description(json.loads(path.read_text()))
  except (ValueError, KeyError, TypeError) as e:
    raise StoredVocabularyError(
        f"the run's vocabulary description {path} is unreadable ({type(e).__name__}: {e}); "
        f"{_FIX}") from e


def _checked_description(description: dict) -> dict:
  """`description` when it names a kind and, for SentencePiece, the model's file and
  digest (a file name, no folder).

  Raises:
    ValueError, KeyError, TypeError: it does not.
  """
  kind = description["kind"]
  if kind == "sentencepiece":
    if os.path.basename(description["model_file"]) != description["model_file"]:
      raise ValueError(f"model_file {description['model_file']!r} is not a file name")
    description["sha256"]  # pylint: disable=pointless-statement
  elif kind != "byte":
    raise ValueError(f"unknown kind {kind!r}")
  return description


def load_stored_vocabulary(workdir: str) -> Optional[Tuple[seqio.Vocabulary, dict]]:
  """(vocabulary, description) stored in `workdir`, or None when it has none.

  Raises:
    StoredVocabularyError: the description is unreadable, or the SentencePiece model
      is missing or its bytes differ from the digest recorded when it was stored.
  """
  description = _read_description(workdir)
  if description is None:
    return None
  if description["kind"] == "byte":
    return vocab_lib.byte_vocabulary(), description
  _model_bytes(workdir, description)
  return (vocab_lib.load_sentencepiece(_vocabulary_dir(workdir) / description["model_file"]),
          description)


def _model_bytes(workdir: str, description: dict) -> bytes:
  """The bytes of the workdir's SentencePiece model, checked against their digest.

  Raises:
    StoredVocabularyError: the model is missing or damaged.
  """
  path = _vocabulary_dir(workdir) / description["model_file"]
  if not path.exists():
    raise StoredVocabularyError(f"the run's SentencePiece model {path} is missing; {_FIX}")
  model = path.read_bytes()
  if _sha256(model) != description["sha256"]:
    raise StoredVocabularyError(
        f"the run's SentencePiece model {path} is damaged (its bytes differ from the "
        f"digest in {DESCRIPTION_FILE}); {_FIX}")
  return model


def checkpoint_item(workdir: str) -> Optional[dict]:
  """The vocabulary stored in `workdir` as a checkpoint's JSON item, or None when the
  workdir stores none: {"description": its `vocabulary.json`, "files": {file name:
  base64 bytes} of the SentencePiece model and its sidecar}.

  Raises:
    StoredVocabularyError: the stored vocabulary is damaged (it is not copied).
  """
  description = _read_description(workdir)
  if description is None:
    return None
  files = {}
  if description["kind"] == "sentencepiece":
    model_file = description["model_file"]
    files[model_file] = _model_bytes(workdir, description)
    sidecar = _vocabulary_dir(workdir) / model_file.replace(".model", ".json")
    if sidecar.exists():
      files[sidecar.name] = sidecar.read_bytes()
  return {"description": description,
          "files": {name: base64.b64encode(data).decode("ascii")
                    for name, data in files.items()}}


def load_checkpoint_item(item: dict, origin: str) -> Tuple[seqio.Vocabulary, dict]:
  """(vocabulary, description) saved in a checkpoint (`checkpoint_item`'s form).

  A SentencePiece model is checked against its digest and read from a local copy
  of its files (named by that digest) in `local_copies_dir()/vocabularies/`.

  Args:
    item: the checkpoint's `vocabulary` item.
    origin: the checkpoint (`<checkpoints>/<step>`), for messages.
  Raises:
    StoredVocabularyError: the item is unreadable, or its model is missing or damaged.
  """
  try:
    description = _checked_description(dict(item["description"]))
    files = {name: base64.b64decode(data, validate=True)
             for name, data in dict(item.get("files", {})).items()}
    if any(os.path.basename(name) != name for name in files):
      raise ValueError(f"file names {sorted(files)} are not all plain names")
  except (binascii.Error, ValueError, KeyError, TypeError) as e:
    raise StoredVocabularyError(
        f"the vocabulary saved in checkpoint {origin} is unreadable ({type(e).__name__}: "
        f"{e}); {_CHECKPOINT_FIX}") from e
  if description["kind"] == "byte":
    return vocab_lib.byte_vocabulary(), description
  model = files.get(description["model_file"])
  if model is None or _sha256(model) != description["sha256"]:
    problem = ("missing" if model is None else
               "damaged (its bytes differ from the digest saved with it)")
    raise StoredVocabularyError(f"the SentencePiece model saved in checkpoint {origin} is "
                                f"{problem}; {_CHECKPOINT_FIX}")
  folder = data_dir_lib.local_copies_dir() / "vocabularies" / description["sha256"][:16]
  folder.mkdir(parents=True, exist_ok=True)
  for name, data in files.items():
    path = folder / name
    if not path.is_file() or path.read_bytes() != data:
      _write_atomically(epath.Path(path), data)
  return vocab_lib.load_sentencepiece(folder / description["model_file"]), description


def _saved_in_checkpoints(directory: str, steps: Sequence[int]
                          ) -> Tuple[Optional[Tuple[str, dict]], list]:
  """The vocabulary item of the newest of `steps` (in the checkpoint folder
  `directory`) that saved a readable one: ((`<directory>/<step>`, item) or None,
  [what was unreadable in newer steps]). Every step of a run saves the same one."""
  unreadable = []
  for step in sorted(steps, reverse=True):
    try:
      item = checkpoint_items.read_json_item(directory, step,
                                             checkpoint_items.VOCABULARY_ITEM)
    except ValueError as e:
      unreadable.append(str(e))
      continue
    if item is not None:
      return (f"{directory}/{step}", item), unreadable
  return None, unreadable


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
        f"the vocabulary stored in {_vocabulary_dir(workdir)} differs from the one "
        f"DataConfig asks for: {differences}. Resume with the run's own settings (its "
        "config.gin), or train in a new workdir")


def check_fits_model(vocabulary: seqio.Vocabulary, model_vocab_size: int,
                     workdir: Optional[str] = None) -> None:
  """Every id of `vocabulary` must have a row in the model's embedding.

  Args:
    model_vocab_size: the model's embedding rows (`ModelConfig.vocab_size`).
    workdir: the run whose stored vocabulary this is, when the model's config is the
      run's own (a checkpoint's): then the vocabulary is the suspect. None: the model
      config is being chosen (a training run), so it is the one to change.
  Raises:
    ValueError: the vocabulary has more ids than `model_vocab_size`; a
      StoredVocabularyError when `workdir` is given.
  """
  if vocabulary.vocab_size <= model_vocab_size:
    return
  if workdir is None:
    raise ValueError(
        f"ModelConfig.vocab_size={model_vocab_size} is smaller than the vocabulary's "
        f"{vocabulary.vocab_size} ids: set ModelConfig.vocab_size >= {vocabulary.vocab_size} "
        "(a multiple of 128 shards best)")
  raise StoredVocabularyError(
      f"the vocabulary stored in {_vocabulary_dir(workdir)} has {vocabulary.vocab_size} "
      f"ids but the run's model only {model_vocab_size} (ModelConfig.vocab_size): it is "
      f"not this run's vocabulary; {_FIX}")


def run_vocabulary(workdir: str, task: str, kind: str, size: int, *,
                   data_dir: Optional[str] = None, text_feature: str = "text",
                   model_vocab_size: Optional[int] = None,
                   checkpoints: Optional[str] = None, steps: Sequence[int] = ()
                   ) -> seqio.Vocabulary:
  """The vocabulary of the run in `workdir`, checked against the run's data settings
  (and, given `model_vocab_size`, against the model's embedding):

    1. the one stored in the workdir (`vocabulary/`), which must be the one its
       checkpoints saved (when they saved one);
    2. else the one saved in the newest of `steps` of the checkpoint folder
       `checkpoints` (a checkpoint folder copied without its workdir);
    3. else, for a run of a version that stored neither, the task's vocabulary from
       the data (`vocab.get_vocabulary`) as the run built it.

  Raises:
    StoredVocabularyError: the copy used is damaged, the two copies differ, or it is
      not the one the settings describe.
  """
  stored = load_stored_vocabulary(workdir)
  saved, unreadable = (_saved_in_checkpoints(checkpoints, steps) if checkpoints
                       else (None, []))
  if stored is not None:
    if unreadable:
      logging.warning("the vocabulary saved in the checkpoints is unreadable (%s); using "
                      "the workdir's", "; ".join(unreadable))
    if saved is not None:
      _check_same_vocabulary(stored[1], workdir, saved)
    vocabulary, description = stored
    logging.info("using the vocabulary stored in %s", _vocabulary_dir(workdir))
  elif saved is not None:
    vocabulary, description = load_checkpoint_item(saved[1], saved[0])
    logging.info("%s stores no vocabulary: using the one saved in checkpoint %s",
                 _vocabulary_dir(workdir), saved[0])
  elif unreadable:
    raise StoredVocabularyError(
        f"{workdir} stores no vocabulary and the one saved in its checkpoints is "
        f"unreadable ({'; '.join(unreadable)}); {_CHECKPOINT_FIX}")
  else:
    logging.info("%s holds no stored vocabulary (a run of an older version): building "
                 "it from the data", workdir)
    return vocab_lib.get_vocabulary(task, kind=kind, size=size, data_dir=data_dir,
                                    text_feature=text_feature)
  check_fits_data_config(description, workdir, task, kind, size)
  if model_vocab_size is not None:
    check_fits_model(vocabulary, model_vocab_size, workdir)
  return vocabulary


def _check_same_vocabulary(description: dict, workdir: str, saved: Tuple[str, dict]) -> None:
  """The workdir's vocabulary must be the one its checkpoint saved.

  Raises:
    StoredVocabularyError: they differ (or the checkpoint's is unreadable).
  """
  origin, item = saved
  try:
    theirs = dict(item["description"])["vocabulary_fingerprint"]
  except (KeyError, TypeError, ValueError) as e:
    raise StoredVocabularyError(
        f"the vocabulary saved in checkpoint {origin} is unreadable ({type(e).__name__}: "
        f"{e}); {_CHECKPOINT_FIX}") from e
  if theirs != description["vocabulary_fingerprint"]:
    raise StoredVocabularyError(
        f"the vocabulary stored in {_vocabulary_dir(workdir)} "
        f"({description['vocabulary_fingerprint']}) is not the one checkpoint {origin} "
        f"saved ({theirs}): the workdir holds another run's vocabulary or checkpoints. "
        "Delete the workdir's `vocabulary/` folder to use the checkpoint's, or load the "
        "checkpoints of this workdir's run")
