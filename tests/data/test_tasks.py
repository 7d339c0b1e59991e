"""seqio tasks: registration, the seqio dataset, PG-19 prepared from a local copy."""
import numpy as np
import pytest
import seqio
import tensorflow as tf

from memorizing_jax.data import pg19
from memorizing_jax.data import tasks
from memorizing_jax.data import vocab
from memorizing_jax.data.documents import Document

BOOKS = {  # split: {book id: text}
    "train": {11: "  The first book.\n\nIt has two paragraphs. \u00e9\u00e8\n",
              12: "Second book, train.\n"},
    "validation": {21: "A validation book\twith a tab.\n"},
    "test": {31: "The test book.\n", 32: "Another test book.\n"},
}


def test_default_tasks_are_registered():
  for name in ["python_stdlib", "pg19", "arxiv", "github", "isabelle", "c4_4k"]:
    assert isinstance(seqio.get_mixture_or_task(name).source, tasks.DocumentDataSource)
  assert tasks.get_reader("github").mode == "directory"
  assert tasks.get_reader("isabelle").mode == "ordered"
  assert tasks.get_reader("c4_4k").min_tokens == 4096
  with pytest.raises(ValueError, match=r"unknown task 'nope'; tasks with documents: \["):
    tasks.get_reader("nope")


# Lines of a user's text files: one document per line (bytes 0x80+ test the decoding).
USER_LINES = {"train": ["def f(x):", "  return x + 1  # caf\u00e9", "print(f(2))"],
              "validation": ["a validation line"]}


def _stream_documents(stream) -> dict:
  """{document id: the loss-masked target ids} over an eval-mode stream."""
  targets = {}
  for batch in stream:
    for row, document in enumerate(batch["document_id"].tolist()):
      mask = batch["loss_mask"][row] > 0
      if document >= 0:
        targets.setdefault(document, []).extend(batch["targets"][row][mask].tolist())
  return targets


@pytest.fixture
def user_text_task(tmp_path):
  """A user's own seqio task over text files: a TextLineDataSource, no vocabulary."""
  files = {}
  for split, lines in USER_LINES.items():
    files[split] = tmp_path / f"{split}.txt"
    files[split].write_text("\n".join(lines) + "\n", encoding="utf-8")
  seqio.TaskRegistry.remove("user_text_lines")
  seqio.TaskRegistry.add(
      "user_text_lines",
      source=seqio.TextLineDataSource({s: str(f) for s, f in files.items()}),
      preprocessors=[lambda ds: ds.map(lambda line: {"text": line})], output_features={})
  yield "user_text_lines"
  seqio.TaskRegistry.remove("user_text_lines")


def test_any_registered_seqio_task_streams_its_lines_as_documents(user_text_task, tmp_path):
  from memorizing_jax.data import pipeline
  byte_vocabulary = vocab.byte_vocabulary()
  reader = tasks.get_reader(user_text_task)
  assert isinstance(reader, tasks.SeqioTaskReader) and reader.splits == ("train", "validation")
  stream = pipeline.make_stream(user_text_task, "train", 2, 8, vocabulary=byte_vocabulary,
                                mode="eval", data_dir=tmp_path / "data", progress=False)
  expected = {i: byte_vocabulary.encode(line) + [1]  # EOS ends each document
              for i, line in enumerate(USER_LINES["train"])}
  assert _stream_documents(stream) == expected
  assert stream.document_names == ["0", "1", "2"]


def test_a_seqio_task_text_feature_is_configurable(tmp_path):
  from memorizing_jax.data import pipeline
  texts = ["first document", "second one"]

  def dataset_fn(split, shuffle_files, seed=None):
    del split, shuffle_files, seed
    return tf.data.Dataset.from_tensor_slices({"content": texts, "id": [7, 8]})

  seqio.TaskRegistry.remove("user_content_task")
  seqio.TaskRegistry.add("user_content_task", output_features={},
                         source=seqio.FunctionDataSource(dataset_fn, splits=["train"]))
  byte_vocabulary = vocab.byte_vocabulary()
  with pytest.raises(ValueError, match=r"no string feature 'text'; its string features are "
                                       r"\['content'\]"):
    pipeline.make_stream("user_content_task", "train", 1, 8, vocabulary=byte_vocabulary,
                         data_dir=tmp_path, progress=False)
  stream = pipeline.make_stream("user_content_task", "train", 1, 8, mode="eval",
                                vocabulary=byte_vocabulary, data_dir=tmp_path,
                                progress=False, text_feature="content")
  assert _stream_documents(stream) == {0: byte_vocabulary.encode("first document") + [1],
                                       1: byte_vocabulary.encode("second one") + [1]}
  with pytest.raises(ValueError, match=r"unknown split 'test'; expected one of \['train'\]"):
    tasks.get_reader("user_content_task").fingerprint("test")
  seqio.TaskRegistry.remove("user_content_task")


def test_unknown_task_lists_project_and_seqio_tasks(user_text_task):
  with pytest.raises(ValueError, match=r"unknown task 'nope'; tasks with documents: \[.*"
                                       r"'python_stdlib'.*\]; other registered seqio tasks: "
                                       r"\[.*'user_text_lines'.*\]"):
    tasks.get_reader("nope")


