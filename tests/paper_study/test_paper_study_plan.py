"""experiments/paper_study/plan.py: every run trains what its committed record was
trained with, its settings come from the parsed gin files, and fine-tunes go on at the
learning rate their source ended with."""
import dataclasses
import json
import pathlib
import shlex

import pytest

from experiments.paper_study import plan as study_plan

RECORDS = pathlib.Path(study_plan.ROOT) / "docs" / "results" / "records"
# Where the study's gin files were when the records were made.
OLD_GIN_PATHS = ("gin/study/", "study/")


@pytest.fixture(name="plan", scope="module")
def plan_fixture():
  return study_plan.runs()


def _recorded_command(record):
  """The gin files and bindings of a record's training command, its gin files at the
  paths they have now."""
  files, params = [], []
  for arg in shlex.split(record["command"]):
    if arg.startswith("--gin_file="):
      name = arg[len("--gin_file="):]
      for old in OLD_GIN_PATHS:
        if name.startswith(old):
          name = f"{study_plan.GIN_DIR}/{name[len(old):]}"
      files.append(name)
    elif arg.startswith("--gin_param="):
      params.append(arg[len("--gin_param="):])
  return tuple(files), params


def _configs(files, params):
  from memorizing_jax.data.config import DataConfig  # pylint: disable=g-import-not-at-top
  from memorizing_jax.model.config import ModelConfig  # pylint: disable=g-import-not-at-top
  from memorizing_jax.train import optimizer, partitioner  # pylint: disable=g-import-not-at-top
  from memorizing_jax.train.trainer_config import TrainerConfig  # pylint: disable=g-import-not-at-top
  spec = study_plan.RunSpec("s", "r", "l", files, extra_gin_params=tuple(params))
  return study_plan.configured(spec, "", ModelConfig, DataConfig, optimizer.OptimizerConfig,
                               partitioner.MeshConfig, TrainerConfig)


def test_every_run_trains_what_its_record_was_trained_with(plan):
  """For each committed record: the plan's command parses to the same model, data,
  optimizer, mesh and trainer configs as the record's command (at the gin files' new
  paths), and the plan reads from them the shape the record reports."""
  records = [json.loads(p.read_text()) for p in sorted(RECORDS.glob("*.json"))]
  by_run = {(s.study, s.run): s for s in plan}
  assert sorted(by_run) == sorted((r["study"], r["run"]) for r in records)
  for record in records:
    spec = by_run[(record["study"], record["run"])]
    name = f"{spec.study}/{spec.run}"
    files, params = _recorded_command(record)
    assert spec.gin_files == files, name
    assert _configs(files, params) == _configs(spec.gin_files, spec.gin_params("runs")), name
    planned = dict(label=spec.label, steps=spec.steps, batch_size=spec.batch_size,
                   segment_length=spec.segment_length, memory_slots=spec.memory_slots,
                   xl=spec.xl, finetuned=spec.init_from_run is not None,
                   eval_batches=spec.eval_batches)
    assert planned == {k: record[k] for k in planned}, name


def test_settings_follow_the_gin_files():
  """A binding given to every run (as --gin_param does) changes what the plan reads:
  the steps (and the fine-tunes' tenth of them), the batch and the memory size."""
  runs = {(s.study, s.run): s for s in study_plan.runs([
      "loop.TrainerConfig.total_steps=40", "BATCH_SIZE=4",
      "model_config.ModelConfig.memory_slots=4096"])}
  xl_mem = runs[("synthetic", "xl_mem")]
  assert (xl_mem.steps, xl_mem.batch_size, xl_mem.memory_slots) == (40, 4, 4096)
  assert "--gin_param=loop.TrainerConfig.total_steps=40" in xl_mem.command("r")
  tuned = runs[("python_stdlib", "xl_finetune_mem8k")]
  assert (tuned.steps, tuned.total_steps, tuned.memory_slots) == (4, 4, 4096)
  # Runs without a kNN layer record no memory, whatever its slots are bound to.
  assert runs[("python_stdlib", "xl")].memory_slots == 0
  assert runs[("python_stdlib", "none")].xl is False


