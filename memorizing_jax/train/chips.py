"""Peak figures of accelerator chips, for roofline estimates and FLOPs utilisation.

Per chip, dense bf16, from the vendors' public spec pages (Google Cloud's TPU
pages; NVIDIA's H100/H200/A100 data sheets, SXM parts). A JAX device may be a
whole chip (TPU v5e, v6e; v4 and v5p in megacore mode, one device per chip; GPUs)
or one TensorCore of a two-core chip (v4 and v5p otherwise): `device_share` says
which, and the per-device figures scale by it.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

GIB = 1 << 30


@dataclasses.dataclass(frozen=True)
class Chip:
  """One accelerator chip.

  Attributes:
    name: short name ("v4", "v5e", "H100", ...).
    hbm_bytes: memory per chip.
    peak_flops: dense bf16 FLOP/s per chip.
    hbm_bandwidth: bytes/s per chip.
    cores: TensorCores per chip (a non-megacore TPU device is one of them).
  """

  name: str
  hbm_bytes: int
  peak_flops: float
  hbm_bandwidth: float
  cores: int = 1


# Keyed by what JAX reports as `device.device_kind` (TPU) or a part of it (GPU).
CHIPS = {
    "TPU v4": Chip("v4", 32 * GIB, 275e12, 1.2e12, cores=2),
    "TPU v5 lite": Chip("v5e", 16 * GIB, 197e12, 0.82e12),
    "TPU v5": Chip("v5p", 95 * GIB, 459e12, 2.76e12, cores=2),
    "TPU v5p": Chip("v5p", 95 * GIB, 459e12, 2.76e12, cores=2),
    "TPU v6 lite": Chip("v6e", 32 * GIB, 918e12, 1.64e12),
    "H200": Chip("H200", 141 * 10**9, 989e12, 4.8e12),
    "H100": Chip("H100", 80 * 10**9, 989e12, 3.35e12),
    "A100": Chip("A100", 80 * 10**9, 312e12, 2.0e12),
}


def chip_of(device_kind: str) -> Optional[Chip]:
  """The chip a device kind names, or None when the table does not know it."""
  if device_kind in CHIPS:
    return CHIPS[device_kind]
  for key, chip in CHIPS.items():
    if not key.startswith("TPU") and key in device_kind:
      return chip
  return None


def device_share(chip: Chip, device_cores: Optional[int]) -> float:
  """The share of a chip one device is: 1, or 1/2 for one core of a two-core chip."""
  if chip.cores == 1 or not device_cores:
    return 1.0
  return min(device_cores, chip.cores) / chip.cores


@dataclasses.dataclass(frozen=True)
class DevicePeak:
  """A device's share of its chip: HBM, FLOP/s and bandwidth."""

  chip: Chip
  share: float

  @property
  def hbm_bytes(self) -> float:
    return self.chip.hbm_bytes * self.share

  @property
  def peak_flops(self) -> float:
    return self.chip.peak_flops * self.share

  @property
  def hbm_bandwidth(self) -> float:
    return self.chip.hbm_bandwidth * self.share

  def roofline_seconds(self, flops: float, bytes_accessed: float) -> float:
    """The time a step needs at best: limited by compute or by memory bandwidth."""
    return max(flops / self.peak_flops, bytes_accessed / self.hbm_bandwidth)


def device_peak(device) -> Optional[DevicePeak]:
  """The peak figures of one JAX device (or compile-only TPU device), if known."""
  chip = chip_of(getattr(device, "device_kind", ""))
  if chip is None:
    return None
  return DevicePeak(chip, device_share(chip, getattr(device, "num_cores", None)))
