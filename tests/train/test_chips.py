"""A chip's figures, and a device's share of them."""
import pytest

from memorizing_jax.train import chips


def test_a_device_of_a_two_core_chip_has_half_its_figures():
  chip = chips.Chip("x9", hbm_bytes=64 * chips.GIB, peak_flops=400e12, hbm_bandwidth=2e12,
                    cores=2)
  core = chips.DevicePeak(chip, chips.device_share(chip, 1))
  assert (core.hbm_bytes, core.peak_flops, core.hbm_bandwidth) == (32 * chips.GIB, 200e12,
                                                                    1e12)
  whole = chips.DevicePeak(chip, chips.device_share(chip, 2))  # megacore: the whole chip
  assert whole.hbm_bytes == 64 * chips.GIB
  assert whole.roofline_seconds(800e12, 1e12) == pytest.approx(2.0)  # compute-bound
  assert chips.device_share(chip, None) == 1.0  # a device that does not say: a whole chip


def test_the_table_holds_each_chips_published_figures():
  assert chips.CHIPS["TPU v5 lite"] == chips.Chip("v5e", 16 * chips.GIB, 197e12, 0.82e12)
  h100 = chips.chip_of("NVIDIA H100 80GB HBM3")
  assert isinstance(h100, chips.Chip) and (h100.hbm_bytes, h100.cores) == (80 * 10**9, 1)
