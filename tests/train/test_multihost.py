"""Two processes through launch/local.sh against one process with the same global batch.

The 2-process run is stopped by a SIGTERM to one of its processes: both agree to
save a checkpoint at the same step and stop.

The data are split into 2 shards in both runs (`DataConfig.data_shards = 2`): one
process reads both, or each of 2 processes reads one, so the global batches are
the same and so must be the losses. The runs hand checkpoints to each other, so
the same tests show restores across topologies: 1 process -> 2 processes
(the 2-process run starts from the 1-process run's step-2 checkpoint) and
2 processes -> 1 process (the 1-process run resumes the 2-process step-4 one).

The agreement helpers the loop and the data use (`any_process`, `largest_on_any_process`,
`on_process_zero`) are also checked alone: one process, and several with the gather
simulated; and `DistributedConfig.explicit`.
"""
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import gin
import jax
import numpy as np
import pytest

from memorizing_jax import main
from memorizing_jax.train import multihost

from tiny_runs import entry_point_bindings  # pylint: disable=g-bad-import-order
from event_files import read_scalars  # pylint: disable=g-bad-import-order

LOCAL = pathlib.Path(main.__file__).resolve().parent.parent / "launch" / "local.sh"
STEPS = 6


def _bindings(total_steps, stop_check_every=10):
  return entry_point_bindings(
      total_steps, 2, eval_batches=1, keep_checkpoints=10,
      extra=["data_config.DataConfig.data_shards = 2",
             f"loop.TrainerConfig.stop_check_every = {stop_check_every}"])


@pytest.fixture(scope="module")
def github_env(corpus, tmp_path_factory):
  """The test corpus as the `github` task, here and in subprocesses."""
  from memorizing_jax.data import tasks  # pylint: disable=g-import-not-at-top
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv("MEMORIZING_JAX_GITHUB_DIR", str(tasks.get_reader(corpus[0]).root))
    patch.setenv("MEMORIZING_JAX_DATA_DIR", str(tmp_path_factory.mktemp("multihost_data")))
    yield


def _one_process(workdir, total_steps):
  gin.clear_config()
  try:
    return main.run_training(str(workdir), ["train.gin"], _bindings(total_steps))
  finally:
    gin.clear_config()


def _two_processes_until_sigterm(workdir, after_step, total_steps=1000):
  """Runs 2 processes x 4 CPU devices; once checkpoint `after_step` is written, sends
  SIGTERM to process 1 only. Returns the finished `local.sh` process's stdout."""
  args = ["bash", str(LOCAL), "--python", sys.executable, "--devices_per_process", "4", "2",
          "--gin_file=train.gin", f"--workdir={workdir}", "--distributed_timeout=120"]
  args += [f"--gin_param={b}" for b in _bindings(total_steps, stop_check_every=2)]
  launcher = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  logs = pathlib.Path(workdir, "logs")
  checkpoint = pathlib.Path(workdir, "checkpoints", str(after_step))
  deadline = time.monotonic() + 400
  while not checkpoint.is_dir() and launcher.poll() is None and time.monotonic() < deadline:
    time.sleep(0.05)
  if checkpoint.is_dir():
    os.kill(int((logs / "process_1.pid").read_text()), signal.SIGTERM)
  try:
    out, err = launcher.communicate(timeout=max(deadline - time.monotonic(), 1))
  except subprocess.TimeoutExpired:
    launcher.send_signal(signal.SIGTERM)
    out, err = launcher.communicate()
  text = "".join(f"\n--- {p.name}\n" + p.read_text()[-3000:] for p in sorted(logs.glob("*.log")))
  assert launcher.returncode == 0 and checkpoint.is_dir(), f"{err[-2000:]}{text}"
  return out


def _checkpoints_up_to(source, target, step):
  """A workdir holding `source`'s checkpoints up to `step` (what a kill leaves)."""
  shutil.copytree(os.path.join(source, "checkpoints"), os.path.join(target, "checkpoints"))
  for name in os.listdir(os.path.join(target, "checkpoints")):
    if name.isdigit() and int(name) > step:
      shutil.rmtree(os.path.join(target, "checkpoints", name))


