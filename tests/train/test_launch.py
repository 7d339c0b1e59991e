"""The launch scripts' commands and errors, and the multi-process start-up's errors.

Nothing here reaches a cloud: tpu_pod.sh only prints its gcloud commands (--dry-run).
"""
import os
import pathlib
import shlex
import shutil
import socket
import subprocess
import sys
import time

import pytest

from memorizing_jax import main
from memorizing_jax.train import multihost

LAUNCH = pathlib.Path(main.__file__).resolve().parent.parent / "launch"
V4_32 = ["--name", "mt-arxiv", "--zone", "us-central2-b", "--accelerator", "v4-32",
         "--workdir", "gs://my-bucket/runs/arxiv"]
TRAIN = ["--gin_file=gin/experiments/table4_512_xl_mem8k.gin", "--gin_file=gin/data/arxiv.gin",
         "--gin_param=loop.TrainerConfig.total_steps = 1000"]


def _script(name, *args, env=None):
  env = dict(os.environ if env is None else env, PYTHON=sys.executable)
  return subprocess.run([shutil.which("bash"), str(LAUNCH / name), *args],
                        capture_output=True, text=True,
                        timeout=120, env=env, check=False)


@pytest.fixture(scope="module")
def no_gcloud_env(tmp_path_factory):
  """A PATH with only `dirname`: gcloud can never run from these tests (a dry run must
  not need it; a real run must say how to get it)."""
  bin_dir = tmp_path_factory.mktemp("bin")
  os.symlink(shutil.which("dirname"), bin_dir / "dirname")
  return dict(os.environ, PATH=str(bin_dir))


def test_tpu_pod_dry_run_prints_the_gcloud_commands_for_a_v4_32(no_gcloud_env):
  done = _script("tpu_pod.sh", "--dry-run", *V4_32, "--", *TRAIN, env=no_gcloud_env)
  assert done.returncode == 0, done.stderr
  commands = [shlex.split(line) for line in done.stdout.strip().splitlines()]
  assert [c[:5] for c in commands if c[0] == "gcloud"] == [
      ["gcloud", "compute", "tpus", "tpu-vm", verb]
      for verb in ("create", "scp", "ssh", "ssh", "ssh", "ssh", "delete")]
  compile_check, create, archive, copy, install, train, follow, check, delete = commands
  # First, here: the training step compiled for a v4-32's 16 chips, with the same flags.
  assert compile_check[1:] == ["-m", "memorizing_jax.compile", "--topology=v4:2x2x4", *TRAIN]
  assert create == ["gcloud", "compute", "tpus", "tpu-vm", "create", "mt-arxiv",
                    "--zone=us-central2-b", "--accelerator-type=v4-32",
                    "--version=tpu-ubuntu2204-base"]
  assert archive[:2] == ["git", "-C"] and "archive" in archive
  assert copy[5:7] == [archive[-2].split("=", 1)[1], "mt-arxiv:memorizing_jax.tar.gz"]
  for command in (copy, install, train, check):
    assert "--worker=all" in command and "--zone=us-central2-b" in command
  assert "--worker=0" in follow and "train.log" in follow[-1]
  assert "pip install" in install[-1] and "jax[tpu]" in install[-1]
  # The training command, as every worker's shell will split it.
  remote = train[-1][len("--command="):]
  python_args = shlex.split(remote.split("(trap '' HUP; ", 1)[1].split(";", 1)[0])
  assert python_args == [".venv/bin/python", "-m", "memorizing_jax.main",
                         "--workdir=gs://my-bucket/runs/arxiv", *TRAIN]
  assert delete == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "mt-arxiv",
                    "--zone=us-central2-b", "--quiet"]


def test_tpu_pod_options_change_the_commands(no_gcloud_env):
  done = _script("tpu_pod.sh", "--dry-run", *V4_32, "--project", "my-proj", "--spot",
                 "--keep", "--steps", "create,train",
                 "--env", "MEMORIZING_JAX_ARXIV_DIR=/data/arxiv",
                 "--", *TRAIN, env=no_gcloud_env)
  assert done.returncode == 0, done.stderr
  lines = done.stdout.strip().splitlines()
  assert "--spot" in lines[0] and "--project=my-proj" in lines[0]
  assert not any(" scp " in l or " delete " in l for l in lines)
  assert len(lines) == 4  # create, start, follow, check
  assert "env MEMORIZING_JAX_ARXIV_DIR=/data/arxiv .venv/bin/python -m" in lines[1]


@pytest.mark.parametrize("args,message", [
    (["--zone", "z", "--accelerator", "v4-32", "--workdir", "gs://b/r", "--", *TRAIN],
     "--name is required"),
    ([*V4_32[:-1], "/local/dir", "--", *TRAIN], "--workdir must be a gs:// path"),
    (["--name", "x", "--zone", "z", "--accelerator", "32", "--workdir", "gs://b/r", "--",
      *TRAIN], "--accelerator must look like v4-32"),
    ([*V4_32, "--"], "no --gin_file"),
    ([*V4_32, "--steps", "create,launch", "--", *TRAIN], "unknown step 'launch'"),
    ([*V4_32, "--", *TRAIN, "--process_id=1"], "not needed on a TPU VM"),
    ([*V4_32, "--env", "1=2", "--", *TRAIN], "--env must be NAME=VALUE"),
    ([*V4_32[:5], "v5litepod-12", *V4_32[6:], "--", *TRAIN],
     "no TPU topology known for --accelerator v5litepod-12"),
])
def test_tpu_pod_bad_input_is_named(args, message, no_gcloud_env):
  done = _script("tpu_pod.sh", "--dry-run", *args, env=no_gcloud_env)
  assert done.returncode == 2 and message in done.stderr, done.stderr


