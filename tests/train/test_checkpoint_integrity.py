"""A damaged latest checkpoint: the run resumes from the newest intact one, saying so."""
import json
import re
import logging
import os
import pathlib
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from memorizing_jax.checkpointing import trees
from memorizing_jax.train import checkpoints, inputs, loop

TOTAL_STEPS = 4  # checkpoints every step, 3 kept: 2, 3, 4
pytestmark = pytest.mark.filterwarnings("ignore:Sharding info not provided")  # saved_params


@pytest.fixture(scope="module")
def intact(tiny, tmp_path_factory):
  """(configs, workdir, result) of a 4-step run that keeps checkpoints 2, 3 and 4."""
  configs = tiny.replace(trainer=dict(total_steps=TOTAL_STEPS, checkpoint_every=1,
                                      keep_checkpoints=3, eval_batches=1))
  workdir = tmp_path_factory.mktemp("intact")
  result = loop.train(workdir=str(workdir), **configs.kwargs())
  return configs, workdir, result


@pytest.fixture(scope="module")
def run(intact):
  configs = intact[0]
  return loop.build_run(configs.model, configs.data, configs.optimizer, configs.mesh,
                        configs.trainer)


def saved_params(workdir: pathlib.Path, step: int) -> dict:
  """The parameters of checkpoint `step`, read by orbax alone: {name: np.ndarray}."""
  tree = ocp.PyTreeCheckpointer().restore(str(workdir / "checkpoints" / str(step) / "state"))
  return {k: np.asarray(v) for k, v in trees.flatten_with_names(tree["params"]).items()}


def saved_positions(workdir: pathlib.Path, step: int) -> dict:
  return json.loads((workdir / "checkpoints" / str(step) / "data" / "metadata").read_text())


def chunk_files(step_dir: pathlib.Path) -> list:
  """The data files of the state's OCDBT store (array chunks and b-tree nodes), largest
  (the one holding the arrays) last."""
  return sorted((p for p in (step_dir / "state").rglob("*")
                 if p.is_file() and p.parent.name == "d"), key=lambda p: p.stat().st_size)


