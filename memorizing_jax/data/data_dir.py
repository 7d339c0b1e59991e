"""Where the data package keeps what it builds: vocabularies, token caches, TFDS data.

The directory is, in order of precedence: the `data_dir` argument of the function
that needs it, the environment variable `MEMORIZING_JAX_DATA_DIR`, or
`~/.cache/memorizing_jax`. Layout under it:

  vocab/<task>/...          SentencePiece models trained locally (see `vocab.py`)
  tokens/<task>/<split>-*   tokenised documents as flat arrays (see `token_cache.py`)
  tfds/                     TFDS datasets prepared from local copies (PG-19)
  corpora/<task>/           default location of the folder-based corpora

Any of these paths may be local or remote (`gs://bucket/...`, any `scheme://`):
paths are `etils.epath.Path`s, kept as given when remote. What a library can only
read from a local file (a memory-mapped token cache, a SentencePiece model) is
copied once into the local copies folder (`local_copy_path`).
"""
from __future__ import annotations

import os
import pathlib
import shutil
from typing import Optional, Union

from etils import epath

# Checkpoints and data name paths alike: one definition, in the lower layer.
from memorizing_jax.checkpointing.discovery import absolute_location, is_remote  # noqa: F401

DATA_DIR_ENV = "MEMORIZING_JAX_DATA_DIR"
DEFAULT_DATA_DIR = pathlib.Path("~/.cache/memorizing_jax")
LOCAL_COPIES_ENV = "MEMORIZING_JAX_LOCAL_COPIES_DIR"

PathLike = Union[str, os.PathLike]


def as_path(path: PathLike) -> epath.Path:
  """`path` as an `epath.Path`: a remote one as given, a local one absolute with `~`
  expanded."""
  if is_remote(path):
    return epath.Path(os.fspath(path))
  return epath.Path(pathlib.Path(path).expanduser().absolute())


def resolve_data_dir(data_dir: Optional[PathLike] = None) -> epath.Path:
  """The data directory: `data_dir`, else $MEMORIZING_JAX_DATA_DIR, else the default."""
  if data_dir is None:
    data_dir = os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
  return as_path(data_dir)


def local_copies_dir() -> pathlib.Path:
  """Where local copies of remote files live: $MEMORIZING_JAX_LOCAL_COPIES_DIR, else
  `~/.cache/memorizing_jax/local_copies`."""
  folder = os.environ.get(LOCAL_COPIES_ENV) or DEFAULT_DATA_DIR / "local_copies"
  return pathlib.Path(folder).expanduser().absolute()


def local_copy_path(remote: PathLike) -> pathlib.Path:
  """The local path that mirrors `remote` (`gs://bucket/a/b` ->
  `<local copies>/gs/bucket/a/b`): the place of its local copy."""
  scheme, rest = os.fspath(remote).split("://", 1)
  return local_copies_dir() / scheme / rest.strip("/")


def local_file(path: PathLike) -> pathlib.Path:
  """A local path holding the file `path`: `path` itself when local; else a copy in
  the local copies folder, made on first use (whole or not at all), and reused while
  its size matches. Meant for files that never change once written (their names
  carry a key or digest of their contents)."""
  if not is_remote(path):
    return pathlib.Path(path)
  source = epath.Path(os.fspath(path))
  target = local_copy_path(path)
  if target.is_file() and target.stat().st_size == source.stat().length:
    return target
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
  copy_file(source, tmp)
  os.replace(tmp, target)
  return target


def copy_file(source: PathLike, target: PathLike) -> None:
  """Copies a file between any two places (local or remote), streamed in chunks."""
  with epath.Path(source).open("rb") as reader, epath.Path(target).open("wb") as writer:
    shutil.copyfileobj(reader, writer)
