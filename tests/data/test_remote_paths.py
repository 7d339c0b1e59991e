"""Data paths on gs://: data dir, corpus folder, vocabularies, PG-19 copy.

`local_gcs` (tests/conftest.py) puts every gs://bucket/... path opened through
etils.epath in a local folder; what is read there must equal what is read locally.
"""
import json
import shutil

import numpy as np
import pytest

from memorizing_jax.data import data_dir as data_dir_lib
from memorizing_jax.data import pg19, pipeline, stored_vocab, tasks, token_cache, vocab
from memorizing_jax.data.documents import ReadReport
from tests.data.corpora import TINY_REPOS, write_tree


@pytest.fixture
def bucket(local_gcs, tmp_path, monkeypatch):
  """The local folder behind gs://bucket; local copies of remote files go to tmp_path."""
  monkeypatch.setenv(data_dir_lib.LOCAL_COPIES_ENV, str(tmp_path / "local_copies"))
  folder = local_gcs / "bucket"
  folder.mkdir()
  return folder


@pytest.fixture
def corpus_here_and_in_the_bucket(tmp_path, bucket):
  """One corpus of split folders (with a binary and an undecodable file) in a local
  folder and at gs://bucket/corpus; returns the local folder."""
  local = tmp_path / "corpus"
  write_tree(local / "train", {k: TINY_REPOS[k] for k in ("alpha", "beta", "epsilon")})
  write_tree(local / "train", {"alpha": {"lib.so": b"\x7fELF\0\0\0\0" * 64},
                               "beta": {"latin1.txt": b"caf\xe9 cr\xe8me " * 20}})
  write_tree(local / "validation", {"delta": TINY_REPOS["delta"]})
  write_tree(local / "test", {"gamma": TINY_REPOS["gamma"]})
  shutil.copytree(local, bucket / "corpus")
  return local


def test_remote_data_dirs_are_kept_as_given(tmp_path, monkeypatch):
  assert str(data_dir_lib.resolve_data_dir("gs://bucket/data")) == "gs://bucket/data"
  assert str(data_dir_lib.resolve_data_dir("s3://bucket/data/")).startswith("s3://bucket/data")
  monkeypatch.setenv(data_dir_lib.DATA_DIR_ENV, "gs://bucket/env")
  assert str(data_dir_lib.resolve_data_dir()) == "gs://bucket/env"
  assert data_dir_lib.resolve_data_dir(tmp_path) == tmp_path


def test_a_corpus_on_gs_reads_as_the_same_folder_locally(corpus_here_and_in_the_bucket):
  tasks.register_folder_task("remote_corpus_local", "directory",
                             root=corpus_here_and_in_the_bucket)
  tasks.register_folder_task("remote_corpus_gs", "directory", root="gs://bucket/corpus")
  for split in ("train", "validation", "test"):
    reports = ReadReport(), ReadReport()
    read = [[(d.name, d.text) for d in tasks.get_reader(task).documents(split, None, report)]
            for task, report in zip(("remote_corpus_local", "remote_corpus_gs"), reports)]
    assert read[0] == read[1] and read[0]
    assert reports[0] == reports[1]
  assert reports[0].documents == 1  # the last split read: test
  train_report = ReadReport()
  list(tasks.get_reader("remote_corpus_gs").documents("train", None, train_report))
  assert (train_report.skipped_binary, train_report.skipped_undecodable) == (1, 1)
  assert len(tasks.get_reader("remote_corpus_gs").fingerprint("train")) == 16


def test_a_gs_data_dir_streams_the_same_tokens_and_holds_the_cache(
    corpus_here_and_in_the_bucket, tmp_path, bucket):
  tasks.register_folder_task("remote_cache_task", "directory",
                             root=corpus_here_and_in_the_bucket)
  byte_vocabulary = vocab.byte_vocabulary()

  def streamed(data_dir):
    stream = pipeline.make_stream("remote_cache_task", "train", 2, 16,
                                  vocabulary=byte_vocabulary, mode="eval",
                                  data_dir=data_dir, progress=False)
    return [batch["targets"].tolist() for batch in stream]

  local, remote = streamed(tmp_path / "data"), streamed("gs://bucket/data")
  assert local == remote and local
  built = token_cache.load_or_build("remote_cache_task", "train", byte_vocabulary,
                                    "gs://bucket/data", progress=False)
  assert str(built.path).startswith("gs://bucket/data/tokens/remote_cache_task/train-")
  on_bucket = bucket / "data" / "tokens" / "remote_cache_task" / built.path.name
  assert sorted(p.name for p in on_bucket.iterdir()) == sorted(token_cache.CACHE_FILES)
  # A host without the local copy downloads it from the bucket.
  shutil.rmtree(tmp_path / "local_copies")
  again = token_cache.load_or_build("remote_cache_task", "train", byte_vocabulary,
                                    "gs://bucket/data", progress=False)
  np.testing.assert_array_equal(again.tokens, built.tokens)
  assert again.names == built.names


