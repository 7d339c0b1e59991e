"""The training summaries' speed figures: step time, tokens per device, FLOPs utilisation."""
import time

import pytest

from memorizing_jax.train import metrics

from conftest import read_scalars  # pylint: disable=g-bad-import-order


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
