"""The launch scripts' commands and errors, and the multi-process start-up's errors.

Nothing here reaches a cloud: tpu_pod.sh prints its gcloud commands (--dry-run), or
runs a fake `gcloud` (a bash script that logs its arguments) to show its restarts.
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


def _commands(text):
  """The command lines of a dry run's output (stdout, or the restart plan's indented lines
  on stderr), split into words as a shell would."""
  lines = [line.strip() for line in text.splitlines()]
  return [shlex.split(line) for line in lines
          if line and not line.startswith(("#", "launch/tpu_pod.sh:"))]


@pytest.mark.parametrize("accelerator,version", [
    ("v4-32", "tpu-ubuntu2204-base"), ("v5litepod-16", "v2-alpha-tpuv5-lite"),
    ("v5p-8", "v2-alpha-tpuv5"), ("v6e-8", "v2-alpha-tpuv6e")])
def test_tpu_pod_picks_the_software_version_of_the_generation(accelerator, version,
                                                               no_gcloud_env):
  """Google's TPU software versions for JAX (https://cloud.google.com/tpu/docs/runtimes),
  directly (--version) and through a queued resource (--runtime-version)."""
  args = [*V4_32[:5], accelerator, *V4_32[6:], "--steps", "create"]
  direct = _script("tpu_pod.sh", "--dry-run", *args, "--", *TRAIN, env=no_gcloud_env)
  assert direct.returncode == 0, direct.stderr
  assert _commands(direct.stdout) == [
      ["gcloud", "compute", "tpus", "tpu-vm", "create", "mt-arxiv", "--zone=us-central2-b",
       f"--accelerator-type={accelerator}", f"--version={version}"]]
  queued = _script("tpu_pod.sh", "--dry-run", *args, "--queued", "--", *TRAIN,
                   env=no_gcloud_env)
  assert queued.returncode == 0, queued.stderr
  assert _commands(queued.stdout)[0] == [
      "gcloud", "compute", "tpus", "queued-resources", "create", "mt-arxiv-qr",
      "--node-id=mt-arxiv", "--zone=us-central2-b", f"--accelerator-type={accelerator}",
      f"--runtime-version={version}"]


def test_tpu_pod_version_flag_overrides_the_table(no_gcloud_env):
  for accelerator in ("v5p-8", "v7-8"):  # a known generation, and one the table lacks
    done = _script("tpu_pod.sh", "--dry-run", *V4_32[:5], accelerator, *V4_32[6:],
                   "--version", "v2-alpha-tpuv5-test", "--steps", "create", "--", *TRAIN,
                   env=no_gcloud_env)
    assert done.returncode == 0, done.stderr
    assert _commands(done.stdout)[0][-2:] == [f"--accelerator-type={accelerator}",
                                              "--version=v2-alpha-tpuv5-test"]


def test_tpu_pod_queued_spot_dry_run_prints_the_queued_resource_commands(no_gcloud_env):
  done = _script("tpu_pod.sh", "--dry-run", *V4_32[:5], "v5litepod-16", "--zone", "us-west4-a",
                 *V4_32[6:], "--queued", "--spot", "--project", "my-proj",
                 "--queue_timeout", "3600", "--poll_interval", "60", "--", *TRAIN,
                 env=no_gcloud_env)
  assert done.returncode == 0, done.stderr
  commands = _commands(done.stdout)
  where = ["--zone=us-west4-a", "--project=my-proj"]
  assert commands[1] == [
      "gcloud", "compute", "tpus", "queued-resources", "create", "mt-arxiv-qr",
      "--node-id=mt-arxiv", *where, "--accelerator-type=v5litepod-16",
      "--runtime-version=v2-alpha-tpuv5-lite", "--spot"]
  assert commands[2] == ["gcloud", "compute", "tpus", "queued-resources", "describe",
                         "mt-arxiv-qr", *where, "--format=value(state.state)"]
  assert ("the line above runs every 60 s until mt-arxiv-qr is ACTIVE, for at most 3600 s"
          in done.stderr)
  # The node is the queued resource's: set up and trained on by its name, as before.
  assert [c[3:5] for c in commands[4:-1]] == [["tpu-vm", verb]
                                             for verb in ("scp", "ssh", "ssh", "ssh", "ssh")]
  assert commands[4][6] == "mt-arxiv:memorizing_jax.tar.gz"
  assert all(c[5] == "mt-arxiv" for c in commands[5:-1])
  assert commands[-1] == ["gcloud", "compute", "tpus", "queued-resources", "delete",
                          "mt-arxiv-qr", *where, "--force", "--quiet"]


def test_tpu_pod_dry_run_shows_what_a_restart_runs(no_gcloud_env):
  done = _script("tpu_pod.sh", "--dry-run", *V4_32, "--spot", "--max_restarts", "2", "--",
                 *TRAIN, env=no_gcloud_env)
  assert done.returncode == 0, done.stderr
  normal = _commands(done.stdout)
  plan_text = done.stderr.split("on preemption (up to 2 times)", 1)[1]
  plan = _commands(plan_text.split("\n", 1)[1])
  assert plan[0] == ["gcloud", "compute", "tpus", "tpu-vm", "describe", "mt-arxiv",
                     "--zone=us-central2-b", "--format=value(state)"]
  assert plan[1:4] == [
      normal[-1],  # the delete
      ["gcloud", "storage", "rm", "gs://my-bucket/runs/arxiv/workdir.lock"],
      normal[1]]  # the create, --spot included
  assert plan[3][-1] == "--spot"
  # Then the same setup and training as the first time; not the compile step.
  assert plan[4:] == normal[2:-1]
  assert not any("memorizing_jax.compile" in word for c in plan for word in c)
  never = _script("tpu_pod.sh", "--dry-run", *V4_32, "--spot", "--max_restarts=0", "--",
                  *TRAIN, env=no_gcloud_env)
  assert never.returncode == 0 and "on preemption" not in never.stderr, never.stderr
  assert never.stdout == done.stdout


def test_tpu_pod_queued_restart_plan_waits_for_the_new_queued_resource(no_gcloud_env):
  done = _script("tpu_pod.sh", "--dry-run", *V4_32, "--queued", "--steps", "create,train",
                 "--", *TRAIN, env=no_gcloud_env)
  assert done.returncode == 0, done.stderr
  plan = _commands(done.stderr.split("on preemption (up to 3 times)", 1)[1].split("\n", 1)[1])
  assert [" ".join(c[1:5]) for c in plan[:5]] == [
      "compute tpus queued-resources describe", "compute tpus queued-resources delete",
      "storage rm gs://my-bucket/runs/arxiv/workdir.lock",
      "compute tpus queued-resources create", "compute tpus queued-resources describe"]
  assert plan[1][-2:] == ["--force", "--quiet"]


FAKE_GCLOUD = r"""#!/usr/bin/env bash
# Stands in for the Google Cloud CLI: logs its arguments; `describe` answers the next
# line of ./states (an empty line: the resource is gone); `ssh` fails (exit 7) while
# ./ssh_failures counts above 0.
here="${0%/*}"
printf '%s\n' "$*" >> "$here/calls.log"
case "$4" in
  describe)
    state="$(head -n 1 "$here/states")"
    sed -i 1d "$here/states"
    if [[ -z "$state" ]]; then echo "ERROR: (gcloud) NOT_FOUND" >&2; exit 1; fi
    echo "$state" ;;
  ssh)
    failures="$(cat "$here/ssh_failures")"
    if (( failures > 0 )); then
      echo $(( failures - 1 )) > "$here/ssh_failures"
      echo "ssh: connection closed" >&2
      exit 7
    fi ;;
