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


def test_a_model_config_too_small_for_the_vocabulary_is_named(tiny_sentencepiece):
  """Without a workdir (a training run choosing its model config) the config is what
  to change: a plain ValueError naming the size it needs."""
  size = tiny_sentencepiece.vocab_size
  stored_vocab.check_fits_model(tiny_sentencepiece, size)
  stored_vocab.check_fits_model(tiny_sentencepiece, size + 100)
  with pytest.raises(ValueError, match=rf"ModelConfig.vocab_size={size - 1} is smaller than "
                                       rf"the vocabulary's {size} ids: set "
                                       rf"ModelConfig.vocab_size >= {size}") as raised:
    stored_vocab.check_fits_model(tiny_sentencepiece, size - 1)
  assert not isinstance(raised.value, StoredVocabularyError)


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


@pytest.fixture
def local_copies(tmp_path, monkeypatch):
  """Local copies of files read from elsewhere (checkpoints' vocabularies) go here."""
  from memorizing_jax.data import data_dir as data_dir_lib  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv(data_dir_lib.LOCAL_COPIES_ENV, str(tmp_path / "local_copies"))
  return tmp_path / "local_copies"


def test_a_checkpoints_copy_loads_as_the_workdirs(tiny_sentencepiece, tiny_task, tmp_path,
                                                  local_copies):
  workdir = str(tmp_path / "run")
  stored_vocab.store_vocabulary(workdir, tiny_sentencepiece, tiny_task)
  item = json.loads(json.dumps(stored_vocab.checkpoint_item(workdir)))  # as a JSON item
  _, description = stored_vocab.load_stored_vocabulary(workdir)
  assert item["description"] == description
  assert sorted(item["files"]) == sorted([description["model_file"],
                                          description["model_file"].replace(".model", ".json")])
  loaded, read_back = stored_vocab.load_checkpoint_item(item, "checkpoints/3")
  assert read_back == description
  assert loaded.sp_model == tiny_sentencepiece.sp_model
  assert loaded.sentencepiece_model_file.startswith(str(local_copies / "vocabularies"))
  assert list(loaded.encode(TEXT)) == list(tiny_sentencepiece.encode(TEXT))
  vocab.check_vocabulary_for_task(loaded, tiny_task)  # the sidecar came along

  stored_vocab.store_vocabulary(workdir, vocab.byte_vocabulary(), tiny_task)
  item = stored_vocab.checkpoint_item(workdir)
  assert item["files"] == {} and item["description"]["kind"] == "byte"
  assert isinstance(stored_vocab.load_checkpoint_item(item, "c/1")[0], seqio.ByteVocabulary)
  assert stored_vocab.checkpoint_item(str(tmp_path / "no_vocabulary_here")) is None


def test_a_damaged_checkpoint_copy_is_named(tiny_sentencepiece, tiny_task, tmp_path,
                                            local_copies):
  del local_copies
  workdir = str(tmp_path)
  stored_vocab.store_vocabulary(workdir, tiny_sentencepiece, tiny_task)
  item = stored_vocab.checkpoint_item(workdir)
  model_file = item["description"]["model_file"]
  flipped = dict(item, files=dict(item["files"]))
  data = flipped["files"][model_file]
  flipped["files"][model_file] = data[:100] + ("A" if data[100] != "A" else "B") + data[101:]
  with pytest.raises(StoredVocabularyError,
                     match=r"model saved in checkpoint c/3 is damaged .*load another step"):
    stored_vocab.load_checkpoint_item(flipped, "c/3")
  with pytest.raises(StoredVocabularyError, match=r"model saved in checkpoint c/3 is missing"):
    stored_vocab.load_checkpoint_item(dict(item, files={}), "c/3")
  with pytest.raises(StoredVocabularyError, match=r"saved in checkpoint c/3 is unreadable"):
    stored_vocab.load_checkpoint_item(dict(item, files={model_file: "not base64!"}), "c/3")
  with pytest.raises(StoredVocabularyError, match=r"saved in checkpoint c/3 is unreadable"):
    stored_vocab.load_checkpoint_item(dict(item, files={"../x.model": data}), "c/3")
  # A damaged workdir copy is not copied into checkpoints.
  (tmp_path / "vocabulary" / model_file).write_bytes(b"not a model")
  with pytest.raises(StoredVocabularyError, match=r"\.model is damaged"):
    stored_vocab.checkpoint_item(workdir)


def _save_item(checkpoints, step, item):
  """Writes a checkpoint's vocabulary item where orbax's JSON handler puts it."""
  from memorizing_jax.checkpointing import items  # pylint: disable=g-import-not-at-top
  path = items.json_item_path(str(checkpoints), step, items.VOCABULARY_ITEM)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(item if isinstance(item, str) else json.dumps(item))


def test_run_vocabulary_takes_the_checkpoints_copy_when_the_workdir_has_none(
    tiny_sentencepiece, tiny_task, tmp_path, local_copies, caplog):
  del local_copies
  source, workdir = str(tmp_path / "source"), tmp_path / "run"
  stored_vocab.store_vocabulary(source, tiny_sentencepiece, tiny_task)
  item = stored_vocab.checkpoint_item(source)
  checkpoints = workdir / "checkpoints"
  _save_item(checkpoints, 3, item)
  _save_item(checkpoints, 6, "{damaged")
  args = (str(workdir), tiny_task, "sentencepiece", 400)
  # Step 6's copy is unreadable; step 3's serves (every step saves the same one).
  loaded = stored_vocab.run_vocabulary(*args, checkpoints=str(checkpoints), steps=[3, 6])
  assert loaded.sp_model == tiny_sentencepiece.sp_model
  with pytest.raises(StoredVocabularyError, match=r"stores no vocabulary and the one saved "
                                                  r"in its checkpoints is unreadable"):
    stored_vocab.run_vocabulary(*args, checkpoints=str(checkpoints), steps=[6])
  with pytest.raises(StoredVocabularyError, match=r"size 400 \(asked: 500\)"):
    stored_vocab.run_vocabulary(str(workdir), tiny_task, "sentencepiece", 500,
                                checkpoints=str(checkpoints), steps=[3])
  # With a workdir copy, an unreadable checkpoint copy is only a warning.
  stored_vocab.store_vocabulary(str(workdir), tiny_sentencepiece, tiny_task)
  with caplog.at_level("WARNING"):
    loaded = stored_vocab.run_vocabulary(*args, checkpoints=str(checkpoints), steps=[6])
  assert loaded.sentencepiece_model_file.startswith(str(workdir / "vocabulary"))
  assert "the vocabulary saved in the checkpoints is unreadable" in caplog.text
