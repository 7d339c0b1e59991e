"""`python -m memorizing_jax.evaluate` on the shared tiny run (trained on a 4 x 2 mesh):
its figures against the notebook API's scores, its files, its memory-size override and
its errors."""
import json
import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import memorizing_jax as mj
from memorizing_jax import evaluate as evaluate_command

from event_files import read_scalars  # pylint: disable=g-bad-import-order


def run_command(argv, capsys):
  """(exit status, stdout, stderr) of the command's `main` with `argv` as its flags."""
  evaluate_command.FLAGS(["evaluate"] + argv)
  try:
    status = evaluate_command.main(["evaluate"])
  finally:
    evaluate_command.FLAGS.unparse_flags()
  out, err = capsys.readouterr()
  return status, out, err


@pytest.fixture(scope="module")
def workdir(trained_workdir, tmp_path_factory):
  """A copy of the shared run, so that the command's files stay out of the shared one."""
  copy = tmp_path_factory.mktemp("evaluate_command") / "run"
  shutil.copytree(trained_workdir, copy)
  return str(copy)


@pytest.fixture(scope="module")
def default_run(workdir):
  """The command's result, written to the default paths: 3 batches, with the ablation."""
  evaluate_command.FLAGS(["evaluate", f"--workdir={workdir}", "--max_batches=3",
                          "--memory_gain"])
  try:
    status = evaluate_command.main(["evaluate"])
  finally:
    evaluate_command.FLAGS.unparse_flags()
  assert status == 0
  with open(os.path.join(workdir, "eval", "validation", "step_6.json")) as f:
    return json.load(f)


def test_figures_are_those_of_scoring_each_document_in_the_notebook(default_run, workdir):
  """3 batches of 8 rows x 16 targets: the eval stream gives row r document r (the
  documents in id order), so they are the first 48 tokens of documents 0-7."""
  m = mj.load(workdir)
  from memorizing_jax.data import tasks  # pylint: disable=g-import-not-at-top
  texts = [d.text for d in tasks.get_reader("synthetic_recall").documents("validation")]
  on = np.concatenate([m.score(m.encode(t)[:48]).loss for t in texts[:8]])
  off = np.concatenate([m.score(m.encode(t)[:48], memory=False).loss for t in texts[:8]])
  result = default_run
  assert result["step"] == 6 and result["tokens"] == on.size == 384
  assert result["loss"] == pytest.approx(on.mean(), rel=1e-5)
  assert result["perplexity"] == pytest.approx(math.exp(on.mean()), rel=1e-5)
  assert result["bits_per_token"] == pytest.approx(on.mean() / math.log(2), rel=1e-5)
  assert result["perplexity_without_memory"] == pytest.approx(math.exp(off.mean()), rel=1e-5)
  # Tokens whose gain is within float noise of 0 may count either way.
  assert abs(result["gain_share"] - np.mean(off - on > 0)) <= 2 / on.size
  # Default edges: the local context (16 + the XL cache's 16), then the paper's sizes.
  assert result["evaluation"]["position_edges"] == [32, 1536, 8192, 65536]
  first, beyond = result["by_position"][:2]
  assert (first["tokens"], beyond["tokens"]) == (8 * 32, 8 * 16)
  per_document = np.stack([on, off]).reshape(2, 8, 48)
  assert first["perplexity"] == pytest.approx(math.exp(per_document[0, :, :32].mean()),
                                              rel=1e-5)
  assert beyond["perplexity_without_memory"] == pytest.approx(
      math.exp(per_document[1, :, 32:].mean()), rel=1e-5)
  assert sum(r["tokens"] for r in result["by_memory_gain"]) == 384
  assert result["evaluation"] | {"seconds": 0, "workdir": ""} == {
      "workdir": "", "task": "synthetic_recall", "split": "validation", "name": "validation",
      "memory_slots": 64, "trained_memory_slots": 64, "segment_length": 16,
      "batch_size": 8, "max_batches": 3, "batches": 3, "mesh": {"data": 8, "model": 1, "memory": 1},
      "position_edges": [32, 1536, 8192, 65536],
      "gain_edges": [-1.0, -0.1, -0.01, 0.01, 0.1, 1.0], "seconds": 0}


def test_events_hold_the_json_figures_at_the_checkpoint_step(default_run, workdir):
  scalars = read_scalars(os.path.join(workdir, "eval", "validation"))
  for tag in ("loss", "perplexity", "bits_per_token", "accuracy", "tokens",
              "perplexity_without_memory", "gain_share"):
    assert scalars[tag] == {6: pytest.approx(default_run[tag], rel=1e-6)}, tag
  first = default_run["by_position"][0]
  assert scalars["by_position/perplexity/0_to_32"][6] == pytest.approx(first["perplexity"])
  assert scalars["by_position/gain_share/0_to_32"][6] == pytest.approx(first["gain_share"])
  assert not any(tag.endswith("from_65536") for tag in scalars)  # empty buckets are left out