@pytest.fixture(scope="module")
def one_process(github_env, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("one_process")
  return _one_process(workdir, STEPS), str(workdir)


@pytest.fixture(scope="module")
def two_processes(one_process, tmp_path_factory):
  """2 processes x 4 CPU devices, resuming the 1-process run's step-2 checkpoint, stopped
  by a SIGTERM to process 1 once they have saved step 6."""
  workdir = str(tmp_path_factory.mktemp("two_processes"))
  _checkpoints_up_to(one_process[1], workdir, 2)
  return _two_processes_until_sigterm(workdir, after_step=STEPS), workdir


def test_two_processes_give_the_losses_of_one_process(one_process, two_processes):
  expected = one_process[0].train_losses
  _, workdir = two_processes
  losses = read_scalars(os.path.join(workdir, "train"))["loss"]
  assert min(losses) == 3  # resumed the 1-process run's step 2
  for step in range(3, STEPS + 1):
    print(f"step {step}: 1 process {expected[step]:.7f}, 2 processes {losses[step]:.7f}")
    assert losses[step] == pytest.approx(expected[step], rel=2e-5), step


def test_a_sigterm_to_one_process_stops_both_at_one_saved_step(two_processes):
  out, workdir = two_processes
  assert "all 2 processes finished" in out
  logs = pathlib.Path(workdir, "logs")
  stops = [re.search(r"stopped by signal at step (\d+)", (logs / f"process_{i}.log").read_text())
           for i in (0, 1)]
  assert all(stops), "a process did not report stopping by signal"
  step = int(stops[0].group(1))
  assert int(stops[1].group(1)) == step and step > STEPS and step % 2 == 0
  saved = [int(p.name) for p in pathlib.Path(workdir, "checkpoints").iterdir() if p.name.isdigit()]
  assert max(saved) == step


def test_two_processes_write_metrics_and_checkpoints_once(two_processes):
  _, workdir = two_processes
  assert len(list(pathlib.Path(workdir, "train").glob("events.out.tfevents.*"))) == 1
  assert (pathlib.Path(workdir) / "config.gin").is_file()
  checkpoints = pathlib.Path(workdir, "checkpoints")
  assert {2, 4, 6} <= {int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()}
  # Both processes' data positions reached the primary, one per shard.
  data = json.loads(next((checkpoints / "6" / "data").glob("*")).read_text())
  assert sorted(data) == ["0", "1"] and data["0"] != data["1"]
  logs = sorted(pathlib.Path(workdir, "logs").glob("process_*.log"))
  assert [p.name for p in logs] == ["process_0.log", "process_1.log"]
  assert "process 1 of 2" in logs[1].read_text()


def test_one_process_resumes_a_two_process_checkpoint(one_process, two_processes, tmp_path):
  """Arrays saved from 2 processes' devices are read back resharded onto 1 process's; the
  data position of both shards continues, so steps 5 and 6 repeat exactly."""
  expected = one_process[0].train_losses
  _checkpoints_up_to(two_processes[1], str(tmp_path), 4)
  resumed = _one_process(tmp_path, STEPS)
  assert sorted(resumed.train_losses) == [5, 6]
  for step in (5, 6):
    assert resumed.train_losses[step] == pytest.approx(expected[step], rel=2e-5), step


def test_one_process_agrees_with_itself():
  assert multihost.any_process(np.bool_(True)) is True
  assert multihost.any_process(False) is False
  largest = multihost.largest_on_any_process(np.int64(5))
  assert largest == 5 and type(largest) is int  # pylint: disable=unidiomatic-typecheck
  assert multihost.on_process_zero(lambda: 42, RuntimeError("elsewhere")) == 42
  with pytest.raises(ValueError, match="its own error"):
    multihost.on_process_zero(lambda: int("its own error"), RuntimeError("elsewhere"))


def _as_process(monkeypatch, index, others):
  """This process as process `index` of 1 + len(others), the others contributing the
  values `others` to every gather (the collectives' exchange, simulated)."""
  monkeypatch.setattr(jax, "process_count", lambda: 1 + len(others))
  monkeypatch.setattr(jax, "process_index", lambda: index)
  monkeypatch.setattr(multihost.multihost_utils, "process_allgather", lambda x: np.stack(
      [np.asarray(x)] + [np.full_like(np.asarray(x), v) for v in others]))


def test_several_processes_agree_on_any_flag_and_the_largest_value(monkeypatch):
  _as_process(monkeypatch, 0, others=[0, 1])
  assert multihost.any_process(False) is True  # process 2 says yes
  _as_process(monkeypatch, 0, others=[0, 0])
  assert multihost.any_process(False) is False and multihost.any_process(True) is True
  _as_process(monkeypatch, 1, others=[7, 2])
  assert multihost.largest_on_any_process(3) == 7
  assert multihost.largest_on_any_process(9) == 9


def test_on_process_zero_runs_there_only_and_fails_everywhere_together(monkeypatch):
  called = []
  elsewhere = RuntimeError("process 0 failed")
  _as_process(monkeypatch, 1, others=[0])  # process 1; process 0 succeeded
  assert multihost.on_process_zero(lambda: called.append(1), elsewhere) is None
  assert called == []
  _as_process(monkeypatch, 1, others=[1])  # process 0 failed
  with pytest.raises(RuntimeError) as error:
    multihost.on_process_zero(lambda: called.append(1), elsewhere)
  assert error.value is elsewhere and called == []
  _as_process(monkeypatch, 0, others=[0])  # process 0 fails: it raises its own error
  with pytest.raises(KeyError, match="mine"):
    multihost.on_process_zero(lambda: {}["mine"], elsewhere)


@pytest.mark.parametrize("kwargs, explicit", [
    ({}, False),
    ({"mode": "on"}, False),  # "on" alone lets JAX detect the cluster: nothing given
    ({"process_id": 0}, False),  # a process id alone names no run
    ({"coordinator_address": "10.0.0.2:8476"}, True),
    ({"num_processes": 2}, True),
    ({"mode": "off", "coordinator_address": "h:1", "num_processes": 2, "process_id": 1}, True),
])
def test_explicit_means_a_coordinator_address_or_a_process_count_was_given(kwargs, explicit):
  assert multihost.DistributedConfig(**kwargs).explicit is explicit
