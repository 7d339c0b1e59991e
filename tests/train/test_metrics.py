"""The training summaries: speed figures (step time, tokens per device, FLOPs
utilisation) and values TensorBoard can store, whatever the loss; the evaluation
summaries and the progress bar."""
import math
import time

import jax.numpy as jnp
import numpy as np
import pytest

from memorizing_jax.train import metrics

from event_files import read_scalars  # pylint: disable=g-bad-import-order


@pytest.mark.parametrize("peak", [2e12, None])
def test_speed_figures_of_an_interval(tmp_path, peak):
  logger = metrics.MetricsLogger(str(tmp_path), 0, 10, progress_bar=False, devices=4,
                                 step_flops_per_device=3e9, peak_flops_per_device=peak)
  logger.reset_timer()
  time.sleep(0.05)
  logger.write_train(2, {"loss": 1.0}, tokens_seen=800, steps=2)
  logger.close()
  written = {tag: values[2] for tag, values in read_scalars(tmp_path / "train").items()}
  elapsed = 800 / written["tokens_per_s"]
  assert elapsed >= 0.05
  assert written["step_time_s"] == pytest.approx(elapsed / 2, rel=1e-5)
  assert written["tokens_per_s_per_device"] == pytest.approx(written["tokens_per_s"] / 4)
  if peak is None:  # the device's peak is unknown (a CPU): no utilisation
    assert "mfu" not in written
  else:
    assert written["mfu"] == pytest.approx(3e9 / written["step_time_s"] / peak, rel=1e-5)


def test_a_huge_finite_loss_is_written_with_an_infinite_perplexity(tmp_path):
  """peak_learning_rate=1e4 gave a loss of 1987 nats: exp(1987) overflows, and event
  files store float32 (largest 3.4e38), which once made the write raise."""
  per_step = [{"loss_sum": 1987.0 * 128, "correct": 3.0, "tokens": 128.0, "grad_norm": 2e39,
               "learning_rate": 1e4}]
  scalars = metrics.summarize(per_step)
  assert scalars["loss"] == 1987.0 and scalars["perplexity"] == math.inf
  logger = metrics.MetricsLogger(str(tmp_path), 0, 10, progress_bar=False)
  logger.write_train(1, scalars, tokens_seen=128)
  logger.close()
  written = {tag: values[1] for tag, values in read_scalars(tmp_path / "train").items()}
  assert written["loss"] == 1987.0
  assert written["perplexity"] == math.inf
  assert written["grad_norm"] == math.inf  # 2e39 is beyond float32
  assert written["bits_per_token"] == pytest.approx(1987.0 / math.log(2), rel=1e-6)
  assert written["accuracy"] == pytest.approx(3 / 128)


def test_summary_values_fit_float32():
  assert metrics.summary_value(3e38) == 3e38
  assert metrics.summary_value(1e39) == math.inf
  assert metrics.summary_value(-1e300) == -math.inf
  assert math.isnan(metrics.summary_value(float("nan")))
  assert metrics.summary_value(np.float32(2.5)) == 2.5
  assert metrics.perplexity(math.log(20.0)) == pytest.approx(20.0)
  assert metrics.perplexity(710.0) == math.inf  # exp overflows a float64 here


def test_a_failing_metrics_write_logs_and_the_next_one_lands(tmp_path, caplog):
  logger = metrics.MetricsLogger(str(tmp_path), 0, 10, progress_bar=False)
  with caplog.at_level("WARNING"):
    # A metric that is not a scalar cannot be a TensorBoard scalar.
    logger.write_train(3, {"loss": 1.0, "per_layer": np.ones(2)}, tokens_seen=8)
  assert "could not write the metrics of step 3" in caplog.text
  assert "training goes on" in caplog.text
  logger.write_train(4, {"loss": 2.0}, tokens_seen=8)
  logger.close()
  assert read_scalars(tmp_path / "train")["loss"] == {4: 2.0}


def test_the_accumulator_keeps_an_interval_on_device_until_fetched():
  accumulator = metrics.MetricsAccumulator()
  assert len(accumulator) == 0
  accumulator.add(7, {"loss_sum": jnp.float32(2.5), "tokens": jnp.float32(4.0)})
  accumulator.add(8, {"loss_sum": jnp.float32(1.5), "tokens": jnp.float32(4.0)})
  assert len(accumulator) == 2
  first, per_step = accumulator.fetch()
  assert first == 7  # the step counter before the interval's first update
  assert per_step == [{"loss_sum": 2.5, "tokens": 4.0}, {"loss_sum": 1.5, "tokens": 4.0}]
  assert all(isinstance(v, np.ndarray) for m in per_step for v in m.values())  # host copies
  assert len(accumulator) == 0
  accumulator.add(9, {"loss_sum": jnp.float32(1.0), "tokens": jnp.float32(4.0)})
  assert accumulator.fetch()[0] == 9  # the next interval starts afresh


def test_advance_moves_the_progress_bar_on_from_the_start_step(tmp_path, capsys):
  logger = metrics.MetricsLogger(str(tmp_path), 3, 10, progress_bar=True)
  logger.advance()
  logger.advance(2)
  logger.close()
  renders = capsys.readouterr().err.replace("\n", "\r").split("\r")
  shown = [r.split("|")[-1].split()[0] for r in renders if "|" in r]
  assert shown[0] == "3/10" and shown[-1] == "6/10"  # 3 + 1 + 2 of 10 steps


def test_write_eval_writes_the_eval_scalars_and_prints_one_line(tmp_path, capsys):
  scalars = {"loss": 1.0, "perplexity": math.e, "bits_per_token": 1 / math.log(2),
             "accuracy": 0.375, "tokens": 64.0}
  logger = metrics.MetricsLogger(str(tmp_path), 0, 10, progress_bar=False)
  logger.write_eval(5, scalars)
  logger.close()
  assert read_scalars(tmp_path / "eval") == {
      tag: {5: pytest.approx(value)} for tag, value in scalars.items()}
  assert read_scalars(tmp_path / "train") == {}  # nothing among the training scalars
  assert capsys.readouterr().out == (
      "eval at step 5: perplexity 2.718, loss 1.0000, bits/token 1.4427, accuracy 0.3750 "
      "over 64 tokens\n")
