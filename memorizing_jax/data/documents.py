"""Plain documents read from files: decoding, directory walks, joining files.

Pure Python, no TensorFlow. The readers in `sources.py` build on these. Files and
folders may be local or remote (`gs://...`, read through `etils.epath`).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
from typing import Callable, Iterable, Iterator, Optional, Sequence

from etils import epath

from memorizing_jax.data.data_dir import is_remote

REPLACEMENT_CHARACTER = "\ufffd"
BINARY_NUL_SHARE = 0.001
"""A file is binary when more than this share of its bytes are NUL (0x00).

Text in UTF-8 or any 8-bit encoding has no NUL bytes; compiled objects (`.so`,
`.pyc`), images, archives and UTF-16 text have many (about 1 in 256 bytes of
random data, far more in executables). Binary files are skipped unless the
reader is asked to keep them (`keep_binary_files=True`).
"""
UNDECODABLE_SHARE = 0.01
"""A file is undecodable when more than this share of its bytes are not UTF-8.

Such a file is text in another encoding (Latin-1, Shift-JIS, ...) or binary data
without NULs: decoded, it would be more than 1% U+FFFD characters, which a model
learns as noise. It is skipped like a binary file (`keep_binary_files=True` keeps
both). A file with fewer undecodable bytes (a stray Latin-1 character in a UTF-8
file) is kept, its bad bytes replaced by U+FFFD and counted.
"""
# Directory entries never read: version-control and editor state, bytecode caches.
SKIPPED_NAMES = frozenset({"__pycache__", ".git", ".hg", ".svn"})


@dataclasses.dataclass(frozen=True)
class Document:
  """One document: a stable name (unique within its corpus) and its text."""
  name: str
  text: str


@dataclasses.dataclass
class ReadReport:
  """What reading a corpus found, filled in while documents are read.

  Files are skipped one by one: in "file" mode a file is a document; in the modes
  that join the files of a folder, the folder's document is the files that were
  read (and is counted as empty when none was).

  Attributes:
    documents: documents yielded (non-empty).
    skipped_empty: documents dropped because their text is empty or only whitespace.
    skipped_short: documents dropped because they have fewer tokens than the task's
      minimum (counted by the tokeniser, see `token_cache.py`).
    skipped_binary: files dropped as binary (NUL bytes over `BINARY_NUL_SHARE`).
    skipped_undecodable: files dropped as not UTF-8 (undecodable bytes over
      `UNDECODABLE_SHARE`).
    skipped_unreadable: files that could not be read: a dangling symlink, a
      symlink loop, no permission (each also logged as a warning).
    documents_with_replacements: documents that had bytes which are not UTF-8.
    replaced_characters: U+FFFD characters put in place of undecodable byte sequences
      (in the documents kept).
  """
  documents: int = 0
  skipped_empty: int = 0
  skipped_short: int = 0
  skipped_binary: int = 0
  skipped_undecodable: int = 0
  skipped_unreadable: int = 0
  documents_with_replacements: int = 0
  replaced_characters: int = 0

  def as_dict(self) -> dict[str, int]:
    return dataclasses.asdict(self)

  @property
  def has_problems(self) -> bool:
    """Whether anything was skipped for its bytes or replaced while reading."""
    return bool(self.skipped_binary or self.skipped_undecodable or self.skipped_unreadable
                or self.replaced_characters)

  def summary(self) -> str:
    """One line: documents read, files skipped and why, characters replaced."""
    return (f"{self.documents} documents; skipped {self.skipped_binary} binary, "
            f"{self.skipped_undecodable} undecodable and {self.skipped_unreadable} "
            f"unreadable files, {self.skipped_empty} empty and {self.skipped_short} short "
            f"documents; {self.replaced_characters} undecodable bytes replaced by U+FFFD "
            f"in {self.documents_with_replacements} documents")


def decode_utf8(data: bytes) -> tuple[str, int]:
  """Decodes UTF-8, replacing undecodable byte sequences with U+FFFD.

  Returns:
    (text, replaced): `replaced` counts the U+FFFD characters inserted (U+FFFD
    characters genuinely present in `data` are not counted).
  """
  try:
    return data.decode("utf-8"), 0
  except UnicodeDecodeError:
    text = data.decode("utf-8", errors="replace")
    genuine = data.decode("utf-8", errors="ignore").count(REPLACEMENT_CHARACTER)
    return text, text.count(REPLACEMENT_CHARACTER) - genuine


def binary_kind(data: bytes, replaced: int) -> Optional[str]:
  """"binary", "undecodable" or None (text) for a file's bytes.

  Args:
    data: the file's bytes.
    replaced: U+FFFD characters that decoding `data` as UTF-8 inserted
      (`decode_utf8`), about one per undecodable byte.
  """
  if data.count(b"\0") > BINARY_NUL_SHARE * len(data):
    return "binary"
  if replaced > UNDECODABLE_SHARE * len(data):
    return "undecodable"
  return None


def _read_bytes_or_warn(path: os.PathLike, report: ReadReport) -> Optional[bytes]:
  """The bytes of a file; None, with a warning and a count, when it cannot be read
  (a dangling symlink, a symlink loop, no permission, not a regular file)."""
  try:
    return (epath.Path(path) if is_remote(path) else pathlib.Path(path)).read_bytes()
  except OSError as error:
    logging.warning("skipping unreadable file %s: %s", path, error.strerror or error)
    report.skipped_unreadable += 1
    return None


def read_text(path: os.PathLike, report: ReadReport,
              keep_binary_files: bool = False) -> Optional[str]:
  """The text of a file decoded with `decode_utf8`, or None when it is skipped.

  Skipped (and counted in `report`): unreadable files, and unless
  `keep_binary_files`, binary and undecodable files (`binary_kind`). Replacements in
  the files kept are counted in `report.replaced_characters`.
  """
  data = _read_bytes_or_warn(path, report)
  if data is None:
    return None
  text, replaced = decode_utf8(data)
  kind = binary_kind(data, replaced)
  if kind is not None and not keep_binary_files:
    logging.debug("skipping %s file %s", kind, path)
    if kind == "binary":
      report.skipped_binary += 1
    else:
      report.skipped_undecodable += 1
    return None
  report.replaced_characters += replaced
  return text


def is_skipped_name(name: str) -> bool:
  """Whether a directory entry is never read (hidden, version control, bytecode)."""
  return name.startswith(".") or name in SKIPPED_NAMES


def _warn_unlisted(error: OSError) -> None:
  """Warns that a directory could not be listed (its files are not read)."""
  logging.warning("skipping unreadable directory %s: %s", error.filename,
                  error.strerror or error)


def _without_scheme(path: os.PathLike) -> str:
  """`gs://bucket/a` -> `bucket/a` (remote walks may name folders either way)."""
  return os.fspath(path).split("://", 1)[-1].rstrip("/")


def _walk(root: os.PathLike) -> Iterator[tuple[pathlib.PurePath, list[str], list[str]]]:
  """Top-down walk of `root`: (folder relative to `root`, its subfolders (prune them in
  place to skip them), its files). Local roots are walked with `os.walk`, so that
  dangling symlinks and symlink loops are listed as files; remote ones with epath."""
  if not is_remote(root):
    root = pathlib.Path(root)
    for directory, subdirs, files in os.walk(root, topdown=True, onerror=_warn_unlisted):
      yield pathlib.Path(directory).relative_to(root), subdirs, files
    return
  top = pathlib.PurePosixPath(_without_scheme(root))
  for directory, subdirs, files in epath.Path(os.fspath(root)).walk(on_error=_warn_unlisted):
    yield pathlib.PurePosixPath(_without_scheme(directory)).relative_to(top), subdirs, files


def walk_files(root: os.PathLike, suffixes: Optional[Sequence[str]] = None) -> list[str]:
  """Files under `root` in directory-walk order, as relative POSIX paths.

  Order: a directory's own files (sorted by name) come first, then each
  subdirectory (sorted by name) with everything below it, so the files of a
  subdirectory stay together. Hidden entries and `__pycache__` are skipped; a
  directory that cannot be listed is skipped with a warning. Dangling symlinks and
  symlink loops are listed as files (reading them fails and is counted).

  Args:
    root: the directory to walk.
    suffixes: keep only files whose name ends with one of these (None keeps all).
  """
  found = []
  for rel, subdirs, files in _walk(root):
    subdirs[:] = sorted(d for d in subdirs if not is_skipped_name(d))
    for name in sorted(files):
      if is_skipped_name(name):
        continue
      if suffixes is not None and not name.endswith(tuple(suffixes)):
        continue
      found.append((rel / name).as_posix())
  return found


def join_files(texts: Iterable[str]) -> str:
  """Concatenates file texts into one document, a newline between files that need one.

  A newline is inserted after a file only when it does not already end with one
  and another file follows, so the last line of one file never runs into the first
  line of the next; a single file is its document unchanged.
  """
  parts = []
  for text in texts:
    if parts and not parts[-1].endswith("\n"):
      parts.append("\n")
    if text:
      parts.append(text)
  return "".join(parts)


def read_joined(root: pathlib.Path, relative_paths: Sequence[str], report: ReadReport,
                keep_binary_files: bool = False) -> Optional[str]:
  """The files `root/relative_paths[i]`, read and joined in the given order.

  Files that `read_text` skips are left out; None when every file was skipped (the
  document is then counted by why its files were skipped, not as empty).
  """
  texts = [read_text(root / rel, report, keep_binary_files) for rel in relative_paths]
  kept = [text for text in texts if text is not None]
  if texts and not kept:
    return None
  return join_files(kept)


def _keep_document(name: str, text: Optional[str], replaced_before: int,
                   report: ReadReport) -> Optional[Document]:
  """Counts one read document in `report`; None when it is empty or skipped.

  Args:
    name: the document's name.
    text: its text; None when all its files were skipped (counted already).
    replaced_before: `report.replaced_characters` before this document was read,
      to tell whether this document had undecodable bytes.
    report: the running report.
  """
  if report.replaced_characters > replaced_before:
    report.documents_with_replacements += 1
  if text is None:
    return None
  if not text.strip():
    report.skipped_empty += 1
    return None
  report.documents += 1
  return Document(name, text)


def iter_nonempty(named_texts: Iterable[tuple[str, Callable[[], Optional[str]]]],
                  report: ReadReport, source: Optional[str] = None) -> Iterator[Document]:
  """Reads `(name, read_fn)` pairs lazily, yielding the non-empty documents.

  `read_fn` returns the document's text, or None when it was skipped. When `source`
  is given (e.g. "github/train"), one summary line of `report` is logged after the
  last document: a warning when files were skipped or bytes replaced.
  """
  for name, read_fn in named_texts:
    before = report.replaced_characters
    document = _keep_document(name, read_fn(), before, report)
    if document is not None:
      yield document
  if source is not None:
    _log_summary(source, report)


def _log_summary(source: str, report: ReadReport) -> None:
  """Logs `report.summary()` for `source`: a warning if anything was skipped or replaced."""
  log = logging.warning if report.has_problems else logging.info
  log("read %s: %s", source, report.summary())
