"""A run's workdir on gs://: finding its checkpoints and its gin config.

`local_gcs` (tests/conftest.py) puts gs://bucket/... opened through etils.epath in a
local folder. Orbax reads gs:// through TensorStore, which the stand-in does not
cover: restoring the parameters from a bucket is not tested here.
"""
import pytest

from memorizing_jax.checkpointing import fallback
from memorizing_jax.data import data_dir
from memorizing_jax.inference import checkpoint


@pytest.fixture
def gs_run(local_gcs):
  """gs://bucket/run: checkpoints of steps 10 and 200, one still being written, and a
  config.gin; returns the local folder behind it."""
  run = local_gcs / "bucket" / "run"
  for name in ("10", "200", "300.orbax-checkpoint-tmp-1"):
    (run / "checkpoints" / name).mkdir(parents=True)
  (run / "config.gin").write_text("TASK = 'remote'\n")
  return run


def test_a_gs_workdir_is_kept_as_given(gs_run):
  del gs_run
  assert data_dir.absolute_location("gs://bucket/run") == "gs://bucket/run"
  assert checkpoint.checkpoint_dir("gs://bucket/run") == "gs://bucket/run/checkpoints"
  assert checkpoint.checkpoint_dir("gs://bucket/run/checkpoints") == (
      "gs://bucket/run/checkpoints")


def test_steps_are_found_in_a_gs_workdir(gs_run):
  del gs_run
  assert fallback.committed_steps("gs://bucket/run/checkpoints") == [10, 200]
  assert checkpoint.checkpoint_steps("gs://bucket/run") == [10, 200]
  assert checkpoint.resolve_step("gs://bucket/run") == ("gs://bucket/run/checkpoints", 200)
  with pytest.raises(checkpoint.NoCheckpointError, match="gs://bucket/other"):
    checkpoint.resolve_step("gs://bucket/other")


def test_the_gin_config_is_read_from_a_gs_workdir(gs_run):
  assert checkpoint.operative_gin("gs://bucket/run/checkpoints", 200) == "TASK = 'remote'\n"
  (gs_run / "checkpoints" / "200" / "config").mkdir()
  (gs_run / "checkpoints" / "200" / "config" / "metadata").write_text('{"gin": "stored"}')
  assert checkpoint.operative_gin("gs://bucket/run/checkpoints", 200) == "stored"


def test_a_local_workdir_is_made_absolute(tmp_path, monkeypatch):
  (tmp_path / "run" / "checkpoints" / "5").mkdir(parents=True)
  monkeypatch.chdir(tmp_path)
  assert checkpoint.checkpoint_dir("run") == str(tmp_path / "run" / "checkpoints")
  assert checkpoint.checkpoint_steps("run") == [5]
