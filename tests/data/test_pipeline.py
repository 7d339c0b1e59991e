"""make_stream end to end: tiny folder corpus, SentencePiece, cache, resume, errors."""
import json
import os
import shutil

import numpy as np
import pytest

from memorizing_jax.data import pipeline
from memorizing_jax.data import tasks
from memorizing_jax.data import token_cache
from memorizing_jax.data import vocab
from tests.data.corpora import TINY_REPOS, write_tree

# The train split of `tiny_repos` as the GitHub construction defines it, by hand:
# each repository's files in walk order, a newline between files that lack one.
EXPECTED_TRAIN = {
    "alpha": "# alpha\ndef main():\n\treturn 1\nX = 'é€'  # unicode\nassert True",
    "beta": "\\section{Intro}\n$\\alpha^2 + \\beta_i$\n\\begin{equation} x \\end{equation}\n",
    "epsilon": TINY_REPOS["epsilon"]["long.py"].decode(),
    "gamma": "int main() {\n  return 0;\n}\n",
}


def collect_targets(stream):
  """{document name: [target ids]} over a finite stream."""
  targets = {}
  for batch in stream:
    for row, document in enumerate(batch["document_id"].tolist()):
      if document >= 0:
        mask = batch["loss_mask"][row] > 0
        targets.setdefault(stream.name_of(document), []).extend(
            batch["targets"][row][mask].tolist())
  return targets


@pytest.mark.parametrize("kind", ["byte", "sentencepiece"])
def test_eval_stream_is_the_documents_tokenised_directly(kind, tiny_task, tiny_sentencepiece,
                                                         data_dir):
  vocabulary = tiny_sentencepiece if kind == "sentencepiece" else vocab.byte_vocabulary()
  stream = pipeline.make_stream(tiny_task, "train", 3, 16, vocabulary=vocabulary, mode="eval",
                                data_dir=data_dir, progress=False)
  got = collect_targets(stream)
  assert got == {name: list(vocabulary.encode(text)) + [vocabulary.eos_id]
                 for name, text in EXPECTED_TRAIN.items()}
  assert vocabulary.decode(got["alpha"][:-1]) == EXPECTED_TRAIN["alpha"]


def test_train_stream_resumes_exactly_through_make_stream(tiny_task, tiny_sentencepiece,
                                                          data_dir):
  def stream():
    return pipeline.make_stream(tiny_task, "train", 2, 8, vocabulary=tiny_sentencepiece,
                                seed=3, data_dir=data_dir, progress=False)

  reference = stream()
  want = [next(reference) for _ in range(40)]
  first = stream()
  for _ in range(17):
    next(first)
  saved = json.dumps(first.state())
  resumed = stream()
  resumed.restore(json.loads(saved))
  for want_batch in want[17:]:
    got = next(resumed)
    for key in want_batch:
      np.testing.assert_array_equal(got[key], want_batch[key])
  other_vocabulary = pipeline.make_stream(tiny_task, "train", 2, 8,
                                          vocabulary=vocab.byte_vocabulary(), seed=3,
                                          data_dir=data_dir, progress=False)
  with pytest.raises(ValueError, match="vocabulary: saved 'sentencepiece-"):
    other_vocabulary.restore(json.loads(saved))


def test_process_shards_are_disjoint_and_complete(tiny_task, data_dir):
  byte_vocabulary = vocab.byte_vocabulary()
  shards = [collect_targets(pipeline.make_stream(
      tiny_task, "train", 2, 32, vocabulary=byte_vocabulary, mode="eval", process_index=p,
      process_count=2, data_dir=data_dir, progress=False)) for p in range(2)]
  assert not set(shards[0]) & set(shards[1])
  assert {**shards[0], **shards[1]} == {
      name: byte_vocabulary.encode(text) + [1] for name, text in EXPECTED_TRAIN.items()}


def test_token_cache_is_built_once(tiny_task, data_dir):
  byte_vocabulary = vocab.byte_vocabulary()
  cache = token_cache.load_or_build(tiny_task, "train", byte_vocabulary, data_dir, False)
  mtime = (cache.path / "tokens.bin").stat().st_mtime_ns
  again = token_cache.load_or_build(tiny_task, "train", byte_vocabulary, data_dir, False)
  assert again.path == cache.path and (again.path / "tokens.bin").stat().st_mtime_ns == mtime
  assert cache.tokens.dtype == np.uint16
  assert cache.names == sorted(EXPECTED_TRAIN)
  np.testing.assert_array_equal(cache.document(0), byte_vocabulary.encode(EXPECTED_TRAIN["alpha"]))


def test_vocabulary_of_another_task_is_rejected(tiny_task, stdlib_sentencepiece, data_dir):
  with pytest.raises(ValueError, match=r"trained on task 'python_stdlib', not 'tiny_repos'"):
    pipeline.make_stream(tiny_task, "train", 2, 8, vocabulary=stdlib_sentencepiece,
                         data_dir=data_dir)


def test_missing_folder_is_an_error_naming_it(tmp_path, data_dir):
  missing = tmp_path / "not_here"
  tasks.register_folder_task("tiny_missing", "file", root=missing)
  with pytest.raises(FileNotFoundError, match=str(missing)):
    pipeline.make_stream("tiny_missing", "train", 2, 8, vocabulary=vocab.byte_vocabulary(),
                         data_dir=data_dir)