def test_a_sentencepiece_vocabulary_is_cached_in_a_gs_data_dir(
    corpus_here_and_in_the_bucket, tmp_path, bucket):
  tasks.register_folder_task("remote_vocab_task", "directory", root="gs://bucket/corpus")
  args = dict(kind="sentencepiece", size=400, sample_bytes=100_000)
  remote = vocab.get_vocabulary("remote_vocab_task", data_dir="gs://bucket/data", **args)
  local = vocab.get_vocabulary("remote_vocab_task", data_dir=tmp_path / "data", **args)
  assert remote.sp_model == local.sp_model
  assert [p.suffix for p in sorted((bucket / "data" / "vocab" / "remote_vocab_task").iterdir())
          ] == [".json", ".model"]
  assert vocab.vocabulary_task(remote) == "remote_vocab_task"
  shutil.rmtree(tmp_path / "local_copies")  # read back from the bucket, not trained again
  again = vocab.get_vocabulary("remote_vocab_task", data_dir="gs://bucket/data", **args)
  assert again.sp_model == remote.sp_model
  assert again.encode("def main():\n") == local.encode("def main():\n")


def test_the_run_vocabulary_is_stored_in_and_loaded_from_a_gs_workdir(
    tiny_sentencepiece, tiny_task, bucket):
  stored_vocab.store_vocabulary("gs://bucket/run", tiny_sentencepiece, tiny_task)
  assert (bucket / "run" / "vocabulary" / "vocabulary.json").is_file()
  loaded, description = stored_vocab.load_stored_vocabulary("gs://bucket/run")
  assert loaded.sp_model == tiny_sentencepiece.sp_model
  assert description["task"] == tiny_task
  assert vocab.vocabulary_task(loaded) == tiny_task
  text = "def main():\n\treturn 1\n"
  assert loaded.decode(loaded.encode(text)) == text


def test_a_pg19_copy_on_gs_is_checked_where_it_is(bucket):
  with pytest.raises(FileNotFoundError, match="gs://bucket/pg19"):
    pg19.check_local_copy("gs://bucket/pg19")
  (bucket / "pg19").mkdir()
  (bucket / "pg19" / "metadata.csv").write_text("1,A book,1900,http://x\n")
  with pytest.raises(FileNotFoundError, match=r"gs://bucket/pg19/train"):
    pg19.check_local_copy("gs://bucket/pg19")
  for split in ("train", "validation", "test"):
    (bucket / "pg19" / split).mkdir()
  assert str(pg19.check_local_copy("gs://bucket/pg19")) == "gs://bucket/pg19"


def test_a_vocabulary_saved_in_checkpoints_on_gs_loads(corpus_here_and_in_the_bucket, tmp_path,
                                                       bucket):
  """A gs:// workdir without `vocabulary/`: the checkpoint's copy, read through etils."""
  from memorizing_jax.checkpointing import items  # pylint: disable=g-import-not-at-top
  tasks.register_folder_task("remote_saved_vocab", "directory",
                             root=corpus_here_and_in_the_bucket)
  trained = vocab.get_vocabulary("remote_saved_vocab", "sentencepiece", size=400,
                                 data_dir=tmp_path / "data", sample_bytes=100_000)
  stored_vocab.store_vocabulary(str(tmp_path / "source"), trained, "remote_saved_vocab")
  path = items.json_item_path("gs://bucket/run/checkpoints", 4, items.VOCABULARY_ITEM)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(stored_vocab.checkpoint_item(str(tmp_path / "source"))))
  assert (bucket / "run" / "checkpoints" / "4" / "vocabulary" / "metadata").is_file()
  loaded = stored_vocab.run_vocabulary("gs://bucket/run", "remote_saved_vocab",
                                       "sentencepiece", 400,
                                       checkpoints="gs://bucket/run/checkpoints", steps=[4])
  assert loaded.sp_model == trained.sp_model
  assert loaded.sentencepiece_model_file.startswith(str(tmp_path / "local_copies"))