def test_seqio_dataset_is_the_documents_tokenised_with_eos(tiny_task, tiny_repos):
  task = seqio.get_mixture_or_task(tiny_task)
  examples = list(task.get_dataset(sequence_length=None, split="train",
                                   shuffle=False).as_numpy_iterator())
  byte_vocabulary = vocab.byte_vocabulary()
  reader = tasks.get_reader(tiny_task)
  expected = list(reader.documents("train"))
  assert [e["name"].decode() for e in examples] == [d.name for d in expected]
  for example, document in zip(examples, expected):
    assert example["targets"].tolist() == byte_vocabulary.encode(document.text) + [1]


def test_folder_task_min_tokens_filters_in_seqio(tiny_repos):
  tasks.register_folder_task("tiny_long_only", "directory", root=tiny_repos, min_tokens=1000)
  examples = list(seqio.get_mixture_or_task("tiny_long_only").get_dataset(
      sequence_length=None, split="train", shuffle=False).as_numpy_iterator())
  assert [e["name"].decode() for e in examples] == ["epsilon"]


def test_builtin_folder_task_reports_a_missing_folder(tmp_path, monkeypatch):
  monkeypatch.delenv("MEMORIZING_JAX_GITHUB_DIR", raising=False)
  expected = tmp_path / "corpora" / "github"
  with pytest.raises(FileNotFoundError, match=f"{expected}.*MEMORIZING_JAX_GITHUB_DIR"):
    tasks.get_reader("github").fingerprint("train", data_dir=tmp_path)


def write_pg19_copy(root):
  lines = []
  for split, books in BOOKS.items():
    (root / split).mkdir(parents=True)
    for book_id, text in books.items():
      (root / split / f"{book_id}.txt").write_text(text)
      lines.append(f"{book_id},Title {book_id},19{book_id},http://example.org/{book_id}")
  (root / "metadata.csv").write_text("\n".join(lines) + "\n")
  return root


@pytest.fixture(scope="module")
def prepared_pg19(tmp_path_factory):
  copy = write_pg19_copy(tmp_path_factory.mktemp("pg19_copy"))
  data_dir = tmp_path_factory.mktemp("pg19_data")
  pg19.prepare_pg19(copy, data_dir)
  return data_dir


def test_pg19_is_prepared_from_a_local_copy(prepared_pg19):
  reader = tasks.get_reader("pg19")
  for split, books in BOOKS.items():
    got = {d.name: d.text for d in reader.documents(split, data_dir=prepared_pg19)}
    # TFDS strips each book.
    assert got == {str(k): v.strip() for k, v in books.items()}


def test_pg19_stream_covers_every_token(prepared_pg19):
  from memorizing_jax.data import pipeline
  byte_vocabulary = vocab.byte_vocabulary()
  stream = pipeline.make_stream("pg19", "test", 2, 8, vocabulary=byte_vocabulary, mode="eval",
                                data_dir=prepared_pg19, progress=False)
  targets = {}
  for batch in stream:
    for row, document in enumerate(batch["document_id"].tolist()):
      mask = batch["loss_mask"][row] > 0
      if document < 0:
        assert not mask.any()
        continue
      targets.setdefault(document, []).extend(batch["targets"][row][mask].tolist())
  names = [d.name for d in tasks.get_reader("pg19").documents("test", data_dir=prepared_pg19)]
  for document, ids in targets.items():
    text = BOOKS["test"][int(names[document])].strip()
    assert ids == byte_vocabulary.encode(text) + [1]
  assert sorted(targets) == [0, 1]


def test_pg19_errors_name_what_is_missing(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"PG-19 is not prepared.*--prepare_pg19_from"):
    tasks.get_reader("pg19").fingerprint("train", data_dir=tmp_path)
  (tmp_path / "copy" / "train").mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match=r"missing: .*metadata.csv.*validation"):
    pg19.prepare_pg19(tmp_path / "copy", tmp_path)
  with pytest.raises(FileNotFoundError, match="PG-19 copy not found"):
    pg19.prepare_pg19(tmp_path / "nowhere", tmp_path)


class _ListReader:
  """A reader of documents held in a dict {split: [(name, text)]}."""

  def __init__(self, documents, min_tokens=0):
    self.splits = tuple(documents)
    self._documents = documents
    self.min_tokens = min_tokens

  def documents(self, split, data_dir=None, report=None, *, keep_binary_files=False):
    del data_dir, report, keep_binary_files
    return iter([Document(name, text) for name, text in self._documents[split]])


def test_register_task_tokenises_the_readers_documents_and_replaces_the_old_task():
  first = _ListReader({"train": [("x", "old")]})
  tasks.register_task("list_reader_task", first)
  reader = _ListReader({"train": [("a", "hé\n"), ("short", "ab"), ("b", "three")],
                        "test": []}, min_tokens=4)  # "ab" and its EOS: 3 tokens
  try:
    task = tasks.register_task("list_reader_task", reader)
    assert seqio.get_mixture_or_task("list_reader_task") is task
    assert task.source.reader is reader and task.source.splits == ("train", "test")
    examples = list(task.get_dataset(sequence_length=None, split="train",
                                     shuffle=False).as_numpy_iterator())
  finally:
    seqio.TaskRegistry.remove("list_reader_task")
  # Byte ids are the UTF-8 bytes + 3, then EOS (1).
  assert [(e["name"].decode(), e["targets"].tolist()) for e in examples] == [
      ("a", [ord("h") + 3, 0xC3 + 3, 0xA9 + 3, ord("\n") + 3, 1]),
      ("b", [c + 3 for c in b"three"] + [1])]
