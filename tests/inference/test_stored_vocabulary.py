"""`mj.load(workdir)` reads the vocabulary stored with the run: a tiny SentencePiece run
loads, and scores the same, without its corpus or the data cache."""
import json
import shutil

import gin
import numpy as np
import pytest

import memorizing_jax as mj
from memorizing_jax import main
from memorizing_jax.data import tasks
from memorizing_jax.data.stored_vocab import StoredVocabularyError
from tiny_runs import write_code_corpus  # pylint: disable=g-bad-import-order

TASK = "inference_sentencepiece_corpus"
TEXT = "def alpha(x):\n  return x + 1\ny = alpha(alpha(y))\n"


@pytest.fixture(scope="module")
def sentencepiece_run(tmp_path_factory, tiny_gin):
  """(workdir, corpus folder, data dir) of a 6-step run with a 400-piece SentencePiece
  vocabulary trained on a folder corpus of 16 small documents."""
  root = tmp_path_factory.mktemp("sentencepiece_run")
  write_code_corpus(root / "corpus", (("train", 16), ("validation", 2), ("test", 1)))
  tasks.register_folder_task(TASK, "file", root=str(root / "corpus"))
  gin_text = (tiny_gin.replace("TASK = 'synthetic_recall'", f"TASK = '{TASK}'")
              .replace("VOCAB_SIZE = 264", "VOCAB_SIZE = 400")
              .replace("data_config.DataConfig.vocabulary = 'byte'",
                       "data_config.DataConfig.vocabulary = 'sentencepiece'\n"
                       f"data_config.DataConfig.data_dir = '{root / 'data_dir'}'"))
  (root / "tiny.gin").write_text(gin_text)
  try:
    main.run_training(str(root / "run"), [str(root / "tiny.gin")], [])
  finally:
    gin.clear_config()
  return root / "run", root / "corpus", root / "data_dir"


def _assert_same_score(score, expected):
  np.testing.assert_array_equal(score.tokens, expected.tokens)
  np.testing.assert_array_equal(score.predictions, expected.predictions)
  np.testing.assert_allclose(score.loss, expected.loss, rtol=1e-6)


def test_load_needs_neither_the_corpus_nor_the_data_cache(sentencepiece_run, tmp_path):
  workdir, corpus, data_dir = sentencepiece_run
  before = mj.load(str(workdir)).score(TEXT)
  assert before.tokens.size < len(TEXT)  # SentencePiece pieces, not bytes
  # A workdir of an older run, without a stored vocabulary, loads as before (from the
  # data cache) and scores the same.
  older = tmp_path / "older_run"
  shutil.copytree(workdir, older, ignore=shutil.ignore_patterns("vocabulary"))
  _assert_same_score(mj.load(str(older)).score(TEXT), before)

  shutil.rmtree(data_dir)
  shutil.rmtree(corpus)
  loaded = mj.load(str(workdir))
  assert loaded.vocabulary.sentencepiece_model_file.startswith(str(workdir / "vocabulary"))
  _assert_same_score(loaded.score(TEXT), before)


def test_load_names_a_damaged_stored_vocabulary(sentencepiece_run, tmp_path):
  workdir, _, _ = sentencepiece_run
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  folder = copy / "vocabulary"
  model = folder / json.loads((folder / "vocabulary.json").read_text())["model_file"]
  model.write_bytes(b"not a SentencePiece model")
  with pytest.raises(StoredVocabularyError, match=r"\.model is damaged"):
    mj.load(str(copy))
