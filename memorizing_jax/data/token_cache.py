"""Tokenised documents of one split, cached on disk as flat arrays.

A split is tokenised once per (task, split, source fingerprint, vocabulary) and
saved under `<data_dir>/tokens/<task>/<split>-<key>/`:

  tokens.bin      every document's tokens back to back ([total_tokens], dtype in meta)
  offsets.npy     [num_documents + 1] int64: document i is tokens[offsets[i]:offsets[i+1]]
  names.json      document names, in document-id order
  meta.json       task, split, fingerprints, dtype, and the `ReadReport` counts

The stream memory-maps `tokens.bin`, so building a batch is a few array slices. The
cache is written to a temporary folder and renamed into place, so a crashed or
concurrent build never leaves a half-written cache behind. Document ids are
positions in this cache; they are stable as long as the key is.

A remote data dir (`gs://...`) holds the same files: the cache is built in its
local copy (`data_dir.local_copy_path`) and uploaded, `meta.json` last; a host that
finds it remote downloads it once into its local copy, which it memory-maps.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import pathlib
import shutil
from typing import Any, Callable, Optional

from etils import epath
import numpy as np
import seqio
import tqdm

from memorizing_jax.data import data_dir as data_dir_lib
from memorizing_jax.data import vocab as vocab_lib
from memorizing_jax.data.data_dir import PathLike, resolve_data_dir
from memorizing_jax.data.documents import ReadReport

_FORMAT_VERSION = 3  # 3: binary files skipped, skip counts in the report
# The files of a cache, in the order they are uploaded: meta.json, last, marks it whole.
CACHE_FILES = ("tokens.bin", "offsets.npy", "names.json", "meta.json")


@dataclasses.dataclass(frozen=True)
class TokenCache:
  """Tokenised documents of one split (see module docstring).

  Attributes:
    tokens: [total_tokens] uint16 or int32, memory-mapped.
    offsets: [num_documents + 1] int64.
    names: document names, `names[i]` for document id i.
    meta: task, split, key (where the cache is, from file stats), content_hash (of
      the names and tokens: equal on every host that has the same documents),
      vocabulary fingerprint, report counts.
    path: the cache folder (remote for a remote data dir; `tokens` then maps its
      local copy).
  """
  tokens: np.ndarray
  offsets: np.ndarray
  names: list[str]
  meta: dict[str, Any]
  path: os.PathLike  # pathlib.Path, or epath.Path when remote

  @property
  def num_documents(self) -> int:
    return len(self.names)

  @property
  def lengths(self) -> np.ndarray:
    """[num_documents] int64 tokens per document."""
    return np.diff(self.offsets)

  @property
  def key(self) -> str:
    return self.meta["key"]

  @property
  def content_hash(self) -> str:
    return self.meta["content_hash"]

  def document(self, document_id: int) -> np.ndarray:
    """[length] the tokens of one document (a view of the memory map)."""
    return self.tokens[self.offsets[document_id]:self.offsets[document_id + 1]]


class ContentHash:
  """The hash of a cache's documents (names and token bytes, in id order), built one
  document at a time: equal on every host with the same documents and vocabulary."""

  def __init__(self, vocabulary_fingerprint: str):
    self._digest = hashlib.sha256(vocabulary_fingerprint.encode())

  def add(self, name: str, token_bytes: bytes) -> None:
    self._digest.update(name.encode("utf-8") + b"\0" + len(token_bytes).to_bytes(8, "little"))
    self._digest.update(token_bytes)

  def value(self) -> str:
    return self._digest.hexdigest()[:16]


def prefix_content_hash(cache: TokenCache, num_documents: int) -> str:
  """The content hash the cache would have if it held only its first `num_documents`
  documents: equal to the `content_hash` of a cache built before documents were
  appended (reads those documents' tokens once)."""
  if not 0 <= num_documents <= cache.num_documents:
    raise ValueError(f"num_documents must be in [0, {cache.num_documents}], got "
                     f"{num_documents}")
  content = ContentHash(cache.meta["vocabulary"])
  for document_id in range(num_documents):
    content.add(cache.names[document_id], np.asarray(cache.document(document_id)).tobytes())
  return content.value()


def token_dtype(vocabulary: seqio.Vocabulary) -> np.dtype:
  """uint16 when every id fits, else int32."""
  return np.dtype(np.uint16 if vocabulary.vocab_size <= 2**16 else np.int32)


def cache_key(task: str, split: str, source_fingerprint: str, vocabulary_fingerprint: str,
              min_tokens: int, keep_binary_files: bool = False) -> str:
  spec = dict(task=task, split=split, source=source_fingerprint,
              vocabulary=vocabulary_fingerprint, min_tokens=min_tokens,
              keep_binary_files=keep_binary_files, format=_FORMAT_VERSION)
  return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _load(path: pathlib.Path) -> TokenCache:
  meta = json.loads((path / "meta.json").read_text())
  names = json.loads((path / "names.json").read_text())
  offsets = np.load(path / "offsets.npy")
  if meta["total_tokens"]:
    tokens = np.memmap(path / "tokens.bin", dtype=np.dtype(meta["dtype"]), mode="r")
  else:
    tokens = np.zeros((0,), np.dtype(meta["dtype"]))
  return TokenCache(tokens=tokens, offsets=offsets, names=names, meta=meta, path=path)


def load_or_build(task: str, split: str, vocabulary: seqio.Vocabulary,
                  data_dir: Optional[PathLike] = None, progress: bool = True,
                  keep_binary_files: bool = False, text_feature: str = "text") -> TokenCache:
  """The token cache of `task`/`split` in `vocabulary`, built on first use.

  `text_feature` names the text of a seqio task's examples (see `tasks.get_reader`).

  Documents with fewer tokens than the reader's `min_tokens` are skipped and counted
  (`meta["report"]["skipped_short"]`); binary and undecodable files are skipped
  unless `keep_binary_files` (see `documents.binary_kind`), and counted too.
  """
  from memorizing_jax.data import tasks  # pylint: disable=g-import-not-at-top
  reader = tasks.get_reader(task, text_feature)
  vocab_lib.check_vocabulary_for_task(vocabulary, task)
  min_tokens = int(getattr(reader, "min_tokens", 0))
  vocabulary_fp = vocab_lib.vocabulary_fingerprint(vocabulary)
  key = cache_key(task, split, reader.fingerprint(split, data_dir), vocabulary_fp, min_tokens,
                  keep_binary_files)
  path = resolve_data_dir(data_dir) / "tokens" / task / f"{split}-{key}"
  build = functools.partial(
      _build, task=task, split=split, key=key, reader=reader, vocabulary=vocabulary,
      vocabulary_fp=vocabulary_fp, min_tokens=min_tokens, data_dir=data_dir,
      progress=progress, keep_binary_files=keep_binary_files)
  if not data_dir_lib.is_remote(path):
    local = pathlib.Path(path)
    if not (local / "meta.json").is_file():
      _build_in_place(local, build)
    return _load(local)
  if not (path / "meta.json").is_file():
    _build_and_upload(path, build)
  return dataclasses.replace(_load(_downloaded(path)), path=path)


def _build_in_place(path: pathlib.Path, build: Callable[[pathlib.Path], None]) -> None:
  """Builds the local cache folder `path` in a temporary folder renamed into place."""
  tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
  shutil.rmtree(tmp, ignore_errors=True)
  tmp.mkdir(parents=True)
  try:
    build(tmp)
    os.rename(tmp, path)
  except OSError:
    if not (path / "meta.json").is_file():
      raise
    # Another process finished the same cache first; theirs is identical.
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _build_and_upload(remote: epath.Path, build: Callable[[pathlib.Path], None]) -> None:
  """Builds the remote cache folder in its local copy, then uploads it (`meta.json`
  last: a concurrent builder's files are identical)."""
  local = data_dir_lib.local_copy_path(remote)
  if not (local / "meta.json").is_file():
    _build_in_place(local, build)
  remote.mkdir(parents=True, exist_ok=True)
  for name in CACHE_FILES:
    data_dir_lib.copy_file(local / name, remote / name)


def _downloaded(remote: epath.Path) -> pathlib.Path:
  """The local copy of the remote cache folder, downloaded whole on first use."""
  local = data_dir_lib.local_copy_path(remote)
  if (local / "meta.json").is_file():
    return local

  def download(folder: pathlib.Path) -> None:
    for name in CACHE_FILES:
      data_dir_lib.copy_file(remote / name, folder / name)

  _build_in_place(local, download)
  return local


def _build(folder: pathlib.Path, *, task: str, split: str, key: str, reader,
           vocabulary: seqio.Vocabulary, vocabulary_fp: str, min_tokens: int,
           data_dir: Optional[PathLike], progress: bool, keep_binary_files: bool) -> None:
  """Tokenises the split's documents into the cache files under `folder`."""
  dtype = token_dtype(vocabulary)
  report = ReadReport()
  names, offsets, total = [], [0], 0
  content = ContentHash(vocabulary_fp)
  documents = reader.documents(split, data_dir, report, keep_binary_files=keep_binary_files)
  with open(folder / "tokens.bin", "wb") as out:
    for document in tqdm.tqdm(documents, desc=f"tokenising {task}/{split}", unit="doc",
                              disable=not progress, leave=False):
      ids = vocab_lib.encode(vocabulary, document.text)
      if len(ids) < min_tokens:
        report.skipped_short += 1
        report.documents -= 1
        continue
      data = ids.astype(dtype).tobytes()
      out.write(data)
      content.add(document.name, data)
      total += len(ids)
      names.append(document.name)
      offsets.append(total)
  np.save(folder / "offsets.npy", np.asarray(offsets, np.int64))
  (folder / "names.json").write_text(json.dumps(names))
  meta = dict(task=task, split=split, key=key, content_hash=content.value(),
              vocabulary=vocabulary_fp, vocab_size=vocabulary.vocab_size, dtype=dtype.name,
              total_tokens=total, num_documents=len(names), min_tokens=min_tokens,
              keep_binary_files=keep_binary_files, report=report.as_dict())
  (folder / "meta.json").write_text(json.dumps(meta, indent=1))