def test_finetunes_continue_at_the_source_runs_last_learning_rate(plan, tmp_path):
  runs = {(s.study, s.run): s for s in plan}
  # Both study gin files keep a constant rate after warm-up: 0.03 for python_stdlib, 0.01
  # for the synthetic task.
  stdlib = runs[("python_stdlib", "xl_finetune_mem8k")]
  source = runs[("python_stdlib", "xl")]
  assert stdlib.learning_rate == pytest.approx(0.03)
  assert stdlib.steps == source.steps // 10 and stdlib.init_from_run == "xl"
  synthetic = runs[("synthetic", "xl_finetune_mem")]
  assert synthetic.learning_rate == pytest.approx(0.01)
  # With the paper's decay instead: peak 0.03, 100 warm-up steps, then
  # lr = peak * sqrt(100 / (step + 1)), so the last of `steps` updates has 0.03 * sqrt(100 / steps).
  decayed = tmp_path / "decayed.gin"
  decayed.write_text("from __gin__ import dynamic_registration\n"
                     "from memorizing_jax.train import optimizer\n"
                     "optimizer.ScheduleConfig.decay = 'rsqrt'\n")
  decaying = dataclasses.replace(
      source, gin_files=source.gin_files + (str(decayed),))
  assert study_plan.final_learning_rate(decaying) == pytest.approx(
      0.03 * (100 / source.steps) ** 0.5, rel=1e-6)
  params = stdlib.gin_params("runs")
  assert "optimizer.ScheduleConfig.warmup_steps=0" in params
  assert "optimizer.ScheduleConfig.decay='constant'" in params
  assert "loop.train.init_from='runs/python_stdlib/xl'" in params
  # Runs trained from scratch keep their gin files' schedule and steps.
  assert source.learning_rate is None and source.total_steps is None
  assert not any("ScheduleConfig" in p or "total_steps" in p for p in source.gin_params("r"))


def test_gin_params_for_every_run_reach_the_fine_tunes_rate():
  """`--gin_param` bindings go to every run, before its own: at a peak rate of 0.02 (neither
  study's own) the fine-tune continues at 0.02, the rate its source ended with."""
  binding = "optimizer.ScheduleConfig.peak_learning_rate=0.02"
  runs = {(s.study, s.run): s for s in study_plan.runs([binding])}
  source = runs[("python_stdlib", "xl")]
  assert source.gin_params("r")[0] == binding
  assert f"--gin_param={binding}" in source.command("r")
  tuned = runs[("python_stdlib", "xl_finetune_mem8k")]
  assert tuned.learning_rate == pytest.approx(0.02)
  params = tuned.gin_params("r")
  assert params[0] == binding and params[-3:] == [
      "optimizer.ScheduleConfig.peak_learning_rate=0.02",
      "optimizer.ScheduleConfig.warmup_steps=0",
      "optimizer.ScheduleConfig.decay='constant'"]
  assert runs[("synthetic", "xl_finetune_mem")].learning_rate == pytest.approx(0.02)


def test_the_header_reads_the_gin_files(plan, tmp_path):
  """The report's header states each study's settings as its XL-only run's gin files
  give them, and refuses to state one initial temperature when the studies differ."""
  text = study_plan.header(plan)
  assert ("synthetic runs 2400 steps each (batch 16 x 64 byte tokens, 2 layers, "
          "d_model 128);") in text
  assert ("python_stdlib runs 750 steps each (batch 32 x 128 SentencePiece-1024 tokens, "
          "4 layers),") in text
  assert "temperatures at 16 and its memory gates at sigmoid(-2)" in text
  assert "0.01 on the synthetic task, 0.03 on python_stdlib." in text
  assert "`.venv/bin/python experiments/paper_study/run.py`" in text
  assert "(`experiments/paper_study/gin/*.gin`;" in text
  hotter = tmp_path / "hotter.gin"
  hotter.write_text("from __gin__ import dynamic_registration\n"
                    "from memorizing_jax.model import config as model_config\n"
                    "model_config.ModelConfig.temperature_init = 8.0\n")
  changed = [dataclasses.replace(s, gin_files=s.gin_files + (str(hotter),))
             if s.study == "synthetic" else s for s in plan]
  with pytest.raises(ValueError, match=r"temperature_init: \[8.0, 16.0\]"):
    study_plan.header(changed)