def test_bad_documents_are_skipped_replaced_and_counted(tmp_path, data_dir):
  write_tree(tmp_path / "train", {
      "empty": {"a.txt": b""}, "blank": {"b.txt": b"\n \n"},
      # One undecodable byte in 206 (under documents.UNDECODABLE_SHARE): kept, replaced.
      "bad": {"c.txt": b"ok\xffok\n" + b"fine line\n" * 20},
      "short": {"d.txt": b"tiny\n"}, "long": {"e.txt": b"x" * 40}})
  for split in ("validation", "test"):
    (tmp_path / split).mkdir()
  tasks.register_folder_task("tiny_bad", "directory", root=tmp_path, min_tokens=6)
  stream = pipeline.make_stream("tiny_bad", "train", 1, 64, vocabulary=vocab.byte_vocabulary(),
                                mode="eval", data_dir=data_dir, progress=False)
  byte_vocabulary = vocab.byte_vocabulary()
  assert collect_targets(stream) == {
      "bad": byte_vocabulary.encode("ok\ufffdok\n" + "fine line\n" * 20) + [1],
      "long": byte_vocabulary.encode("x" * 40) + [1]}
  meta = token_cache.load_or_build("tiny_bad", "train", byte_vocabulary, data_dir).meta
  assert meta["report"] == dict(documents=2, skipped_empty=2, skipped_short=1,
                                skipped_binary=0, skipped_undecodable=0, skipped_unreadable=0,
                                documents_with_replacements=1, replaced_characters=1)
  with pytest.raises(ValueError, match="split 'validation' has no documents"):
    pipeline.make_stream("tiny_bad", "validation", 1, 8, vocabulary=byte_vocabulary,
                         data_dir=data_dir, progress=False)


def test_python_stdlib_stream_starts_with_a_real_document(data_dir):
  stream = pipeline.make_stream("python_stdlib", "validation", 2, 64,
                                vocabulary=vocab.byte_vocabulary(), mode="eval",
                                data_dir=data_dir, progress=False)
  batch = next(stream)
  assert batch["start_of_sequence"].all() and (batch["token_offset"] == 0).all()
  assert batch["inputs"].shape == (2, 64) and (batch["inputs"][:, 0] == 0).all()
  first = stream.document_names[batch["document_id"][0]]
  reader = tasks.get_reader("python_stdlib")
  text = next(d.text for d in reader.documents("validation") if d.name == first)
  assert vocab.byte_vocabulary().decode(batch["targets"][0].tolist()) == text[:64]


def test_state_restores_on_another_copy_of_the_same_files(tiny_repos, tmp_path, data_dir):
  """A fresh host has the same files with other modification times: its token cache
  sits under another key, and a state saved elsewhere still restores there."""
  shutil.copytree(tiny_repos, tmp_path / "copy_a")
  shutil.copytree(tiny_repos, tmp_path / "copy_b")
  os.utime(tmp_path / "copy_b" / "train" / "alpha" / "README.md", ns=(1, 1))
  byte_vocabulary = vocab.byte_vocabulary()

  def stream(copy):
    tasks.register_folder_task("tiny_copied", "directory", root=tmp_path / copy)
    return pipeline.make_stream("tiny_copied", "train", 2, 8, vocabulary=byte_vocabulary,
                                data_dir=data_dir, progress=False)

  reference = stream("copy_a")
  want = [next(reference) for _ in range(30)]
  key_a = token_cache.load_or_build("tiny_copied", "train", byte_vocabulary, data_dir).key
  saved_on_a = stream("copy_a")
  for _ in range(17):
    next(saved_on_a)
  saved = json.loads(json.dumps(saved_on_a.state()))
  resumed = stream("copy_b")
  assert token_cache.load_or_build("tiny_copied", "train", byte_vocabulary,
                                   data_dir).key != key_a
  resumed.restore(saved)
  for want_batch in want[17:]:
    got = next(resumed)
    for key in want_batch:
      np.testing.assert_array_equal(got[key], want_batch[key])


def test_a_run_resumes_after_a_document_is_appended_to_the_corpus(tmp_path, data_dir):
  """The state of a stream over 4 documents restores after a 5th, whose name sorts
  last, is added: the rest of epoch 0 over the 4, then the new one, then epoch 1 over
  all 5 (the reasoning of streams.py, written out with `segments_in_order`)."""
  from tests.data.test_streams import row_reads, segments_in_order
  texts = {"a": "first document\n", "b": "second, a little longer document\n",
           "c": "third\n", "d": "the fourth document of the corpus\n"}
  write_tree(tmp_path / "train", {name: {"text.txt": text.encode()}
                                  for name, text in texts.items()})
  byte_vocabulary = vocab.byte_vocabulary()
  tasks.register_folder_task("tiny_growing", "directory", root=tmp_path)

  def stream():
    return pipeline.make_stream("tiny_growing", "train", 1, 8, vocabulary=byte_vocabulary,
                                seed=2, data_dir=data_dir, progress=False)

  first = stream()
  epoch0 = np.random.default_rng([2, 0, 0]).permutation(4)
  whole = (len(texts["abcd"[epoch0[0]]]) + 8) // 8  # segments of epoch 0's first document
  list(_take_steps(first, whole + 1))
  saved = json.loads(json.dumps(first.state()))
  write_tree(tmp_path / "train", {"zz_new": {"text.txt": b"an appended document\n"}})
  grown = stream()
  assert grown.document_names == ["a", "b", "c", "d", "zz_new"]
  grown.restore(saved)
  docs = [np.asarray(byte_vocabulary.encode(t), np.int32)
          for t in list(texts.values()) + ["an appended document\n"]]
  epoch1 = np.random.default_rng([2, 0, 1]).permutation(5)
  want = (segments_in_order(docs, epoch0[1:], 8, first_offset=8)
          + segments_in_order(docs, [4], 8) + segments_in_order(docs, epoch1, 8))
  assert row_reads(grown, len(want)) == want


def _take_steps(stream, n):
  for _ in range(n):
    yield next(stream)
