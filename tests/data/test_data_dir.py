"""The data directory: argument, then environment, then the default."""
import pathlib

from memorizing_jax.data import data_dir


def test_argument_wins_over_environment(tmp_path, monkeypatch):
  monkeypatch.setenv(data_dir.DATA_DIR_ENV, str(tmp_path / "env"))
  assert data_dir.resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
  assert data_dir.resolve_data_dir() == tmp_path / "env"


def test_default_is_under_the_user_cache(monkeypatch):
  monkeypatch.delenv(data_dir.DATA_DIR_ENV, raising=False)
  assert data_dir.resolve_data_dir() == pathlib.Path.home() / ".cache" / "memorizing_jax"


def test_as_path_expands_local_paths_and_keeps_remote_ones(tmp_path, monkeypatch):
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  monkeypatch.chdir(tmp_path)
  assert data_dir.as_path("~/corpus") == tmp_path / "home" / "corpus"
  assert data_dir.as_path("rel/x") == tmp_path / "rel" / "x"
  assert data_dir.as_path(pathlib.Path("/abs/y")) == pathlib.Path("/abs/y")
  assert str(data_dir.as_path("gs://bucket/a/b")) == "gs://bucket/a/b"


def test_local_copies_dir_and_local_copy_path(tmp_path, monkeypatch):
  monkeypatch.delenv(data_dir.LOCAL_COPIES_ENV, raising=False)
  assert data_dir.local_copies_dir() == (
      pathlib.Path.home() / ".cache" / "memorizing_jax" / "local_copies")
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv(data_dir.LOCAL_COPIES_ENV, "copies")
  assert data_dir.local_copies_dir() == tmp_path / "copies"
  assert data_dir.local_copy_path("gs://bucket/a/b.bin") == tmp_path / "copies/gs/bucket/a/b.bin"
  assert data_dir.local_copy_path("s3://bucket/dir/") == tmp_path / "copies/s3/bucket/dir"
  # A leading slash stays under the copies folder (not the file system root).
  assert data_dir.local_copy_path("gs:///bucket/a") == tmp_path / "copies/gs/bucket/a"


def test_copy_file_between_local_and_remote(local_gcs, tmp_path):
  data = bytes(range(256)) * 300  # several chunks' worth of every byte value
  (tmp_path / "source.bin").write_bytes(data)
  (local_gcs / "bucket").mkdir()
  data_dir.copy_file(tmp_path / "source.bin", "gs://bucket/up.bin")
  assert (local_gcs / "bucket" / "up.bin").read_bytes() == data
  data_dir.copy_file("gs://bucket/up.bin", tmp_path / "down.bin")
  assert (tmp_path / "down.bin").read_bytes() == data


def test_local_file_copies_a_remote_file_once_and_again_when_its_size_changes(
    local_gcs, tmp_path, monkeypatch):
  monkeypatch.setenv(data_dir.LOCAL_COPIES_ENV, str(tmp_path / "copies"))
  assert data_dir.local_file(tmp_path / "here.txt") == tmp_path / "here.txt"  # local: as is
  (local_gcs / "bucket" / "m").mkdir(parents=True)
  (local_gcs / "bucket" / "m" / "x.model").write_bytes(b"first")
  copy = data_dir.local_file("gs://bucket/m/x.model")
  assert copy == tmp_path / "copies" / "gs" / "bucket" / "m" / "x.model"
  assert copy.read_bytes() == b"first"
  assert [p.name for p in copy.parent.iterdir()] == ["x.model"]  # no temporary file left
  # Same size: the copy is reused, not read again (it says "FIRST", not "first").
  copy.write_bytes(b"FIRST")
  assert data_dir.local_file("gs://bucket/m/x.model").read_bytes() == b"FIRST"
  (local_gcs / "bucket" / "m" / "x.model").write_bytes(b"second!")
  assert data_dir.local_file("gs://bucket/m/x.model").read_bytes() == b"second!"
