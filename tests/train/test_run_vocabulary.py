"""The run's vocabulary lives in its workdir: stored on a fresh start, read on resume.

Real SentencePiece models trained on a small folder corpus, real files, one process
(several processes run the same code: process 0 stores, a collective, all read).
"""
import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

from memorizing_jax.data import stored_vocab, tasks
from memorizing_jax.data.stored_vocab import StoredVocabularyError
from memorizing_jax.train import inputs, loop, run_vocabulary

from tiny_runs import entry_point_bindings  # pylint: disable=g-bad-import-order

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


TEXT = "def alpha(x):\n  return x + 1\ny = alpha(alpha(y))\n"


def _same_score(score, expected):
  np.testing.assert_array_equal(score.tokens, expected.tokens)
  np.testing.assert_array_equal(score.predictions, expected.predictions)
  np.testing.assert_allclose(score.loss, expected.loss, rtol=1e-6)


def _train_through_the_entry_point(workdir, task, data_dir):
  """6 steps of a tiny SentencePiece run, checkpoints at 3 and 6."""
  import gin  # pylint: disable=g-import-not-at-top
  from memorizing_jax import main  # pylint: disable=g-import-not-at-top
  bindings = entry_point_bindings(6, 3, eval_batches=1, keep_checkpoints=5, extra=[
      f"TASK = '{task}'", "data_config.DataConfig.vocabulary = 'sentencepiece'",
      f"data_config.DataConfig.data_dir = '{data_dir}'", f"VOCAB_SIZE = {SIZE}",
      f"model_config.ModelConfig.vocab_size = {SIZE}"])
  gin.clear_config()
  try:
    main.run_training(str(workdir), ["train.gin"], bindings)
  finally:
    gin.clear_config()


def test_each_checkpoint_carries_the_vocabulary_and_loads_alone(tiny, growing, tmp_path,
                                                                monkeypatch):
  """A run's checkpoints each save the workdir's vocabulary. Without the workdir's
  `vocabulary/`: a resumed run takes the checkpoints' (even when the grown corpus
  would give another) and stores it again, and one other than the checkpoints' is
  refused; `mj.load` without it, the data cache and the corpus uses the checkpoint's
  and scores the same, and so does a `checkpoints/` folder copied alone."""
  import memorizing_jax as mj  # pylint: disable=g-import-not-at-top
  from memorizing_jax.checkpointing import items  # pylint: disable=g-import-not-at-top
  from memorizing_jax.data import data_dir as data_dir_lib  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv(data_dir_lib.LOCAL_COPIES_ENV, str(tmp_path / "local_copies"))
  root, task, data_dir = growing
  workdir = tmp_path / "run"
  _train_through_the_entry_point(workdir, task, data_dir)  # mj.load reads its gin config
  checkpoints = workdir / "checkpoints"
  steps = sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
  assert steps == [3, 6]
  for step in steps:
    assert items.read_json_item(str(checkpoints), step, "vocabulary") == \
        stored_vocab.checkpoint_item(str(workdir))
  before = mj.load(str(workdir)).score(TEXT)
  assert before.tokens.size < len(TEXT)  # SentencePiece pieces, not bytes
  stored = stored_vocab.load_stored_vocabulary(str(workdir))[0].sp_model

  # The trainer, on a copy whose corpus grew and whose `vocabulary/` is gone.
  resumed_dir = str(tmp_path / "resumed")
  shutil.copytree(workdir, resumed_dir)
  shutil.rmtree(os.path.join(resumed_dir, "vocabulary"))
  data = _configs(tiny, task, data_dir).data
  (root / "train" / "zz_appended.py").write_text(NEW_DOCUMENT)
  assert inputs.load_vocabulary(data).sp_model != stored
  resumed = run_vocabulary.vocabulary_for_run(resumed_dir, data)
  assert resumed.sp_model == stored
  run_vocabulary.store_if_missing(resumed_dir, resumed, data)
  assert stored_vocab.load_stored_vocabulary(resumed_dir)[0].sp_model == stored
  stored_vocab.store_vocabulary(resumed_dir, inputs.load_vocabulary(data), task)
  with pytest.raises(StoredVocabularyError, match=r"is not the one checkpoint .*/6 saved"):
    run_vocabulary.vocabulary_for_run(resumed_dir, data)

  # mj.load with nothing but the checkpoints.
  alone = tmp_path / "copied" / "checkpoints_alone"
  shutil.copytree(checkpoints, alone)
  shutil.rmtree(workdir / "vocabulary")
  shutil.rmtree(data_dir)
  shutil.rmtree(root)
  for where in (workdir, alone):
    loaded = mj.load(str(where))
    assert loaded.vocabulary.sentencepiece_model_file.startswith(
        str(tmp_path / "local_copies" / "vocabularies"))
    _same_score(loaded.score(TEXT), before)
