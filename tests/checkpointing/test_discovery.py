"""Finding a run's checkpoints: steps, a workdir / checkpoints folder / step folder
resolved to one step, and the gin config; local and on gs://.

`local_gcs` (tests/conftest.py) puts gs://bucket/... opened through etils.epath in a
local folder. Orbax reads gs:// through TensorStore, which the stand-in does not
cover: restoring from a bucket is not tested here.
"""
import pathlib

import pytest

from memorizing_jax.checkpointing import discovery
from memorizing_jax.checkpointing.discovery import CheckpointLocation, NoCheckpointError
from memorizing_jax.data import data_dir


def make_steps(checkpoints, names, with_state=True):
  for name in names:
    (checkpoints / name).mkdir(parents=True)
    if with_state and name.isdigit():
      (checkpoints / name / "state").mkdir()


@pytest.fixture
def gs_run(local_gcs):
  """gs://bucket/run: checkpoints of steps 10 and 200, one still being written, and a
  config.gin; returns the local folder behind it."""
  run = local_gcs / "bucket" / "run"
  make_steps(run / "checkpoints", ["10", "200", "300.orbax-checkpoint-tmp-1"])
  (run / "config.gin").write_text("TASK = 'remote'\n")
  return run


def test_steps_are_found_in_a_gs_workdir(gs_run):
  del gs_run
  assert discovery.committed_steps("gs://bucket/run/checkpoints") == [10, 200]
  assert discovery.committed_steps("gs://bucket/none") == []
  newest = CheckpointLocation("gs://bucket/run/checkpoints", 200, chosen=False)
  assert discovery.resolve("gs://bucket/run") == newest
  assert discovery.resolve("gs://bucket/run/checkpoints") == newest
  assert discovery.resolve("gs://bucket/run", 10) == ("gs://bucket/run/checkpoints", 10, True)
  assert discovery.resolve("gs://bucket/run/checkpoints/10") == (
      "gs://bucket/run/checkpoints", 10, True)
  with pytest.raises(NoCheckpointError, match="gs://bucket/other: train a run there"):
    discovery.resolve("gs://bucket/other")


def test_the_gin_config_is_read_from_a_gs_workdir(gs_run):
  assert discovery.operative_gin("gs://bucket/run/checkpoints", 200) == "TASK = 'remote'\n"
  (gs_run / "checkpoints" / "200" / "config").mkdir()
  (gs_run / "checkpoints" / "200" / "config" / "metadata").write_text('{"gin": "stored"}')
  assert discovery.operative_gin("gs://bucket/run/checkpoints", 200) == "stored"
  (gs_run / "config.gin").unlink()
  with pytest.raises(NoCheckpointError, match="configuration is unknown"):
    discovery.operative_gin("gs://bucket/run/checkpoints", 10)


def test_a_local_workdir_is_made_absolute_as_the_data_package_does(tmp_path, monkeypatch):
  make_steps(tmp_path / "run" / "checkpoints", ["5"])
  monkeypatch.chdir(tmp_path)
  location = discovery.resolve("run")
  assert location == (str(tmp_path / "run" / "checkpoints"), 5, False)
  assert location.directory == data_dir.absolute_location("run/checkpoints")
  assert data_dir.absolute_location("gs://bucket/run") == "gs://bucket/run"


def test_a_step_folder_names_its_step(tmp_path):
  checkpoints = tmp_path / "2024" / "checkpoints"
  make_steps(checkpoints, ["3", "6"])
  assert discovery.resolve(str(checkpoints / "3")) == (str(checkpoints), 3, True)
  assert discovery.resolve(str(checkpoints / "3"), 3).step == 3
  with pytest.raises(NoCheckpointError, match="is the checkpoint of step 3, not of step 6"):
    discovery.resolve(str(checkpoints / "3"), 6)
  # A workdir whose name is a number is not a step folder: it holds no state item.
  assert discovery.resolve(str(tmp_path / "2024")) == (str(checkpoints), 6, False)


def test_a_missing_step_lists_those_there(tmp_path):
  make_steps(tmp_path / "checkpoints", ["3", "6"])
  with pytest.raises(NoCheckpointError, match=r"no checkpoint of step 4 in .*; it holds "
                                              r"steps \[3, 6\]"):
    discovery.resolve(str(tmp_path), 4)
  with pytest.raises(NoCheckpointError, match="no checkpoint in"):
    discovery.resolve(str(tmp_path / "empty"))


def test_a_path_with_a_scheme_is_remote():
  for remote in ("gs://bucket/run", "s3://b/x", "file:///tmp/run"):
    assert discovery.is_remote(remote), remote
  for local in ("/tmp/run", "run/checkpoints", "C:\\runs\\a", pathlib.Path("/gs:/x")):
    assert not discovery.is_remote(local), local
