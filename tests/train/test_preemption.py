"""SIGKILL (the real entry point in a subprocess), restart, SIGTERM, restart.

The loss curve stitched from the interrupted runs equals an uninterrupted run's.
"""
import os
import signal
import subprocess
import sys
import threading
import time

import gin
import pytest

from memorizing_jax import main

from tiny_runs import entry_point_bindings  # pylint: disable=g-bad-import-order
from event_files import read_scalars  # pylint: disable=g-bad-import-order


def _bindings(total_steps, checkpoint_every):
  return entry_point_bindings(total_steps, checkpoint_every, eval_batches=2,
                              keep_checkpoints=50)


def _in_process(workdir, total_steps, checkpoint_every):
  gin.clear_config()
  try:
    return main.run_training(workdir, ["train.gin"], _bindings(total_steps, checkpoint_every))
  finally:
    gin.clear_config()


def _start(workdir, total_steps, checkpoint_every):
  args = [sys.executable, "-m", "memorizing_jax.main", "--gin_file=train.gin",
          f"--workdir={workdir}"]
  args += [f"--gin_param={b}" for b in _bindings(total_steps, checkpoint_every)]
  return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_checkpoint(process, workdir, step, timeout=240):
  path = os.path.join(workdir, "checkpoints", str(step))
  deadline = time.monotonic() + timeout
  while not os.path.isdir(path):
    if process.poll() is not None:
      raise AssertionError(f"run ended (rc {process.returncode}) before checkpoint {step}:\n"
                           + process.stdout.read()[-4000:])
    if time.monotonic() > deadline:
      process.kill()
      raise AssertionError(f"no checkpoint {step} after {timeout} s")
    time.sleep(0.05)


def _latest(workdir):
  steps = [int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit()]
  return max(steps)


def test_sigkill_then_sigterm_then_resume_gives_the_uninterrupted_curve(github_corpus,
                                                                         tmp_path):
  workdir = str(tmp_path / "interrupted")
  first = _start(workdir, 400, 5)
  _wait_for_checkpoint(first, workdir, 10)
  first.send_signal(signal.SIGKILL)
  first.wait()
  killed_at = _latest(workdir)

  # Resume in this process; SIGTERM it once it has saved a newer checkpoint.
  def terminate_after_next_checkpoint():
    path = os.path.join(workdir, "checkpoints", str(killed_at + 5))
    while not os.path.isdir(path):
      time.sleep(0.02)
    os.kill(os.getpid(), signal.SIGTERM)

  watcher = threading.Thread(target=terminate_after_next_checkpoint, daemon=True)
  watcher.start()
  second = _in_process(workdir, 400, 5)
  watcher.join()
  assert second.stopped_by_signal and min(second.train_losses) == killed_at + 1
  stopped_at = second.step
  assert stopped_at >= killed_at + 5 and _latest(workdir) == stopped_at

  total = stopped_at + 4
  third = _in_process(workdir, total, 100)
  assert sorted(third.train_losses) == list(range(stopped_at + 1, total + 1))
  expected = _in_process(str(tmp_path / "uninterrupted"), total, 100).train_losses
  assert third.train_losses == {s: expected[s] for s in third.train_losses}
  curve = read_scalars(os.path.join(workdir, "train"))["loss"]
  assert {s: curve[s] for s in range(1, total + 1)} == pytest.approx(expected, rel=1e-6)
