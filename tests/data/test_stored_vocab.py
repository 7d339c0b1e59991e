"""The vocabulary stored with a run (`<workdir>/vocabulary/`): real SentencePiece files."""
import hashlib
import json

import pytest
import seqio

from memorizing_jax.data import stored_vocab, tasks, vocab
from memorizing_jax.data.stored_vocab import StoredVocabularyError

TEXT = "def alpha(x):\n\treturn x + 1  # é\n"


def test_sentencepiece_round_trips_through_the_workdir(tiny_sentencepiece, tiny_task, data_dir,
                                                       tmp_path):
  stored_vocab.store_vocabulary(str(tmp_path), tiny_sentencepiece, tiny_task)
  folder = tmp_path / "vocabulary"
  description = json.loads((folder / "vocabulary.json").read_text())
  digest = hashlib.sha256(tiny_sentencepiece.sp_model).hexdigest()
  model_file = f"sentencepiece-{digest[:16]}.model"
  assert sorted(p.name for p in folder.iterdir()) == sorted(
      ["vocabulary.json", model_file, model_file.replace(".model", ".json")])
  fingerprint = tasks.get_reader(tiny_task).fingerprint("train", data_dir)
  assert {k: description[k] for k in ("kind", "task", "size", "pieces", "model_file", "sha256",
                                      "source_fingerprint")} == dict(
      kind="sentencepiece", task=tiny_task, size=400, pieces=tiny_sentencepiece.vocab_size,
      model_file=model_file, sha256=digest, source_fingerprint=fingerprint)

  loaded, read_back = stored_vocab.load_stored_vocabulary(str(tmp_path))
  assert read_back == description
  assert loaded.sentencepiece_model_file == str(folder / model_file)
  assert loaded.sp_model == tiny_sentencepiece.sp_model
  assert list(loaded.encode(TEXT)) == list(tiny_sentencepiece.encode(TEXT))
  # The copied sidecar keeps the task check of the data pipeline working.
  vocab.check_vocabulary_for_task(loaded, tiny_task)
  with pytest.raises(ValueError, match="trained on task"):
    vocab.check_vocabulary_for_task(loaded, "python_stdlib")


def test_byte_vocabulary_is_a_description_only(tiny_task, tmp_path):
  stored_vocab.store_vocabulary(str(tmp_path), vocab.byte_vocabulary(), tiny_task)
  assert [p.name for p in (tmp_path / "vocabulary").iterdir()] == ["vocabulary.json"]
  loaded, description = stored_vocab.load_stored_vocabulary(str(tmp_path))
  assert isinstance(loaded, seqio.ByteVocabulary)
  assert description == dict(kind="byte", task=tiny_task, size=259, pieces=259,
                             vocabulary_fingerprint="byte-extra0")
  stored_vocab.check_fits_data_config(description, str(tmp_path), tiny_task, "byte", 32000)


def test_a_workdir_without_a_vocabulary_has_none(tmp_path):
  assert not stored_vocab.has_stored_vocabulary(str(tmp_path))
  assert stored_vocab.load_stored_vocabulary(str(tmp_path)) is None


def test_storing_again_replaces_the_model(tiny_sentencepiece, tiny_task, tmp_path):
  stored_vocab.store_vocabulary(str(tmp_path), tiny_sentencepiece, tiny_task)
  stored_vocab.store_vocabulary(str(tmp_path), vocab.byte_vocabulary(), tiny_task)
  assert [p.name for p in (tmp_path / "vocabulary").iterdir()] == ["vocabulary.json"]
  assert isinstance(stored_vocab.load_stored_vocabulary(str(tmp_path))[0], seqio.ByteVocabulary)


def test_damaged_files_are_named_with_the_fix(tiny_sentencepiece, tiny_task, tmp_path):
  workdir = str(tmp_path)
  stored_vocab.store_vocabulary(workdir, tiny_sentencepiece, tiny_task)
  folder = tmp_path / "vocabulary"
  model = folder / json.loads((folder / "vocabulary.json").read_text())["model_file"]
  model.write_bytes(model.read_bytes()[:-10])
  with pytest.raises(StoredVocabularyError, match=r"sentencepiece-.*\.model is damaged.*copy "
                                                  r"the run's own `vocabulary/` folder"):
    stored_vocab.load_stored_vocabulary(workdir)
  model.unlink()
  with pytest.raises(StoredVocabularyError, match="is missing"):
    stored_vocab.load_stored_vocabulary(workdir)
  (folder / "vocabulary.json").write_text("{not json")
  with pytest.raises(StoredVocabularyError, match=r"vocabulary.json is unreadable"):
    stored_vocab.load_stored_vocabulary(workdir)


def test_a_vocabulary_of_other_settings_is_refused(tiny_sentencepiece, tiny_task, tmp_path):
  workdir = str(tmp_path)
  stored_vocab.store_vocabulary(workdir, tiny_sentencepiece, tiny_task)
  _, description = stored_vocab.load_stored_vocabulary(workdir)
  stored_vocab.check_fits_data_config(description, workdir, tiny_task, "sentencepiece", 400)
  with pytest.raises(StoredVocabularyError, match=r"size 400 \(asked: 1000\).*config.gin"):
    stored_vocab.check_fits_data_config(description, workdir, tiny_task, "sentencepiece",
                                        1000)
  with pytest.raises(StoredVocabularyError, match=r"task 'tiny_repos' \(asked: 'other'\), "
                                                  r"kind 'sentencepiece' \(asked: 'byte'\)"):
    stored_vocab.check_fits_data_config(description, workdir, "other", "byte", 400)
  stored_vocab.check_fits_model(tiny_sentencepiece, tiny_sentencepiece.vocab_size, workdir)
  with pytest.raises(StoredVocabularyError, match=r"has \d+ ids but the run's model only 300"):
    stored_vocab.check_fits_model(tiny_sentencepiece, 300, workdir)


def test_run_vocabulary_prefers_the_stored_one(tiny_sentencepiece, tiny_task, data_dir,
                                               tmp_path):
  """Stored: the workdir's files; none stored (older runs): the data cache's model."""
  legacy = stored_vocab.run_vocabulary(str(tmp_path), tiny_task, "sentencepiece", 400,
                                       data_dir=str(data_dir))
  from_data = vocab.get_vocabulary(tiny_task, "sentencepiece", 400, data_dir=str(data_dir))
  assert legacy.sentencepiece_model_file == from_data.sentencepiece_model_file
  stored_vocab.store_vocabulary(str(tmp_path), tiny_sentencepiece, tiny_task)
  stored = stored_vocab.run_vocabulary(str(tmp_path), tiny_task, "sentencepiece", 400,
                                       data_dir=str(data_dir))
  assert stored.sentencepiece_model_file.startswith(str(tmp_path / "vocabulary"))
  assert stored.sp_model == tiny_sentencepiece.sp_model
