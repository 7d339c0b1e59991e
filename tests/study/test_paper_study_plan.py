"""scripts/paper_study.py's plan: fine-tunes go on at the learning rate their source ended with."""
import importlib.util
import pathlib
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "paper_study.py"


@pytest.fixture(scope="module")
def paper_study():
  spec = importlib.util.spec_from_file_location("paper_study", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  sys.modules["paper_study"] = module  # dataclasses look their module up there
  try:
    spec.loader.exec_module(module)
    yield module
  finally:
    sys.modules.pop("paper_study", None)


def test_finetunes_continue_at_the_source_runs_last_learning_rate(paper_study, tmp_path):
  runs = {(s.study, s.run): s for s in paper_study.plan()}
  # Both study gin files keep a constant rate after warm-up: 0.03 for python_stdlib, 0.01
  # for the synthetic task.
  stdlib = runs[("python_stdlib", "xl_finetune_mem8k")]
  steps = paper_study.STDLIB_STEPS
  assert stdlib.learning_rate == pytest.approx(0.03)
  assert stdlib.steps == steps // 10 and stdlib.init_from_run == "xl"
  synthetic = runs[("synthetic", "xl_finetune_mem")]
  assert synthetic.learning_rate == pytest.approx(0.01)
  # With the paper's decay instead: peak 0.03, 100 warm-up steps, then
  # lr = peak * sqrt(100 / (step + 1)), so the last of `steps` updates has 0.03 * sqrt(100 / steps).
  decayed = tmp_path / "decayed.gin"
  decayed.write_text("from __gin__ import dynamic_registration\n"
                     "from memorizing_jax.train import optimizer\n"
                     "optimizer.ScheduleConfig.decay = 'rsqrt'\n")
  source = runs[("python_stdlib", "xl")]
  source = paper_study.dataclasses.replace(source, gin_files=source.gin_files + (str(decayed),))
  assert paper_study.final_learning_rate(source) == pytest.approx(
      0.03 * (100 / steps) ** 0.5, rel=1e-6)
  params = stdlib.gin_params("runs")
  assert "optimizer.ScheduleConfig.warmup_steps=0" in params
  assert "optimizer.ScheduleConfig.decay='constant'" in params
  assert "loop.train.init_from='runs/python_stdlib/xl'" in params
  # Runs trained from scratch keep their gin files' schedule.
  assert runs[("python_stdlib", "xl")].learning_rate is None
  assert not any("ScheduleConfig" in p for p in runs[("python_stdlib", "xl")].gin_params("r"))


def test_each_runs_recorded_shape_is_the_one_its_gin_trains_with(paper_study):
  """The records' batch size, segment length, memory size and XL flag are the plan's; they must
  be what the run's gin files give the trainer, or the table would describe another run."""
  from memorizing_jax.data.config import DataConfig
  from memorizing_jax.model.config import ModelConfig
  for spec in paper_study.plan():
    data, model = paper_study.configured(spec, "runs", DataConfig, ModelConfig)
    memory_slots = model.memory_slots if model.knn_layers else 0
    assert (data.batch_size, model.segment_length, memory_slots, model.use_xl_cache) == (
        spec.batch_size, spec.segment_length, spec.memory_slots, spec.xl), (spec.study, spec.run)


def test_gin_params_for_every_run_reach_the_fine_tunes_rate(paper_study):
  """`--gin_param` bindings go to every run, before its own: at a peak rate of 0.02 (neither
  study's own) the fine-tune continues at 0.02, the rate its source ended with."""
  binding = "optimizer.ScheduleConfig.peak_learning_rate=0.02"
  runs = {(s.study, s.run): s for s in paper_study.plan([binding])}
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
