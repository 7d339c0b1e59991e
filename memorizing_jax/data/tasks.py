"""seqio tasks, registered on import, one per corpus.

  python_stdlib  the running Python's standard library source (embedded default)
  pg19           PG-19 books through tensorflow-datasets, prepared from a local copy
                 (see `pg19.py`)
  arxiv          LaTeX papers, a folder: one document per top-level directory (or file)
  github         code repositories, a folder: one document per top-level directory,
                 files in directory-walk order, subdirectories kept together
  isabelle       proof libraries, a folder: one document per top-level directory, its
                 files concatenated in the order of its ORDER file
  c4_4k          web documents, a folder: one document per file, only documents of at
                 least 4096 tokens (counted in the vocabulary used)

Where a folder task reads: $MEMORIZING_JAX_<TASK>_DIR (e.g. MEMORIZING_JAX_GITHUB_DIR),
else `<data_dir>/corpora/<task>` (see `sources.FolderReader`). Your own folders:
`register_folder_task("my_corpus", mode="directory", root="/path")`.

Each task's seqio source is a `DocumentDataSource` yielding {"name", "text"}; the
task tokenises "text" into "targets" with a byte vocabulary and appends EOS, so
`seqio.get_mixture_or_task("python_stdlib").get_dataset(...)` works as usual. The
training stream (`pipeline.make_stream`) reads the same reader directly and
tokenises with any vocabulary, caching the tokens.

Any other registered `seqio.Task` trains too (`get_reader` wraps it in a
`SeqioTaskReader`): each example of its source is one document, the text of its
`text_feature` (default "text"; a source of bare strings, such as
`seqio.TextLineDataSource`, gives the strings), with the task's splits. The task's
preprocessors and vocabulary are not used: the stream tokenises the raw text with
the run's own vocabulary. Register the task in a module that the gin file imports
(a line `import my_project.my_tasks` in a gin file), then name it as the task.
"""
from __future__ import annotations

import functools
import os
import pathlib
from typing import Iterator, Optional, Sequence

import seqio
import tensorflow as tf

from memorizing_jax.data import documents as documents_lib
from memorizing_jax.data import pg19 as pg19_lib
from memorizing_jax.data import sources
from memorizing_jax.data.data_dir import PathLike

DEFAULT_TEXT_FEATURE = "text"

TEXT_FEATURES = {
    "name": tf.TensorSpec((), tf.string),
    "text": tf.TensorSpec((), tf.string),
}
FOLDER_TASKS = {
    # name: (mode, file suffixes or None for all files, minimum tokens)
    "arxiv": ("directory", (".tex", ".bbl", ".bib"), 0),
    "github": ("directory", None, 0),
    "isabelle": ("ordered", None, 0),
    "c4_4k": ("file", None, 4096),
}


class DocumentDataSource(seqio.FunctionDataSource):
  """A seqio source over a document reader (see `sources.py`): {"name", "text"} examples.

  The reader stays reachable as `.reader` so that the stream can read documents
  without going through tf.data. Documents come in the reader's deterministic order.
  """

  def __init__(self, reader):
    self.reader = reader

    def dataset_fn(split: str, shuffle_files: bool, seed: Optional[int] = None):
      del shuffle_files, seed  # One ordered stream of documents per split.

      def generate():
        for document in reader.documents(split):
          yield {"name": document.name, "text": document.text}

      return tf.data.Dataset.from_generator(generate, output_signature=TEXT_FEATURES)

    super().__init__(dataset_fn, splits=reader.splits, caching_permitted=False)


def _filter_min_tokens(dataset: tf.data.Dataset, min_tokens: int) -> tf.data.Dataset:
  return dataset.filter(lambda ex: tf.size(ex["targets"]) >= min_tokens)


def register_task(name: str, reader) -> seqio.Task:
  """Registers (or re-registers) a seqio task reading documents from `reader`.

  `reader.min_tokens`, when set, drops documents with fewer tokens.
  """
  preprocessors = [
      functools.partial(seqio.preprocessors.rekey, key_map={"name": "name", "targets": "text"}),
      seqio.preprocessors.tokenize,
  ]
  min_tokens = getattr(reader, "min_tokens", 0)
  if min_tokens:
    preprocessors.append(functools.partial(_filter_min_tokens, min_tokens=min_tokens))
  preprocessors.append(seqio.preprocessors.append_eos)
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  return seqio.TaskRegistry.add(
      name,
      source=DocumentDataSource(reader),
      preprocessors=preprocessors,
      output_features={"targets": seqio.Feature(seqio.ByteVocabulary(), add_eos=True)},
  )


def register_folder_task(name: str, mode: str, root: Optional[PathLike] = None,
                         suffixes: Optional[Sequence[str]] = None,
                         min_tokens: int = 0) -> seqio.Task:
  """Registers a task over a folder of documents, local or remote (`gs://...`; see
  `sources.FolderReader`).

  Args:
    name: the task name.
    mode: "file", "directory" or "ordered".
    root: the folder; None reads $MEMORIZING_JAX_<NAME>_DIR or
      `<data_dir>/corpora/<name>` when documents are read.
    suffixes: read only files with these name endings (None: all files).
    min_tokens: skip documents with fewer tokens than this.
  """
  reader = sources.FolderReader(name, mode, root=root, suffixes=suffixes)
  reader.min_tokens = min_tokens
  return register_task(name, reader)


