"""Bad input stops early with a message that names the problem and the fix."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memorizing_jax.data.config import DataConfig
from memorizing_jax.train import checkpoints, loop, loss_guard, train_state
from memorizing_jax.train.workdir_lock import LOCK_NAME


def test_checkpoint_of_another_config_suggests_init_from(tiny, tmp_path):
  """The rejected config names the fix and leaves the workdir's config.gin alone."""
  workdir = str(tmp_path)
  loop.train(workdir=workdir, gin_config="# the config it was trained with\n",
             **tiny.replace(trainer=dict(total_steps=1)).kwargs())
  trained_with = (tmp_path / "config.gin").read_bytes()
  assert trained_with == b"# the config it was trained with\n"
  wider = tiny.replace(model=dict(mlp_dim=128), trainer=dict(total_steps=2))
  with pytest.raises(checkpoints.CheckpointMismatchError) as error:
    loop.train(workdir=workdir, gin_config="# a rejected config\n", **wider.kwargs())
  message = str(error.value)
  assert "mlp.wi.kernel: checkpoint shape (32, 64), model shape (32, 128)" in message
  assert "init_from" in message and "fresh --workdir" in message
  assert (tmp_path / "config.gin").read_bytes() == trained_with
  assert not (tmp_path / LOCK_NAME).exists()  # released on the error


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny, tmp_path):
  workdir = str(tmp_path)
  # A learning rate this large makes the parameters (and then the loss) non-finite.
  exploding = tiny.replace(
      optimizer=dict(clip_gradient_norm=None, multiply_by_parameter_scale=False,
                     schedule=tiny.optimizer.schedule.__class__(peak_learning_rate=1e30,
                                                                warmup_steps=1)),
      mesh=dict(data=1, model=1),  # compiles faster; the behaviour is the same
      trainer=dict(total_steps=6, checkpoint_every=1, log_every=1))
  with pytest.raises(loop.NonFiniteLossError) as error:
    loop.train(workdir=workdir, **exploding.kwargs())
  message = str(error.value)
  bad_step = int(message.split(" at step ")[1].split(";")[0])
  checkpointer = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"))
  good = checkpointer.latest_step()
  checkpointer.close()
  assert good is not None and good < bad_step
  assert f"the last good checkpoint, step {good}, is kept" in message
  assert f"resumes from step {good}" in message
  assert "peak_learning_rate" in message
  # The kept checkpoint restores and its parameters are finite.
  run = loop.build_run(exploding.model, exploding.data, exploding.optimizer, exploding.mesh,
                       exploding.trainer)
  checkpointer = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"))
  state, _ = checkpointer.restore(good, run.layout.abstract)
  checkpointer.close()
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))


def test_loss_above_max_loss_stops_and_says_what_a_rerun_resumes(tiny, tmp_path):
  """A fresh model's loss is about ln(264) = 5.6 nats, above max_loss=1: the run stops
  at its first step, before any save; once checkpoints exist, the error names the last
  one, and the step whose loss was too high is not saved."""
  workdir = str(tmp_path)
  one_device = tiny.replace(mesh=dict(data=1, model=1),
                            trainer=dict(checkpoint_every=1, total_steps=2))
  capped = one_device.replace(trainer=dict(max_loss=1.0, total_steps=4))
  with pytest.raises(loop.LossAboveCeilingError) as error:
    loop.train(workdir=workdir, **capped.kwargs())
  message = str(error.value)
  loss = float(message.split("the training loss was ")[1].split(" ")[0])
  assert 4.5 < loss < 7.0  # ln(264) = 5.58 give or take the initialisation
  assert "at step 1, above loop.TrainerConfig.max_loss=1;" in message
  assert "no checkpoint was saved before it" in message and "from step 0" in message
  assert "resumes" not in message
  checkpointer = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"))
  assert checkpointer.all_steps() == []
  checkpointer.close()
  assert not (tmp_path / LOCK_NAME).exists()

  loop.train(workdir=workdir, **one_device.kwargs())  # no ceiling: checkpoints 1 and 2
  with pytest.raises(loop.LossAboveCeilingError) as error:
    loop.train(workdir=workdir, **capped.kwargs())
  message = str(error.value)
  assert "at step 3, above loop.TrainerConfig.max_loss=1;" in message
  assert "the last good checkpoint, step 2, is kept" in message
  assert "resumes from step 2" in message
  checkpointer = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"))
  assert sorted(checkpointer.all_steps()) == [1, 2]  # step 3 (checkpoint_every=1) not saved
  checkpointer.close()


def test_a_state_that_is_not_finite_is_not_saved(tmp_path):
  checkpointer = checkpoints.Checkpointer(str(tmp_path / "checkpoints"))
  finite = train_state.TrainState(
      step=jnp.array(5), params={"w": jnp.ones((2, 3))},
      opt_state=({"count": jnp.array(5)}, {"v": jnp.zeros(3)}), model_state=None)
  loss_guard.check_state_finite(finite, checkpointer)  # no error
  overflowed = finite.replace(opt_state=({"count": jnp.array(5)},
                                         {"v": jnp.array([0.0, jnp.inf, 1.0])}))
  with pytest.raises(loop.NonFiniteLossError,
                     match=r"optimizer statistics after step 5 are not finite, so they were "
                           r"not saved; no checkpoint was saved before it"):
    loss_guard.check_state_finite(overflowed, checkpointer)
  checkpointer.close()


def test_unwritable_workdir_fails_before_training(tiny, tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  with pytest.raises(PermissionError, match=r"workdir .*a_file/run.* is not writable"):
    loop.train(workdir=str(blocker / "run"), **tiny.kwargs())


def test_full_disk_fails_before_training(tmp_path):
  with pytest.raises(OSError, match=r"MiB free, but a checkpoint needs about"):
    checkpoints.check_workdir_writable(str(tmp_path), needed_bytes=2**62)
  checkpoints.check_workdir_writable(str(tmp_path), needed_bytes=1)  # fits: no error


def test_model_smaller_than_vocabulary_is_named(tiny, tmp_path):
  with pytest.raises(ValueError, match=r"ModelConfig.vocab_size=128 is smaller.*259"):
    loop.train(workdir=str(tmp_path), **tiny.replace(model=dict(vocab_size=128)).kwargs())


def test_batch_that_does_not_split_over_the_mesh_is_named(tiny, tmp_path):
  with pytest.raises(ValueError, match=r"DataConfig.batch_size=6 does not divide over the 4"):
    loop.train(workdir=str(tmp_path), **tiny.replace(data=dict(batch_size=6)).kwargs())


def test_data_positions_are_kept_per_shard():
  positions = {"0": {"epoch": 1, "rows": [3, 4]}}
  gathered = checkpoints.gather_data_positions(positions)
  assert gathered == positions
  assert checkpoints.shard_positions(gathered, [0], 1) == positions
  two = {"0": {"epoch": 1}, "1": {"epoch": 2}}
  assert checkpoints.shard_positions(two, [0, 1], 2) == two
  assert checkpoints.shard_positions(two, [1], 2) == {"1": {"epoch": 2}}
  assert checkpoints.shard_positions(two, [0], 1) is None  # saved with 2 shards


def test_bad_data_shards_are_named():
  with pytest.raises(ValueError, match=r"data_shards=0 must be a positive multiple of the 1"):
    DataConfig(data_shards=0)
  with pytest.raises(ValueError, match=r"batch_size=6 must divide over the 4 data shards"):
    DataConfig(batch_size=6, data_shards=4)
  assert DataConfig(batch_size=8, data_shards=4).process_shards() == [0, 1, 2, 3]
  assert DataConfig().process_shards() == [0]
