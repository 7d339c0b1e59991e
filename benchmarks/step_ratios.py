"""Ratios of two series of step times taken in the same rounds (no JAX: the PyTorch
peer's venv imports it too).

`step_time.py` and `peer_pytorch.py` run their variants (and the two implementations)
round-robin, one step each per round, so step i of every series ran within seconds of
step i of the others. This machine is shared: its speed drifts by 20-30% over minutes
and other processes' bursts slow single steps. Three summaries of a ratio, each
robust to something else:
  * "median": median(times) / median(reference);
  * "of_best": min(times) / min(reference), the steps least disturbed;
  * "paired": the median over rounds of times[i] / reference[i], so a slow spell
    lasting a round divides out.
"""
from __future__ import annotations

import statistics
from typing import Dict, Sequence


def ratios(times: Sequence[float], reference: Sequence[float]) -> Dict[str, float]:
  """{"median", "of_best", "paired"} of `times` over `reference` (see the module
  docstring), rounded to 3 decimals. Both series hold one step per round, the same
  rounds."""
  if len(times) != len(reference) or not times:
    raise ValueError(f"need the same number (at least 1) of steps in both series, got "
                     f"{len(times)} and {len(reference)}")
  return {
      "median": round(statistics.median(times) / statistics.median(reference), 3),
      "of_best": round(min(times) / min(reference), 3),
      "paired": round(statistics.median(t / r for t, r in zip(times, reference)), 3),
  }
