"""mj.load on a run whose latest checkpoint is damaged: the newest intact one, with a warning."""
import logging
import pathlib
import shutil

import numpy as np
import orbax.checkpoint as ocp
import pytest

import memorizing_jax as mj
from memorizing_jax.checkpointing import discovery, trees

pytestmark = pytest.mark.filterwarnings("ignore:Sharding info not provided")


@pytest.fixture
def workdir(trained_workdir, tmp_path) -> pathlib.Path:
  """A copy of the shared 6-step run (checkpoints 3 and 6)."""
  copy = tmp_path / "run"
  shutil.copytree(trained_workdir, copy)
  assert discovery.committed_steps(str(copy / "checkpoints")) == [3, 6]
  return copy


def truncate_chunks(step_dir: pathlib.Path) -> None:
  """Cuts every data file of the state's OCDBT store (the arrays' chunks, in several
  files) to an eighth, so that the parameters' bytes are gone too (inference reads
  only those)."""
  for chunk in (step_dir / "state").rglob("*"):
    if chunk.is_file() and chunk.parent.name == "d":
      chunk.write_bytes(chunk.read_bytes()[:chunk.stat().st_size // 8])


def saved_params(workdir: pathlib.Path, step: int) -> dict:
  """{name: np.ndarray}, read by orbax alone."""
  tree = ocp.PyTreeCheckpointer().restore(str(workdir / "checkpoints" / str(step) / "state"))
  return {k: np.asarray(v) for k, v in trees.flatten_with_names(tree["params"]).items()}


def test_load_falls_back_past_truncated_chunks(workdir, caplog):
  truncate_chunks(workdir / "checkpoints" / "6")
  with caplog.at_level(logging.WARNING):
    loaded = mj.load(str(workdir))
  assert loaded.step == 3
  expected = saved_params(workdir, 3)
  restored = trees.flatten_with_names(loaded.params)
  assert sorted(restored) == sorted(expected)
  for name, value in expected.items():
    np.testing.assert_array_equal(np.asarray(restored[name]), value, err_msg=name)
  assert f"checkpoint {workdir / 'checkpoints'}/6 is damaged: it does not read (" \
      in caplog.text
  # Inference only reads: the damaged checkpoint stays where it is.
  assert (workdir / "checkpoints" / "6" / "state").is_dir()


def test_load_of_a_named_damaged_step_is_an_error(workdir):
  shutil.rmtree(workdir / "checkpoints" / "6" / "state")
  with pytest.raises(mj.inference.CorruptCheckpointError) as error:
    mj.load(str(workdir), step=6)
  assert sorted(error.value.problems) == [6]
  assert "step 6: it does not read (" in str(error.value)
  assert "mj.load(workdir, step=...)" in str(error.value)


def test_restore_params_lists_every_damaged_step(workdir):
  truncate_chunks(workdir / "checkpoints" / "6")
  (workdir / "checkpoints" / "3" / "state" / "_METADATA").unlink()
  with pytest.raises(mj.inference.CorruptCheckpointError) as error:
    mj.load(str(workdir))
  message = str(error.value)
  assert sorted(error.value.problems) == [3, 6]
  assert "  step 6: it does not read (" in message
  assert "  step 3: it does not read (" in message


def test_a_step_folder_loads_that_step_and_no_other(workdir):
  assert mj.load(str(workdir / "checkpoints" / "3")).step == 3
  truncate_chunks(workdir / "checkpoints" / "6")
  with pytest.raises(mj.inference.CorruptCheckpointError) as error:
    mj.load(str(workdir / "checkpoints" / "6"))
  assert sorted(error.value.problems) == [6]
