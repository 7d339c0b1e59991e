"""The run's vocabulary lives in its workdir: stored on a fresh start, read on resume.

Real SentencePiece models trained on a small folder corpus, real files, one process
(several processes run the same code: process 0 stores, a collective, all read).
"""
import dataclasses
import json
import os
import shutil

import pytest

from memorizing_jax.data import stored_vocab, tasks
from memorizing_jax.data.stored_vocab import StoredVocabularyError
from memorizing_jax.train import inputs, loop, run_vocabulary

SIZE = 400  # SentencePiece pieces asked for; the model has a row for each
NEW_DOCUMENT = "".join(f"zebra_quux_{i} = xylophone_wombat({i})\n" for i in range(40))


@pytest.fixture
def growing(corpus, tmp_path, request):
  """(configs, corpus root): a tiny SentencePiece run over a copy of the test corpus
  (a task of its own, so that it can grow), with its own data directory."""
  root = tmp_path / "corpus"
  shutil.copytree(tasks.get_reader(corpus[0]).root, root)
  task = f"growing_{request.node.name}"[:60]
  tasks.register_folder_task(task, "file", root=str(root))
  return root, task, str(tmp_path / "data_dir")


def _configs(tiny, task, data_dir, **trainer):
  return tiny.replace(model=dict(vocab_size=SIZE),
                      data=dict(task=task, vocabulary="sentencepiece", vocabulary_size=SIZE,
                                data_dir=data_dir),
                      trainer=dict(total_steps=6, checkpoint_every=3, **trainer))


def test_a_fresh_run_stores_the_vocabulary_every_process_reads(tiny, growing, tmp_path):
  _, task, data_dir = growing
  data = _configs(tiny, task, data_dir).data
  workdir = str(tmp_path / "run")
  vocabulary = run_vocabulary.vocabulary_for_run(workdir, data)
  description = json.loads((tmp_path / "run" / "vocabulary" / "vocabulary.json").read_text())
  assert vocabulary.sentencepiece_model_file == os.path.join(
      workdir, "vocabulary", description["model_file"])
  assert vocabulary.sp_model == inputs.load_vocabulary(data).sp_model
  assert description["task"] == task and description["size"] == SIZE


def test_a_run_of_an_older_version_resumes_and_then_keeps_its_vocabulary(tiny, growing,
                                                                          tmp_path):
  """A checkpoint but no stored vocabulary: built from the data as before, and stored
  once the restore has worked with it."""
  _, task, data_dir = growing
  data = _configs(tiny, task, data_dir).data
  workdir = str(tmp_path / "run")
  os.makedirs(os.path.join(workdir, "checkpoints", "3"))
  vocabulary = run_vocabulary.vocabulary_for_run(workdir, data)
  assert vocabulary.sp_model == inputs.load_vocabulary(data).sp_model
  assert not stored_vocab.has_stored_vocabulary(workdir)
  run_vocabulary.store_if_missing(workdir, vocabulary, data)
  assert stored_vocab.load_stored_vocabulary(workdir)[0].sp_model == vocabulary.sp_model


def test_resuming_with_other_vocabulary_settings_is_refused(tiny, growing, tmp_path):
  _, task, data_dir = growing
  data = _configs(tiny, task, data_dir).data
  workdir = str(tmp_path / "run")
  run_vocabulary.vocabulary_for_run(workdir, data)
  os.makedirs(os.path.join(workdir, "checkpoints", "3"))
  other = dataclasses.replace(data, vocabulary_size=SIZE + 100)
  with pytest.raises(StoredVocabularyError, match=rf"size {SIZE} \(asked: {SIZE + 100}\)"):
    run_vocabulary.vocabulary_for_run(workdir, other)


def test_a_grown_corpus_resumes_with_the_runs_own_vocabulary(tiny, growing, tmp_path):
  """Train 3 steps, append a document (the corpus's fingerprint changes, and with it the
  vocabulary the data would give), resume to step 6: the run keeps its stored
  vocabulary, its stream restores over the grown corpus, and steps 4-6 (still in the
  first epoch, before the appended document is read) have the losses of a run on the
  corpus as it was."""
  root, task, data_dir = growing
  configs = _configs(tiny, task, data_dir)
  uninterrupted = loop.train(workdir=str(tmp_path / "reference"), **configs.kwargs())
  workdir = str(tmp_path / "run")
  loop.train(workdir=workdir, **configs.replace(trainer=dict(total_steps=3)).kwargs())
  stored = stored_vocab.load_stored_vocabulary(workdir)[0].sp_model

  (root / "train" / "zz_appended.py").write_text(NEW_DOCUMENT)
  assert inputs.load_vocabulary(configs.data).sp_model != stored  # what the data gives now
  resumed = loop.train(workdir=workdir, **configs.kwargs())

  assert stored_vocab.load_stored_vocabulary(workdir)[0].sp_model == stored
  assert resumed.train_losses == {s: uninterrupted.train_losses[s] for s in (4, 5, 6)}