@pytest.mark.parametrize("accelerator,topology", [
    ("v4-8", "v4:2x2x1"), ("v5p-64", "v5p:2x4x4"), ("v5litepod-16", "v5e:4x4"),
    ("v6e-8", "v6e:2x4")])
def test_tpu_pod_compiles_for_the_slice_topology(accelerator, topology, no_gcloud_env):
  done = _script("tpu_pod.sh", "--dry-run", *V4_32[:5], accelerator, *V4_32[6:],
                 "--steps", "compile", "--", *TRAIN, env=no_gcloud_env)
  assert done.returncode == 0, done.stderr
  assert f"-m memorizing_jax.compile --topology={topology} " in done.stdout


def test_tpu_pod_stops_before_creating_a_slice_the_step_does_not_fit(tmp_path):
  """A real compile (libtpu, no TPU, no gcloud): a 4M-slot memory on a v5e-4 does not fit
  its 16 GiB chips, so the script exits 1 with the advice, before any gcloud command."""
  pytest.importorskip("libtpu")
  config = tmp_path / "too_big.gin"
  config.write_text("include 'quickstart.gin'\n"
                    "model_config.ModelConfig.memory_slots = 4194304\n"
                    "BATCH_SIZE = 16\n")
  done = _script("tpu_pod.sh", *V4_32[:5], "v5litepod-4", *V4_32[6:], "--", f"--gin_file={config}",
                 "--gin_param=model_config.ModelConfig.num_layers = 2")
  assert done.returncode == 1, done.stderr[-2000:]
  assert "does not fit" in done.stderr and "memory_dtype='bfloat16'" in done.stderr
  assert "gcloud" not in done.stdout


def test_tpu_pod_without_gcloud_says_how_to_get_it(no_gcloud_env):
  done = _script("tpu_pod.sh", *V4_32, "--", *TRAIN, env=no_gcloud_env)
  assert done.returncode == 2 and "gcloud not found" in done.stderr


def test_gpu_dry_run_and_bad_input():
  done = _script("gpu.sh", "--dry-run", "--gpus", "0,1", "--gin_file=gin/quickstart.gin",
                 "--workdir=runs/x")
  assert done.returncode == 0, done.stderr
  assert "CUDA_VISIBLE_DEVICES=0,1" in done.stdout
  assert "-m memorizing_jax.main --distributed=off --gin_file=gin/quickstart.gin" in done.stdout
  bad = _script("gpu.sh", "--gpus", "first", "--workdir=x")
  assert bad.returncode == 2 and "--gpus must be indices" in bad.stderr


@pytest.mark.parametrize("args,message", [
    (["two", "--workdir=x"], "N must be a positive integer, got 'two'"),
    (["0", "--workdir=x"], "N must be a positive integer, got '0'"),
    (["--devices_per_process", "-1", "2"], "--devices_per_process must be a positive"),
    (["--port", "70000", "2"], "--port must be 1..65535"),
    (["2", "--process_id=1"], "--process_id=1 is set by this script"),
])
def test_local_bad_input_is_named(args, message):
  done = _script("local.sh", *args)
  assert done.returncode == 2 and message in done.stderr, done.stderr


def test_local_exits_non_zero_when_a_process_fails(tmp_path):
  """The processes fail at once (a bad flag): the script reports it and fails."""
  done = _script("local.sh", "2", f"--workdir={tmp_path}", "--distributed_timeout=0")
  assert done.returncode != 0
  assert "failed (exit 1)" in done.stderr
  assert "--distributed_timeout must be >= 1 s" in done.stderr
  assert sorted(p.name for p in (tmp_path / "logs").glob("*.log")) == ["process_0.log",
                                                                      "process_1.log"]


def _closed_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_an_unreachable_coordinator_times_out_with_a_message():
  config = multihost.DistributedConfig(coordinator_address=f"127.0.0.1:{_closed_port()}",
                                       num_processes=2, process_id=1, timeout_s=1)
  started = time.monotonic()
  with pytest.raises(multihost.DistributedError, match=r"could not be reached within 1 s"):
    multihost.initialize(config)
  assert time.monotonic() - started < 30


@pytest.mark.parametrize("kwargs,message", [
    (dict(coordinator_address="localhost"), "must be host:port"),
    (dict(num_processes=2, process_id=2), r"--process_id must be in \[0, 2\)"),
    (dict(num_processes=0), "--num_processes must be >= 1"),
    (dict(mode="sometimes"), "--distributed must be one of"),
])
def test_bad_distributed_settings_are_named(kwargs, message):
  with pytest.raises(multihost.DistributedError, match=message):
    multihost.DistributedConfig(**kwargs)


def test_incomplete_distributed_settings_say_what_is_missing():
  with pytest.raises(multihost.DistributedError, match="also give --num_processes, --process_id"):
    multihost.initialize(multihost.DistributedConfig(coordinator_address="127.0.0.1:1234"))


def test_settings_come_from_the_environment(monkeypatch):
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.2:8476")
  monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
  monkeypatch.setenv("JAX_PROCESS_ID", "3")
  config = multihost.DistributedConfig.from_env()
  assert (config.coordinator_address, config.num_processes, config.process_id) == (
      "10.0.0.2:8476", 4, 3)
  assert multihost.should_initialize(config)
  assert multihost.DistributedConfig.from_env(process_id=1).process_id == 1  # flags first
  assert not multihost.should_initialize(multihost.DistributedConfig.from_env(mode="off"))
  monkeypatch.setenv("JAX_PROCESS_ID", "three")
  with pytest.raises(multihost.DistributedError, match=r"\$JAX_PROCESS_ID must be an integer"):
    multihost.DistributedConfig.from_env()