def truncate_chunks(step_dir):
  """Cuts every data file to an eighth (which file holds which array varies)."""
  for chunk in chunk_files(step_dir):
    chunk.write_bytes(chunk.read_bytes()[:chunk.stat().st_size // 8])


def flip_chunk_bytes(step_dir):
  """Flips two bytes in the middle of every data file: orbax may or may not notice
  (a flip inside a stored array's bytes reads back silently)."""
  for chunk in chunk_files(step_dir):
    data = bytearray(chunk.read_bytes())
    middle = len(data) // 2
    data[middle] ^= 0xFF
    data[middle + 1] ^= 0x0F
    chunk.write_bytes(bytes(data))


def change_one_value(step_dir):
  """Silent damage that orbax cannot notice: the state's arrays rewritten, readable,
  with one parameter element changed (only the digest tells)."""
  checkpointer = ocp.PyTreeCheckpointer()
  tree = checkpointer.restore(str(step_dir / "state"))
  kernel = np.array(tree["params"]["embed"]["embedding"])
  kernel[3, 5] += 1.0
  tree["params"]["embed"]["embedding"] = kernel
  shutil.rmtree(step_dir / "state")
  checkpointer.save(str(step_dir / "state"), jax.tree.map(np.asarray, tree))


def delete_state_metadata(step_dir):
  (step_dir / "state" / "_METADATA").unlink()


def delete_data_position(step_dir):
  shutil.rmtree(step_dir / "data")


def delete_state(step_dir):
  shutil.rmtree(step_dir / "state")


def copy_of(intact, tmp_path) -> pathlib.Path:
  workdir = tmp_path / "run"
  shutil.copytree(intact[1], workdir)
  return workdir


def resume(configs, run, workdir):
  """(state, stream position) as the trainer resumes them in `workdir`."""
  vocabulary = inputs.load_vocabulary(configs.data)
  stream = inputs.make_stream(configs.data, configs.model.segment_length, vocabulary,
                              mode="train")
  checkpointer = checkpoints.Checkpointer(str(workdir / "checkpoints"))
  try:
    state = loop.restore_or_initialize(run, checkpointer, stream, seed=0, init_from=None)
  finally:
    checkpointer.close()
  return state, stream.state()


@pytest.mark.parametrize("damage, what", [
    (truncate_chunks, "it does not read"),
    (flip_chunk_bytes, "(it does not read|its arrays fail the digest check)"),
    (change_one_value, "its arrays fail the digest check \\(params.embed.embedding: its values"),
    (delete_state_metadata, "it does not read"),
    (delete_data_position, "it does not read"),
    (delete_state, "it does not read"),
])
def test_damaged_latest_checkpoint_falls_back_to_the_previous(intact, run, tmp_path, caplog,
                                                              damage, what):
  workdir = copy_of(intact, tmp_path)
  damage(workdir / "checkpoints" / "4")
  with caplog.at_level(logging.WARNING):
    state, position = resume(intact[0], run, workdir)
  assert int(state.step) == 3
  expected = saved_params(workdir, 3)
  restored = trees.flatten_with_names(state.params)
  assert sorted(restored) == sorted(expected)
  for name, value in expected.items():
    np.testing.assert_array_equal(np.asarray(restored[name]), value, err_msg=name)
  assert position == saved_positions(workdir, 3)
  warning = next(r.getMessage() for r in caplog.records if "is damaged" in r.getMessage())
  assert re.match(f"checkpoint {re.escape(str(workdir / 'checkpoints'))}/4 is damaged: {what}",
                  warning), warning
  # Moved aside, so that the run saves step 4 again.
  assert not (workdir / "checkpoints" / "4").exists()
  assert (workdir / "checkpoints" / "4.damaged").is_dir()


def test_resumed_run_retrains_the_damaged_step_exactly(intact, tmp_path):
  """After a truncated step-4 checkpoint, training resumes at 3, repeats step 4's loss
  exactly and saves a new, intact step 4."""
  configs, _, reference = intact
  workdir = copy_of(intact, tmp_path)
  truncate_chunks(workdir / "checkpoints" / "4")
  resumed = loop.train(workdir=str(workdir), **configs.kwargs())
  assert resumed.train_losses == {4: reference.train_losses[4]}
  assert sorted(int(d.name) for d in (workdir / "checkpoints").iterdir()
                if d.name.isdigit()) == [2, 3, 4]
  original = saved_params(intact[1], 4)
  for name, value in saved_params(workdir, 4).items():
    np.testing.assert_array_equal(value, original[name], err_msg=name)


def test_all_checkpoints_damaged_lists_each_step(intact, run, tmp_path):
  workdir = copy_of(intact, tmp_path)
  change_one_value(workdir / "checkpoints" / "4")
  delete_state(workdir / "checkpoints" / "3")
  delete_data_position(workdir / "checkpoints" / "2")
  with pytest.raises(checkpoints.CorruptCheckpointError) as error:
    resume(intact[0], run, workdir)
  assert sorted(error.value.problems) == [2, 3, 4]
  message = str(error.value)
  lines = message.splitlines()
  assert lines[0] == f"no intact checkpoint in {workdir / 'checkpoints'}; every one is damaged:"
  assert lines[1].startswith("  step 4: its arrays fail the digest check (")
  assert lines[2].startswith("  step 3: it does not read (")
  assert lines[3].startswith("  step 2: it does not read (")
  assert "another --workdir" in message and "init_from" in message
  # Nothing was moved or deleted: the damage is left for the user to inspect.
  assert sorted(d.name for d in (workdir / "checkpoints").iterdir()) == ["2", "3", "4"]


def test_checkpoint_without_digests_restores_unverified(intact, run, tmp_path, caplog):
  """A checkpoint saved before digests were recorded still restores, with a note."""
  workdir = copy_of(intact, tmp_path)
  shutil.rmtree(workdir / "checkpoints" / "4" / "digests")
  with caplog.at_level(logging.WARNING):
    state, _ = resume(intact[0], run, workdir)
  assert int(state.step) == 4
  assert f"checkpoint {workdir / 'checkpoints'}/4 has no array digests" in caplog.text
  assert "is damaged" not in caplog.text


def test_digests_are_saved_for_every_array(intact, run):
  """Each checkpoint holds one digest per array of the train state."""
  workdir = intact[1]
  stored = json.loads((workdir / "checkpoints" / "4" / "digests" / "metadata").read_text())
  names = set(trees.flatten_with_names(run.layout.abstract))
  assert set(stored["arrays"]) == names
  assert stored["arrays"]["step"].startswith("int32[]:")