class SeqioTaskReader:
  """Documents from any registered seqio task: one document per example of its source.

  A document's text is the example's `text_feature` (a string feature), or the
  example itself when the source yields bare strings (`seqio.TextLineDataSource`);
  its name is its position in the split ("0", "1", ...). Examples come from the
  task's source in order, unshuffled and before the task's preprocessors: the
  stream tokenises the text with the run's own vocabulary. Examples whose text is
  empty are skipped and counted, like empty files.
  """

  def __init__(self, task: seqio.Task, text_feature: str = DEFAULT_TEXT_FEATURE):
    self.name = task.name
    self.source = task.source
    self.text_feature = text_feature
    self.splits = tuple(task.splits)

  def documents(self, split: str, data_dir: Optional[PathLike] = None,
                report: Optional[documents_lib.ReadReport] = None, *,
                keep_binary_files: bool = False) -> Iterator[documents_lib.Document]:
    """The split's documents in the source's order (see the class docstring)."""
    del data_dir, keep_binary_files  # The source knows its data; its texts are strings.
    report = documents_lib.ReadReport() if report is None else report
    sources.check_split(split, self.splits)
    texts = self._texts(self.source.get_dataset(split=split, shuffle=False))
    return documents_lib.iter_nonempty(
        ((str(index), functools.partial(self._decode, text, report))
         for index, text in enumerate(texts)), report, source=f"{self.name}/{split}")

  def _texts(self, dataset: tf.data.Dataset) -> Iterator[bytes]:
    """The text bytes of each example; a ValueError names a missing feature."""
    spec = dataset.element_spec
    if isinstance(spec, dict):
      if self.text_feature not in spec or spec[self.text_feature].dtype != tf.string:
        strings = sorted(k for k, v in spec.items() if getattr(v, "dtype", None) == tf.string)
        raise ValueError(
            f"seqio task {self.name!r} has no string feature {self.text_feature!r}; its "
            f"string features are {strings}: name the one that holds the text "
            "(data_config.DataConfig.text_feature in gin; text_feature= of pipeline.make_stream)")
      dataset = dataset.map(lambda example: example[self.text_feature])
    elif getattr(spec, "dtype", None) != tf.string:
      raise ValueError(f"seqio task {self.name!r} yields {spec}, not text: its source must "
                       f"yield strings or dicts with a string feature {self.text_feature!r}")
    return dataset.as_numpy_iterator()

  @staticmethod
  def _decode(data: bytes, report: documents_lib.ReadReport) -> str:
    text, replaced = documents_lib.decode_utf8(data)
    report.replaced_characters += replaced
    return text

  def fingerprint(self, split: str, data_dir: Optional[PathLike] = None) -> str:
    """A hash of the task, the feature and the source's shard files (their sizes and
    times when they are local files). A source that is not files (a
    `FunctionDataSource`) is taken to give the same examples every time."""
    del data_dir
    sources.check_split(split, self.splits)
    shards = [str(shard) for shard in self.source.list_shards(split)]
    local_files = [shard for shard in shards if os.path.isfile(shard)]
    return sources.stat_fingerprint(pathlib.Path.cwd(), local_files, self.name,
                                    self.text_feature, type(self.source).__name__, *shards)


def get_reader(task: str, text_feature: str = DEFAULT_TEXT_FEATURE):
  """The document reader of `task`: a task registered here, or any registered seqio
  task (a `SeqioTaskReader` reading its `text_feature`)."""
  if task in seqio.TaskRegistry.names():
    seqio_task = seqio.get_mixture_or_task(task)
    if isinstance(seqio_task.source, DocumentDataSource):
      return seqio_task.source.reader
    return SeqioTaskReader(seqio_task, text_feature)
  ours = sorted(n for n in seqio.TaskRegistry.names() if _is_ours(n))
  others = sorted(n for n in seqio.TaskRegistry.names() if not _is_ours(n))
  raise ValueError(
      f"unknown task {task!r}; tasks with documents: {ours}; other registered seqio tasks: "
      f"{others or 'none'}. Register your own with seqio.TaskRegistry.add(...) in a module "
      "that is imported first (e.g. an `import` line in a gin file), or with "
      "memorizing_jax.data.tasks.register_folder_task")


def _is_ours(task: str) -> bool:
  return isinstance(seqio.get_mixture_or_task(task).source, DocumentDataSource)


def register_default_tasks() -> None:
  """(Re-)registers the tasks of this module's docstring with their default settings."""
  register_task("python_stdlib", sources.PythonStdlibReader())
  register_task("pg19", pg19_lib.Pg19Reader())
  for name, (mode, suffixes, min_tokens) in FOLDER_TASKS.items():
    register_folder_task(name, mode, suffixes=suffixes, min_tokens=min_tokens)


register_default_tasks()
