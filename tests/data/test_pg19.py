"""`Pg19Reader` before TFDS is touched: its fingerprint and the not-prepared error.

(Reading books from a prepared copy is in test_tasks.py, through the `pg19` task.)
"""
import pytest

from memorizing_jax.data import pg19
from memorizing_jax.data import sources


@pytest.fixture
def fake_prepared(tmp_path):
  """A data dir laid out like a prepared TFDS pg19 (the files' contents are not read)."""
  folder = tmp_path / "tfds" / pg19.PG19_NAME / pg19.PG19_VERSION
  folder.mkdir(parents=True)
  (folder / "dataset_info.json").write_text("{}")
  for split in sources.SPLITS:
    (folder / f"pg19-{split}.tfrecord-00000-of-00001").write_bytes(split.encode())
  return tmp_path, folder


def test_pg19_reader_serves_the_three_splits():
  reader = pg19.Pg19Reader()
  assert reader.name == "pg19" and tuple(reader.splits) == ("train", "validation", "test")


def test_pg19_fingerprint_changes_with_its_own_split_files_only(fake_prepared):
  data_dir, folder = fake_prepared
  reader = pg19.Pg19Reader()
  before = {split: reader.fingerprint(split, data_dir) for split in sources.SPLITS}
  assert len(set(before.values())) == 3 and all(len(f) == 16 for f in before.values())
  (folder / "pg19-test.tfrecord-00000-of-00001").write_bytes(b"a longer test file")
  after = {split: reader.fingerprint(split, data_dir) for split in sources.SPLITS}
  assert after["train"] == before["train"] and after["validation"] == before["validation"]
  assert after["test"] != before["test"]
  (folder / "dataset_info.json").write_text('{"changed": true}')  # every split's
  assert all(reader.fingerprint(s, data_dir) != after[s] for s in sources.SPLITS)
  with pytest.raises(ValueError, match="unknown split 'dev'"):
    reader.fingerprint("dev", data_dir)


def test_pg19_documents_of_an_unprepared_data_dir_name_the_fix(tmp_path):
  with pytest.raises(FileNotFoundError,
                     match=r"PG-19 is not prepared: .*tfds/pg19/0.1.1 is missing.*"
                           r"--prepare_pg19_from /path/to/copy --data_dir " + str(tmp_path)):
    pg19.Pg19Reader().documents("train", data_dir=tmp_path)