def test_a_smaller_memory_forgets_only_beyond_its_reach(default_run, workdir, tmp_path, capsys):
  """16 slots hold only the previous segment, which the XL cache reaches too: the
  first 32 positions read the same memory as with 64 slots, later ones do not."""
  out = tmp_path / "small.json"
  status, stdout, _ = run_command(
      [f"--workdir={workdir}", "--max_batches=3", "--memory_slots=16", f"--out={out}",
       "--position_edges=32"], capsys)
  assert status == 0
  small = json.loads(out.read_text())
  assert json.loads(stdout.strip().splitlines()[-1]) == small  # the last line is the JSON
  assert "memory 16 slots (trained with 64)" in stdout
  assert (small["evaluation"]["memory_slots"], small["evaluation"]["name"]) == (
      16, "validation-mem16")
  near, far = small["by_position"]
  assert near["perplexity"] == pytest.approx(default_run["by_position"][0]["perplexity"],
                                             rel=1e-6)
  assert far["perplexity"] != pytest.approx(default_run["by_position"][1]["perplexity"],
                                            rel=1e-4)
  # The events went to their own folder, beside the default run's.
  assert read_scalars(os.path.join(workdir, "eval", "validation-mem16"))["perplexity"] == {
      6: pytest.approx(small["perplexity"])}


@pytest.mark.parametrize("flags, message", [
    (["--split=bogus"], "unknown split 'bogus'"),
    (["--task=no_such_task"], "unknown task 'no_such_task'"),
    (["--memory_slots=2"], r"--memory_slots=2 does not fit the run's model: "
                           r"ModelConfig.knn_k=4 exceeds memory_slots=2"),
    (["--memory_slots=8"], r"--memory_slots=8 does not fit .* smaller than one segment"),
    (["--batch_size=4"], r"--batch_size=4 does not divide over the 8 data-parallel devices"),
    (["--step=4"], r"no checkpoint of step 4 .* holds steps \[3, 6\]"),
    (["--position_edges=8,4"], r"position_edges must be increasing"),
    (["--position_edges=8,x"], r"--position_edges takes comma-separated integers"),
    (["--mesh_model=3"], r"does not fit 8 devices"),
])
def test_bad_input_exits_1_naming_the_problem_and_writes_nothing(workdir, flags, message,
                                                                  capsys):
  before = sorted(os.listdir(workdir))
  status, stdout, stderr = run_command([f"--workdir={workdir}", "--max_batches=1",
                                        "--events_dir=", *flags], capsys)
  assert status == 1 and stdout == ""
  error = stderr.splitlines()[-1]  # (after a progress bar, when a split is read)
  assert error.startswith("error: ") and re.search(message, error), stderr
  assert sorted(os.listdir(workdir)) == before


def test_a_workdir_without_checkpoints_is_reported_not_created(tmp_path, capsys):
  absent = tmp_path / "absent"
  status, _, stderr = run_command([f"--workdir={absent}"], capsys)
  assert status == 1 and "no checkpoint in" in stderr and "train a run there" in stderr
  assert not absent.exists()
  from absl import app  # pylint: disable=g-import-not-at-top
  with pytest.raises(app.UsageError, match="--workdir is required"):
    run_command([], capsys)


def test_python_dash_m_entry_point(workdir, tmp_path):
  """The real entry point, in its own process, the memory's slots split 2 ways: one
  batch, JSON where --out says, no events where --events_dir is empty; the last line of
  its output is the JSON."""
  out = tmp_path / "one.json"
  env = dict(os.environ, JAX_PLATFORMS="cpu")  # with conftest's 8 CPU devices
  done = subprocess.run(
      [sys.executable, "-m", "memorizing_jax.evaluate", f"--workdir={workdir}",
       "--max_batches=1", "--mesh_data=2", "--mesh_model=2", "--mesh_memory=2", f"--out={out}",
       "--events_dir="],
      capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False)
  assert done.returncode == 0, done.stderr
  result = json.loads(done.stdout.strip().splitlines()[-1])
  assert result == json.loads(out.read_text())
  assert result["evaluation"]["mesh"] == {"data": 2, "model": 2, "memory": 2}
  assert result["tokens"] == 8 * 16 and result["step"] == 6
  assert "perplexity" in done.stdout.splitlines()[1]