esac
"""


def _fake_gcloud_run(tmp_path, *args, states=(), ssh_failures=0):
  """Runs tpu_pod.sh for real with the fake `gcloud` first on PATH; returns the finished
  process and the gcloud calls, shortened to their group and verb (`tpu-vm create`)."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
  (bin_dir / "gcloud").chmod(0o755)
  (bin_dir / "states").write_text("".join(f"{state}\n" for state in states))
  (bin_dir / "ssh_failures").write_text(f"{ssh_failures}\n")
  env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
             TMPDIR=str(tmp_path))
  done = _script("tpu_pod.sh", *V4_32, "--steps", "create,train,delete", "--poll_interval", "1",
                 *args, "--", *TRAIN, env=env)
  log = bin_dir / "calls.log"
  calls = log.read_text().splitlines() if log.exists() else []
  short = [" ".join(c.split()[2:4]) if c.startswith("compute ") else " ".join(c.split()[:3])
           for c in calls]
  return done, short


def test_tpu_pod_restarts_a_preempted_spot_slice(tmp_path):
  """The training ssh fails, the slice is PREEMPTED: delete it, drop the dead run's lock,
  create it, set it up (a new slice is bare) and train again; the compile step is not run
  again (it is not even in --steps here), and at the end the slice is deleted."""
  done, calls = _fake_gcloud_run(tmp_path, "--spot", states=["PREEMPTED"], ssh_failures=1)
  assert done.returncode == 0, done.stderr
  assert calls == [
      "tpu-vm create", "tpu-vm ssh", "tpu-vm describe",
      "tpu-vm delete", "storage rm gs://my-bucket/runs/arxiv/workdir.lock", "tpu-vm create",
      "tpu-vm scp", "tpu-vm ssh", "tpu-vm ssh", "tpu-vm ssh", "tpu-vm ssh",
      "tpu-vm delete"]
  assert "mt-arxiv was preempted" in done.stderr and "(restart 1 of 3)" in done.stderr
  assert (tmp_path / "memorizing_jax_mt-arxiv.tar.gz").exists()  # the new slice's checkout


