"""Document readers: where each task's documents come from, split by split.

A reader is a small object with
  - `splits`: the split names it serves;
  - `documents(split, data_dir=None, report=None, *, keep_binary_files=False)`: an
    iterator of `Document`s in a deterministic order (the order of document ids in
    the token cache); readers of files skip binary and undecodable files unless
    `keep_binary_files` (see `documents.binary_kind`), skip unreadable ones with a
    warning, count what they skipped in `report`, and log one summary line per split;
  - `fingerprint(split, data_dir=None)`: a cheap string that changes when the
    documents may have changed (used to key caches; reads no file contents).

Readers here are pure Python (no TensorFlow). `tasks.py` wraps them as seqio sources.

Folder layout for `FolderReader`: either the folder has `train/`, `validation/` and
`test/` subfolders (each one laid out as below), or it has none and each document
goes to a split by a hash of its name (`split_of`: 90% train, 5% validation, 5% test).
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import sys
import sysconfig
from typing import Iterator, Optional, Sequence

from etils import epath

from memorizing_jax.data import documents as documents_lib
from memorizing_jax.data.data_dir import PathLike, as_path, is_remote, resolve_data_dir
from memorizing_jax.data.documents import Document, ReadReport

SPLITS = ("train", "validation", "test")
# Percent of documents in train and validation; the rest is test.
HASH_SPLIT_PERCENT = (90, 5)
# Folder modes (see FolderReader).
FOLDER_MODES = ("file", "directory", "ordered")
ORDER_FILE = "ORDER"


def split_of(name: str) -> str:
  """The split of a document by a hash of its name: stable across runs and machines."""
  bucket = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big") % 100
  if bucket < HASH_SPLIT_PERCENT[0]:
    return "train"
  if bucket < sum(HASH_SPLIT_PERCENT):
    return "validation"
  return "test"


def check_split(split: str, splits: Sequence[str]) -> None:
  if split not in splits:
    raise ValueError(f"unknown split {split!r}; expected one of {list(splits)}")


def _size_and_mtime(path: os.PathLike) -> str:
  """"<size>\0<modification time>" of a file: in nanoseconds when local, in the
  seconds a remote store reports otherwise."""
  if is_remote(path):
    stat = epath.Path(os.fspath(path)).stat()
    return f"{stat.length}\0{stat.mtime}"
  stat = os.stat(path)
  return f"{stat.st_size}\0{stat.st_mtime_ns}"


def stat_fingerprint(root: os.PathLike, relative_paths: Sequence[str], *extra: str) -> str:
  """A hash of the paths, sizes and modification times of files (no contents read).

  A file that cannot be stat'ed (a dangling symlink, a symlink loop) enters the hash
  by its path and error number: the reader skips it, and the hash changes once it
  can be read. `root` may be local or remote.
  """
  digest = hashlib.sha256()
  for part in extra:
    digest.update(part.encode("utf-8") + b"\0")
  for rel in relative_paths:
    try:
      described = _size_and_mtime(root / rel)
    except OSError as error:
      described = f"unreadable {error.errno}"
    digest.update(f"{rel}\0{described}\0".encode("utf-8"))
  return digest.hexdigest()[:16]


def _list_names(folder: os.PathLike) -> list[str]:
  """The names of the entries of a local or remote folder."""
  if is_remote(folder):
    return [entry.name for entry in epath.Path(os.fspath(folder)).iterdir()]
  return os.listdir(folder)


def _top_level_entries(root: os.PathLike) -> list[str]:
  return sorted(e for e in _list_names(root) if not documents_lib.is_skipped_name(e))


class FolderReader:
  """Documents from a folder, local or remote (`gs://bucket/corpus`).

  Modes:
    "file": each file is a document, named by its path relative to the split folder.
    "directory": each top-level directory is a document: its files in directory-walk
      order (`documents.walk_files`: subdirectories kept together), joined with
      `documents.join_files` (the paper's GitHub construction: a repository is a
      document). A file at the top level is a document of its own.
    "ordered": each top-level directory is a document: the files listed in its
      `ORDER` file (one relative path per line; blank lines and `#` comments
      ignored), joined in that order (the paper's Isabelle construction: theories
      concatenated in dependency order). Files not listed are not read; files at the
      top level are ignored.

  Binary and undecodable files are skipped unless `documents(...,
  keep_binary_files=True)`; unreadable entries (dangling symlinks, symlink loops,
  files without read permission) are skipped with a warning. See `ReadReport`.
  (Symlinks are a local notion: a remote folder has none.)

  Where the folder is: `root` when given; else the environment variable
  `MEMORIZING_JAX_<NAME>_DIR` (e.g. MEMORIZING_JAX_GITHUB_DIR); else
  `<data_dir>/corpora/<name>`. A missing folder is a FileNotFoundError naming it.
  """

  def __init__(self, name: str, mode: str, root: Optional[PathLike] = None,
               suffixes: Optional[Sequence[str]] = None):
    if mode not in FOLDER_MODES:
      raise ValueError(f"unknown folder mode {mode!r}; expected one of {FOLDER_MODES}")
    self.name = name
    self.mode = mode
    self.root = None if root is None else as_path(root)
    self.suffixes = None if suffixes is None else tuple(suffixes)
    self.splits = SPLITS

  @property
  def env_var(self) -> str:
    return f"MEMORIZING_JAX_{self.name.upper()}_DIR"

  def folder(self, data_dir: Optional[PathLike] = None) -> epath.Path:
    """The corpus folder; raises FileNotFoundError naming it when it does not exist."""
    if self.root is not None:
      root, how = self.root, "the path given when the task was registered"
    elif os.environ.get(self.env_var):
      root = as_path(os.environ[self.env_var])
      how = f"${self.env_var}"
    else:
      root = resolve_data_dir(data_dir) / "corpora" / self.name
      how = "the default under the data directory"
    if not root.is_dir():
      raise FileNotFoundError(
          f"corpus folder for task {self.name!r} not found: {root} (from {how}). "
          f"Put the documents there, or set ${self.env_var} to the folder that holds "
          f"them (mode {self.mode!r}; see memorizing_jax/data/sources.py).")
    return root

  def _split_root(self, split: str, data_dir: Optional[PathLike]) -> tuple[epath.Path, bool]:
    """(folder holding the split's documents, whether the split has its own folder)."""
    check_split(split, self.splits)
    root = self.folder(data_dir)
    if any((root / s).is_dir() for s in SPLITS):
      split_root = root / split
      if not split_root.is_dir():
        raise FileNotFoundError(
            f"corpus folder {root} has split folders but no {split!r} folder: "
            f"{split_root} is missing")
      return split_root, True
    return root, False

  def _entries(self, split: str, data_dir: Optional[PathLike]
               ) -> tuple[epath.Path, list[tuple[str, list[str]]]]:
    """(split root, [(document name, [relative file paths in reading order])])."""
    root, has_split_folders = self._split_root(split, data_dir)
    entries = []
    if self.mode == "file":
      entries = [(rel, [rel]) for rel in documents_lib.walk_files(root, self.suffixes)]
    else:
      for entry in _top_level_entries(root):
        path = root / entry
        if path.is_dir():
          if self.mode == "directory":
            files = [f"{entry}/{rel}" for rel in documents_lib.walk_files(path, self.suffixes)]
          else:
            files = [f"{entry}/{rel}" for rel in _read_order_file(path)]
          entries.append((entry, files))
        elif self.mode == "directory" and (
            self.suffixes is None or entry.endswith(self.suffixes)):
          entries.append((entry, [entry]))
    if not has_split_folders:
      entries = [(name, files) for name, files in entries if split_of(name) == split]
    return root, entries

  def documents(self, split: str, data_dir: Optional[PathLike] = None,
                report: Optional[ReadReport] = None, *,
                keep_binary_files: bool = False) -> Iterator[Document]:
    """The split's documents in name order; see the class docstring for what is skipped."""
    report = ReadReport() if report is None else report
    root, entries = self._entries(split, data_dir)
    return documents_lib.iter_nonempty(
        ((name, lambda files=files: documents_lib.read_joined(
            root, files, report, keep_binary_files))
         for name, files in entries), report, source=f"{self.name}/{split}")

  def fingerprint(self, split: str, data_dir: Optional[PathLike] = None) -> str:
    root, entries = self._entries(split, data_dir)
    files = [f for _, files in entries for f in files]
    names = json.dumps([name for name, _ in entries])
    return stat_fingerprint(root, files, str(root), self.mode, names)


def _read_order_file(directory: epath.Path) -> list[str]:
  """The relative paths listed in `directory/ORDER`, checked to exist."""
  order_path = directory / ORDER_FILE
  if not order_path.is_file():
    raise FileNotFoundError(
        f"{order_path} is missing: in 'ordered' mode each document directory lists "
        f"its files, one relative path per line, in the order they are concatenated")
  listed = []
  for line in order_path.read_text(encoding="utf-8").splitlines():
    line = line.strip()
    if not line or line.startswith("#"):
      continue
    if not (directory / line).is_file():
      raise FileNotFoundError(f"{order_path} lists {line!r}, but {directory / line} is missing")
    listed.append(line)
  return listed


class PythonStdlibReader:
  """The running Python's standard library source, one document per package or module.

  A package is a top-level directory of the standard library with an `__init__.py`;
  its document is its `.py` files in directory-walk order (subpackages kept
  together), joined with `documents.join_files`. Each top-level `.py` module is a
  document of its own. The standard library's own test suite (the `test` package)
  and installed third-party packages (`site-packages`) are left out. Documents go to
  splits by `split_of(name)`.
  """

  EXCLUDED = frozenset({"test", "site-packages", "dist-packages"})

  def __init__(self, stdlib_dir: Optional[PathLike] = None):
    self.name = "python_stdlib"
    self.stdlib_dir = pathlib.Path(stdlib_dir or sysconfig.get_paths()["stdlib"])
    self.splits = SPLITS

  def _entries(self, split: str) -> list[tuple[str, list[str]]]:
    check_split(split, self.splits)
    root = self.stdlib_dir
    if not root.is_dir():
      raise FileNotFoundError(f"Python standard library folder not found: {root}")
    entries = []
    for entry in _top_level_entries(root):
      path = root / entry
      if entry in self.EXCLUDED:
        continue
      if path.is_dir() and (path / "__init__.py").is_file():
        files = [f"{entry}/{rel}" for rel in documents_lib.walk_files(path, (".py",))]
        entries.append((entry, files))
      elif path.is_file() and entry.endswith(".py"):
        entries.append((entry, [entry]))
    return [(name, files) for name, files in entries if split_of(name) == split]

  def documents(self, split: str, data_dir: Optional[PathLike] = None,
                report: Optional[ReadReport] = None, *,
                keep_binary_files: bool = False) -> Iterator[Document]:
    del data_dir  # The standard library is where Python is.
    report = ReadReport() if report is None else report
    root = self.stdlib_dir
    return documents_lib.iter_nonempty(
        ((name, lambda files=files: documents_lib.read_joined(
            root, files, report, keep_binary_files))
         for name, files in self._entries(split)), report, source=f"{self.name}/{split}")

  def fingerprint(self, split: str, data_dir: Optional[PathLike] = None) -> str:
    del data_dir
    entries = self._entries(split)
    files = [f for _, files in entries for f in files]
    return stat_fingerprint(self.stdlib_dir, files, sys.version, str(self.stdlib_dir))
