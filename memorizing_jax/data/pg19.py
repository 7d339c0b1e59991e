"""PG-19 books through tensorflow-datasets, prepared from a local copy.

TFDS's `pg19` builder (version 0.1.1) reads the `gs://deepmind-gutenberg` bucket.
Offline, prepare it once from a local copy laid out like that bucket:

  <copy>/metadata.csv           rows `id,title,date,link` (no header)
  <copy>/train/<id>.txt         one book per file
  <copy>/validation/<id>.txt
  <copy>/test/<id>.txt

with
  python -m memorizing_jax.data --task pg19 --prepare_pg19_from <copy> [--data_dir D]
or `prepare_pg19(<copy>, data_dir)`. The prepared dataset lives in `<data_dir>/tfds`.
(`gsutil -m cp -r gs://deepmind-gutenberg <copy>` makes such a copy where the
network is available.) TFDS strips each book's surrounding whitespace. The copy and
the data dir may be remote (`gs://...`): TFDS reads and writes through epath.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from typing import Iterator, Optional

from etils import epath

from memorizing_jax.data import documents as documents_lib
from memorizing_jax.data import sources
from memorizing_jax.data.data_dir import PathLike, as_path, resolve_data_dir
from memorizing_jax.data.documents import Document, ReadReport

PG19_NAME = "pg19"
PG19_VERSION = "0.1.1"


def _tfds():
  # tfds must not probe cloud storage for metadata (slow warnings offline).
  os.environ.setdefault("NO_GCE_CHECK", "true")
  # Only for PG-19: tfds takes seconds to import, and must see NO_GCE_CHECK first.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds


def _tfds_data_dir(data_dir: Optional[PathLike] = None) -> epath.Path:
  """Where TFDS datasets prepared here live: `<data_dir>/tfds`."""
  return resolve_data_dir(data_dir) / "tfds"


def check_local_copy(local_copy: PathLike) -> epath.Path:
  """Raises FileNotFoundError naming what is missing from a PG-19 copy (a local folder
  or a remote one, e.g. gs://bucket/pg19); returns its path."""
  root = as_path(local_copy)
  if not root.is_dir():
    raise FileNotFoundError(f"PG-19 copy not found: {root} is not a folder")
  expected = [root / "metadata.csv"] + [root / split for split in sources.SPLITS]
  missing = [str(p) for p in expected if not p.exists()]
  if missing:
    raise FileNotFoundError(
        f"PG-19 copy {root} is not laid out like the gs://deepmind-gutenberg bucket; "
        f"missing: {missing} (expected metadata.csv and train/, validation/, test/ "
        f"folders of <id>.txt)")
  return root


@contextlib.contextmanager
def _builder_reading_from(local_copy: epath.Path):
  """Points TFDS's pg19 builder module at `local_copy` instead of the bucket."""
  tfds = _tfds()
  module = sys.modules[tfds.builder_cls(PG19_NAME).__module__]
  original = module._DATA_DIR  # pylint: disable=protected-access
  module._DATA_DIR = tfds.core.Path(str(local_copy))  # pylint: disable=protected-access
  try:
    yield
  finally:
    module._DATA_DIR = original  # pylint: disable=protected-access


def prepare_pg19(local_copy: PathLike, data_dir: Optional[PathLike] = None) -> epath.Path:
  """Builds TFDS `pg19` from a local copy of the bucket; returns the TFDS data dir."""
  root = check_local_copy(local_copy)
  tfds = _tfds()
  out = _tfds_data_dir(data_dir)
  with _builder_reading_from(root):
    builder = tfds.builder(f"{PG19_NAME}:{PG19_VERSION}", data_dir=str(out))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return out


class Pg19Reader:
  """Books of the TFDS `pg19` dataset prepared under `<data_dir>/tfds`, in TFDS order."""

  def __init__(self):
    self.name = PG19_NAME
    self.splits = sources.SPLITS

  def _info_file(self, data_dir: Optional[PathLike]) -> epath.Path:
    info = _tfds_data_dir(data_dir) / PG19_NAME / PG19_VERSION / "dataset_info.json"
    if not info.is_file():
      raise FileNotFoundError(
          f"PG-19 is not prepared: {info.parent} is missing. Prepare it from a local "
          f"copy of the bucket: python -m memorizing_jax.data --task pg19 "
          f"--prepare_pg19_from /path/to/copy --data_dir {resolve_data_dir(data_dir)}")
    return info

  def documents(self, split: str, data_dir: Optional[PathLike] = None,
                report: Optional[ReadReport] = None, *,
                keep_binary_files: bool = False) -> Iterator[Document]:
    del keep_binary_files  # Books are text; undecodable bytes are replaced and counted.
    sources.check_split(split, self.splits)
    self._info_file(data_dir)
    report = ReadReport() if report is None else report
    tfds = _tfds()
    builder = tfds.builder(f"{PG19_NAME}:{PG19_VERSION}", data_dir=str(_tfds_data_dir(data_dir)))
    dataset = builder.as_dataset(split=split, shuffle_files=False)

    def read():
      for example in tfds.as_numpy(dataset):
        text, replaced = documents_lib.decode_utf8(example["book_text"])
        report.replaced_characters += replaced
        yield str(int(example["book_id"])), (lambda text=text: text)

    return documents_lib.iter_nonempty(read(), report, source=f"{self.name}/{split}")

  def fingerprint(self, split: str, data_dir: Optional[PathLike] = None) -> str:
    sources.check_split(split, self.splits)
    info = self._info_file(data_dir)
    files = sorted(p.name for p in info.parent.iterdir() if split in p.name or p == info)
    return sources.stat_fingerprint(
        info.parent, files, str(info.parent), split)