def test_tpu_pod_a_failure_that_is_not_a_preemption_ends_the_run(tmp_path):
  done, calls = _fake_gcloud_run(tmp_path, "--spot", states=["READY"], ssh_failures=1)
  assert done.returncode == 7, done.stderr  # the training command's exit status
  assert calls == ["tpu-vm create", "tpu-vm ssh", "tpu-vm describe", "tpu-vm delete"]
  assert "mt-arxiv is READY" in done.stderr and "preempted" not in done.stderr


def test_tpu_pod_gives_up_after_max_restarts(tmp_path):
  done, calls = _fake_gcloud_run(tmp_path, "--max_restarts", "1", states=["PREEMPTED"],
                                 ssh_failures=2)
  assert done.returncode == 7, done.stderr
  assert calls == [
      "tpu-vm create", "tpu-vm ssh", "tpu-vm describe",
      "tpu-vm delete", "storage rm gs://my-bucket/runs/arxiv/workdir.lock", "tpu-vm create",
      "tpu-vm scp", "tpu-vm ssh",  # setting up the new slice fails: no restart left
      "tpu-vm delete"]


def test_tpu_pod_restarts_a_suspended_queued_resource(tmp_path):
  done, calls = _fake_gcloud_run(
      tmp_path, "--queued", "--spot",
      states=["WAITING_FOR_RESOURCES", "ACTIVE",  # the first wait, one poll apart
              "SUSPENDED",  # after the training ssh failed
              "ACTIVE"],  # the second wait
      ssh_failures=1)
  assert done.returncode == 0, done.stderr
  assert calls == [
      "queued-resources create", "queued-resources describe", "queued-resources describe",
      "tpu-vm ssh", "queued-resources describe",
      "queued-resources delete", "storage rm gs://my-bucket/runs/arxiv/workdir.lock",
      "queued-resources create", "queued-resources describe",
      "tpu-vm scp", "tpu-vm ssh", "tpu-vm ssh", "tpu-vm ssh", "tpu-vm ssh",
      "queued-resources delete"]
  assert "mt-arxiv-qr is WAITING_FOR_RESOURCES" in done.stderr


def test_tpu_pod_a_queued_resource_that_is_gone_counts_as_preempted(tmp_path):
  done, calls = _fake_gcloud_run(tmp_path, "--queued", states=["ACTIVE", "", "ACTIVE"],
                                 ssh_failures=1)
  assert done.returncode == 0, done.stderr
  assert calls[2:5] == ["tpu-vm ssh", "queued-resources describe", "queued-resources delete"]


def test_tpu_pod_a_failed_queued_resource_stops_with_a_message(tmp_path):
  done, calls = _fake_gcloud_run(tmp_path, "--queued", states=["FAILED"])
  assert done.returncode == 1
  assert "queued resource mt-arxiv-qr FAILED" in done.stderr
  assert calls == ["queued-resources create", "queued-resources describe",
                   "queued-resources delete"]


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
    ([*V4_32[:5], "v7-8", *V4_32[6:], "--", *TRAIN],
     "unknown TPU generation 'v7' in --accelerator v7-8 (known: v2, v3, v4, v5litepod, v5p, "
     "v6e): give its software version with --version"),
    ([*V4_32, "--max_restarts", "-1", "--", *TRAIN],
     "--max_restarts must be a whole number >= 0 (0: never restart), got '-1'"),
    ([*V4_32, "--max_restarts=three", "--", *TRAIN], "--max_restarts must be a whole number"),
    ([*V4_32, "--queued", "--poll_interval", "0", "--", *TRAIN],
     "--poll_interval must be a positive whole number of seconds, got '0'"),
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
