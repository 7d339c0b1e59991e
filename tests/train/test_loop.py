"""The training loop end to end on a tiny model: resume, mesh, fine-tuning, events."""
import math
import os
import shutil

import pytest

from memorizing_jax.train import checkpoints, loop

from event_files import read_scalars  # pylint: disable=g-bad-import-order


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory):
  """An uninterrupted 8-step run on the data 4 x model 2 mesh, checkpoints at 4 and 8."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  return loop.train(workdir=workdir, **tiny.kwargs()), workdir


def test_reference_run_learns_and_evaluates(reference):
  result, workdir = reference
  assert sorted(result.train_losses) == list(range(1, 9))
  assert all(math.isfinite(v) for v in result.train_losses.values())
  assert result.train_losses[8] < result.train_losses[1]
  final = result.evals[8]
  # Perplexity, bits and loss are one number in three units.
  assert final["perplexity"] == pytest.approx(math.exp(final["loss"]), rel=1e-6)
  assert final["bits_per_token"] == pytest.approx(final["loss"] / math.log(2), rel=1e-6)
  assert 0.0 <= final["accuracy"] <= 1.0 and final["tokens"] > 0
  assert sorted(checkpoints.Checkpointer(os.path.join(workdir, "checkpoints")).all_steps()) \
      == [4, 8]


def test_tensorboard_events_hold_the_logged_metrics(reference):
  result, workdir = reference
  train = read_scalars(os.path.join(workdir, "train"))
  assert train["loss"] == pytest.approx(result.train_losses, rel=1e-6)
  for tag in ("perplexity", "learning_rate", "grad_norm", "tokens_per_s", "step_time_s",
              "tokens_per_s_per_device",
              "memory/layer_1/gate_head0", "memory/layer_1/memory_share",
              "memory/layer_1/memory_fill", "memory/layer_1/mean_distance"):
    assert tag in train, tag
  # One step per interval (log_every=1), on 8 devices; a CPU's peak is not known.
  assert train["tokens_per_s"][3] == pytest.approx(8 * 16 / train["step_time_s"][3], rel=1e-5)
  assert train["tokens_per_s_per_device"][3] == pytest.approx(train["tokens_per_s"][3] / 8)
  assert "mfu" not in train
  # The memory fills as the rows read on: 16 tokens per step into 64 slots.
  assert train["memory/layer_1/memory_fill"][1] == 0.0
  assert train["memory/layer_1/memory_fill"][2] > 0.0
  evals = read_scalars(os.path.join(workdir, "eval"))
  assert evals["perplexity"][8] == pytest.approx(result.evals[8]["perplexity"], rel=1e-6)


def test_evaluating_and_profiling_mid_run_leave_training_unchanged(reference, tiny, tmp_path):
  """An evaluation at step 4 parks the training memories in host memory and brings
  them back, and steps 2-3 are traced: the losses equal the plain run's."""
  expected, _ = reference
  result = loop.train(workdir=str(tmp_path), **tiny.replace(
      trainer=dict(eval_every=4, profile_steps=2)).kwargs())
  assert result.train_losses == expected.train_losses
  assert sorted(result.evals) == [4, 8]
  assert result.evals[8] == pytest.approx(expected.evals[8], rel=1e-6)
  traces = list((tmp_path / "profile").rglob("*.xplane.pb"))
  assert len(traces) == 1 and traces[0].stat().st_size > 0


def test_resume_after_a_kill_repeats_the_uninterrupted_losses(reference, tiny, tmp_path):
  """A run killed after step 6 with its last checkpoint at step 4 resumes from step 4:
  the restarted run's losses (steps 5..8) and final evaluation equal the uninterrupted
  run's exactly."""
  expected, _ = reference
  workdir = str(tmp_path)
  first = loop.train(workdir=workdir, **tiny.replace(trainer=dict(total_steps=6)).kwargs())
  assert first.train_losses == {s: expected.train_losses[s] for s in range(1, 7)}
  # What a SIGKILL after step 6 leaves: nothing newer than the step-4 checkpoint.
  shutil.rmtree(os.path.join(workdir, "checkpoints", "6"))
  resumed = loop.train(workdir=workdir, **tiny.kwargs())
  assert resumed.train_losses == {s: expected.train_losses[s] for s in range(5, 9)}
  assert resumed.evals[8] == expected.evals[8]


def test_eight_devices_match_one_device(reference, tiny, tmp_path):
  expected, _ = reference
  single = loop.train(workdir=str(tmp_path),
                      **tiny.replace(mesh=dict(data=1, model=1),
                                     trainer=dict(total_steps=4)).kwargs())
  for step in range(1, 5):
    assert single.train_losses[step] == pytest.approx(expected.train_losses[step], rel=2e-5)


def test_memory_split_over_devices_trains_and_resumes_on_another_split(reference, tiny,
                                                                       tmp_path):
  """The memory's slots split 4 ways (mesh data 2 x memory 4), killed after step 6 with
  its last checkpoint at step 4, resumed with them split 2 ways (data 4 x memory 2):
  every loss and the final evaluation are the data 4 x model 2 run's."""
  expected, _ = reference
  workdir = str(tmp_path)
  first = loop.train(workdir=workdir, **tiny.replace(
      mesh=dict(data=2, model=1, memory=4), trainer=dict(total_steps=6)).kwargs())
  for step in range(1, 7):
    assert first.train_losses[step] == pytest.approx(expected.train_losses[step], rel=2e-5)
  shutil.rmtree(os.path.join(workdir, "checkpoints", "6"))
  resumed = loop.train(workdir=workdir, **tiny.replace(
      mesh=dict(data=4, model=1, memory=2)).kwargs())
  for step in range(5, 9):
    assert resumed.train_losses[step] == pytest.approx(expected.train_losses[step], rel=2e-5)
  assert resumed.evals[8]["loss"] == pytest.approx(expected.evals[8]["loss"], rel=2e-5)


@pytest.fixture(scope="module")
def no_memory_source(tiny, tmp_path_factory):
  """A 3-step run of the same model without the kNN memory (XL cache only), on one
  device: loading it into the 8-device run also reshards it."""
  workdir = str(tmp_path_factory.mktemp("no_memory"))
  loop.train(workdir=workdir, **tiny.replace(model=dict(knn_layers=()),
                                             mesh=dict(data=1, model=1),
                                             trainer=dict(total_steps=3)).kwargs())
  return workdir


def test_fine_tune_memory_model_from_no_memory_checkpoint(reference, no_memory_source, tiny,
                                                          tmp_path, caplog):
  """Table 5 / section 4.5: a model trained without memory starts a memory model."""
  scratch, _ = reference  # the memory model from a fresh initialisation
  with caplog.at_level("INFO"):
    tuned = loop.train(workdir=str(tmp_path), init_from=no_memory_source,
                       **tiny.replace(trainer=dict(total_steps=2)).kwargs())
  assert all(math.isfinite(v) for v in tuned.train_losses.values())
  # Trained parameters predict better than the fresh initialisation.
  assert tuned.train_losses[1] < scratch.train_losses[1]
  log = caplog.text
  assert "initialized layer_1.attention.memory.gate_bias" in log
  assert "loaded" in log and "initialised 1 new" in log
