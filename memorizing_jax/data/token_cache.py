"""Tokenised documents of one split, or of one shard of it, cached on disk as flat arrays.

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

Shards. A run of several processes splits the documents into S shards, and each
process tokenises only its own (`load_or_build_shards`): shard s of S holds the
documents whose position in the reader's order (among the documents it yields:
empty, binary and unreadable files are skipped before they get one) is s modulo S,
in that order, under `<split>-<key>-<s>-of-<S>/` (5 digits each), the same files
with `shard`, `num_shards` and `split_documents` (documents read in the whole
split) added to `meta.json`. Its k-th document has id `s + S * k`: unique across
shards, and the document's position in the whole split's cache (so S = 1 is the
cache above, and the ids, hence the data order of a run, are those of a run that
tokenised the whole split, unless documents below the task's `min_tokens` are
dropped; each shard drops its own after tokenising them). Every process still
reads every document of the split (which are empty or binary is known only once
they are read); only the tokenising, the costly part, is split. Shards are built
in one pass over the documents for all the shards a process asks for at once.

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
from typing import Any, Callable, Dict, Optional, Sequence

from etils import epath
import numpy as np
import seqio
import tqdm

from memorizing_jax.data import data_dir as data_dir_lib
from memorizing_jax.data import tasks
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

  @property
  def shard(self) -> int:
    """Which shard of the split this cache holds (0 for a whole split)."""
    return int(self.meta.get("shard", 0))

  @property
  def num_shards(self) -> int:
    """Into how many shards the split was cut (1: this is the whole split)."""
    return int(self.meta.get("num_shards", 1))

  @property
  def document_ids(self) -> np.ndarray:
    """[num_documents] int64 each document's id in the split: `shard + num_shards *
    position` (positions for a whole split; see the module docstring)."""
    return self.shard + self.num_shards * np.arange(self.num_documents, dtype=np.int64)

  def document(self, document_id: int) -> np.ndarray:
    """[length] the tokens of one document (a view of the memory map)."""
    return self.tokens[self.offsets[document_id]:self.offsets[document_id + 1]]


class _ContentHash:
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
  content = _ContentHash(cache.meta["vocabulary"])
  for document_id in range(num_documents):
    content.add(cache.names[document_id], np.asarray(cache.document(document_id)).tobytes())
  return content.value()


def _token_dtype(vocabulary: seqio.Vocabulary) -> np.dtype:
  """uint16 when every id fits, else int32."""
  return np.dtype(np.uint16 if vocabulary.vocab_size <= 2**16 else np.int32)


def _cache_key(task: str, split: str, source_fingerprint: str, vocabulary_fingerprint: str,
               min_tokens: int, keep_binary_files: bool = False) -> str:
  spec = dict(task=task, split=split, source=source_fingerprint,
              vocabulary=vocabulary_fingerprint, min_tokens=min_tokens,
              keep_binary_files=keep_binary_files, format=_FORMAT_VERSION)
  return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _cache_folder_name(split: str, key: str, shard: int = 0, num_shards: int = 1) -> str:
  """`<split>-<key>` for a whole split, `<split>-<key>-<shard>-of-<num_shards>` (5
  digits each) for one shard of it."""
  if num_shards == 1:
    return f"{split}-{key}"
  return f"{split}-{key}-{shard:05d}-of-{num_shards:05d}"


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
  return load_or_build_shards(task, split, vocabulary, [0], 1, data_dir, progress=progress,
                              keep_binary_files=keep_binary_files,
                              text_feature=text_feature)[0]


def load_or_build_shards(task: str, split: str, vocabulary: seqio.Vocabulary,
                         shards: Sequence[int], num_shards: int,
                         data_dir: Optional[PathLike] = None, progress: bool = True,
                         keep_binary_files: bool = False, text_feature: str = "text"
                         ) -> list[TokenCache]:
  """The token caches of `shards` of `task`/`split` cut into `num_shards` (see the
  module docstring), those missing built in one pass over the split's documents.

  Arguments as `load_or_build`; `shards` are in [0, num_shards). With `num_shards`
  1 and `shards` [0], the whole split's cache (`load_or_build`). In a shard's
  `meta["report"]`, `documents` and `skipped_short` count the shard's documents,
  the other counts the files skipped while reading the whole split.
  """
  if num_shards < 1 or not shards or any(not 0 <= s < num_shards for s in shards):
    raise ValueError(f"shards {list(shards)} must be in [0, num_shards={num_shards})")
  reader = tasks.get_reader(task, text_feature)
  vocab_lib.check_vocabulary_for_task(vocabulary, task)
  min_tokens = int(getattr(reader, "min_tokens", 0))
  vocabulary_fp = vocab_lib.vocabulary_fingerprint(vocabulary)
  key = _cache_key(task, split, reader.fingerprint(split, data_dir), vocabulary_fp, min_tokens,
                   keep_binary_files)
  folder = resolve_data_dir(data_dir) / "tokens" / task
  paths = {s: folder / _cache_folder_name(split, key, s, num_shards) for s in shards}
  build = functools.partial(
      _build, num_shards=num_shards, task=task, split=split, key=key, reader=reader,
      vocabulary=vocabulary, vocabulary_fp=vocabulary_fp, min_tokens=min_tokens,
      data_dir=data_dir, progress=progress, keep_binary_files=keep_binary_files)
  missing = {s: path for s, path in paths.items() if not (path / "meta.json").is_file()}
  if not data_dir_lib.is_remote(folder):
    if missing:
      _build_in_place({s: pathlib.Path(path) for s, path in missing.items()}, build)
    return [_load(pathlib.Path(paths[s])) for s in shards]
  if missing:
    _build_and_upload(missing, build)
  return [dataclasses.replace(_load(_downloaded(paths[s])), path=paths[s]) for s in shards]


def _build_in_place(folders: Dict[int, pathlib.Path],
                    build: Callable[[Dict[int, pathlib.Path]], None]) -> None:
  """Builds the local cache folders {shard: folder} in temporary folders, each renamed
  into place."""
  tmps = {s: path.with_name(f"{path.name}.tmp-{os.getpid()}") for s, path in folders.items()}
  for tmp in tmps.values():
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
  try:
    build(tmps)
    for shard, path in folders.items():
      try:
        os.rename(tmps[shard], path)
      except OSError:
        if not (path / "meta.json").is_file():
          raise
        # Another process finished the same cache first; theirs is identical.
  finally:
    for tmp in tmps.values():
      shutil.rmtree(tmp, ignore_errors=True)


def _build_and_upload(remotes: Dict[int, epath.Path],
                      build: Callable[[Dict[int, pathlib.Path]], None]) -> None:
  """Builds the remote cache folders {shard: folder} in their local copies, then
  uploads them (`meta.json` last: a concurrent builder's files are identical)."""
  local = {s: data_dir_lib.local_copy_path(remote) for s, remote in remotes.items()}
  unbuilt = {s: path for s, path in local.items() if not (path / "meta.json").is_file()}
  if unbuilt:
    _build_in_place(unbuilt, build)
  for shard, remote in remotes.items():
    remote.mkdir(parents=True, exist_ok=True)
    for name in CACHE_FILES:
      data_dir_lib.copy_file(local[shard] / name, remote / name)


def _downloaded(remote: epath.Path) -> pathlib.Path:
  """The local copy of the remote cache folder, downloaded whole on first use."""
  local = data_dir_lib.local_copy_path(remote)
  if (local / "meta.json").is_file():
    return local

  def download(folders: Dict[int, pathlib.Path]) -> None:
    for name in CACHE_FILES:
      data_dir_lib.copy_file(remote / name, folders[0] / name)

  _build_in_place({0: local}, download)
  return local


class _ShardWriter:
  """The files of one cache folder, written one document at a time."""

  def __init__(self, folder: pathlib.Path, vocabulary_fp: str, dtype: np.dtype):
    self.folder, self.dtype = folder, dtype
    self.tokens = open(folder / "tokens.bin", "wb")  # pylint: disable=consider-using-with
    self.names, self.offsets, self.total = [], [0], 0
    self.content = _ContentHash(vocabulary_fp)
    self.skipped_short = 0

  def add(self, name: str, ids: np.ndarray, min_tokens: int) -> None:
    """Appends a document's token ids, or counts it as short."""
    if len(ids) < min_tokens:
      self.skipped_short += 1
      return
    data = ids.astype(self.dtype).tobytes()
    self.tokens.write(data)
    self.content.add(name, data)
    self.total += len(ids)
    self.names.append(name)
    self.offsets.append(self.total)

  def finish(self, described: dict[str, Any], report: ReadReport,
             shard: Optional[dict[str, int]]) -> None:
    """Writes the offsets, names and (last) `meta.json`: `described` (task, split,
    key, vocabulary, vocab_size) and what was written; `shard` adds the shard's
    place (None for a whole split)."""
    self.tokens.close()
    np.save(self.folder / "offsets.npy", np.asarray(self.offsets, np.int64))
    (self.folder / "names.json").write_text(json.dumps(self.names))
    report = dataclasses.replace(report, documents=len(self.names),
                                 skipped_short=self.skipped_short)
    meta = dict(task=described["task"], split=described["split"], key=described["key"],
                content_hash=self.content.value(), vocabulary=described["vocabulary"],
                vocab_size=described["vocab_size"], dtype=self.dtype.name,
                total_tokens=self.total, num_documents=len(self.names),
                min_tokens=described["min_tokens"],
                keep_binary_files=described["keep_binary_files"], report=report.as_dict(),
                **(shard or {}))
    (self.folder / "meta.json").write_text(json.dumps(meta, indent=1))


def _build(folders: Dict[int, pathlib.Path], *, num_shards: int, task: str, split: str,
           key: str, reader, vocabulary: seqio.Vocabulary, vocabulary_fp: str,
           min_tokens: int, data_dir: Optional[PathLike], progress: bool,
           keep_binary_files: bool) -> None:
  """Reads the split's documents once and tokenises those of the shards of `folders`
  ({shard: folder}) into their cache files."""
  dtype = _token_dtype(vocabulary)
  report = ReadReport()
  writers = {s: _ShardWriter(folder, vocabulary_fp, dtype) for s, folder in folders.items()}
  documents = reader.documents(split, data_dir, report, keep_binary_files=keep_binary_files)
  what = f"{task}/{split}" + (f" shards {sorted(folders)} of {num_shards}"
                              if num_shards > 1 else "")
  read = 0
  try:
    for document in tqdm.tqdm(documents, desc=f"tokenising {what}", unit="doc",
                              disable=not progress, leave=False):
      writer = writers.get(read % num_shards)
      read += 1
      if writer is not None:
        writer.add(document.name, vocab_lib.encode(vocabulary, document.text), min_tokens)
  finally:
    for writer in writers.values():
      writer.tokens.close()
  described = dict(task=task, split=split, key=key, vocabulary=vocabulary_fp,
                   vocab_size=vocabulary.vocab_size, min_tokens=min_tokens,
                   keep_binary_files=keep_binary_files)
  for shard, writer in writers.items():
    writer.finish(described, report, dict(shard=shard, num_shards=num_shards,
                                          split_documents=read) if num_shards > 1 else None)
