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
"paired_ci95" bounds that median: the order statistics of the per-round ratios that
hold the true median with at least 95% probability, for any distribution of the
ratios, as long as rounds are independent (the sign-test interval: the j-th smallest
and j-th largest, j the largest with P(Binomial(n, 1/2) < j) <= 2.5%). It needs 6
rounds or more (with 5 even the smallest and largest cover only 93.75%); with 6-8 it
is their range, with 20 the 6th smallest to the 6th largest.
"""
from __future__ import annotations

import math
import statistics
from typing import Dict, Optional, Sequence, Tuple


def ratios(times: Sequence[float], reference: Sequence[float]) -> Dict[str, object]:
  """{"median", "of_best", "paired", "paired_ci95"} of `times` over `reference` (see the
  module docstring), rounded to 3 decimals; "paired_ci95" is (low, high), or None
  with fewer than 6 rounds. Both series hold one step per round, the same rounds."""
  if len(times) != len(reference) or not times:
    raise ValueError(f"need the same number (at least 1) of steps in both series, got "
                     f"{len(times)} and {len(reference)}")
  per_round = [t / r for t, r in zip(times, reference)]
  return {
      "median": round(statistics.median(times) / statistics.median(reference), 3),
      "of_best": round(min(times) / min(reference), 3),
      "paired": round(statistics.median(per_round), 3),
      "paired_ci95": median_interval(per_round),
  }


def ratio_fields(name: str, times: Sequence[float], reference: Sequence[float]
                 ) -> Dict[str, object]:
  """`ratios` as a benchmark line's fields: {name: median, name + "_of_best",
  name + "_paired", name + "_paired_ci95"}, e.g. name "ratio_to_xl"."""
  summary = ratios(times, reference)
  return {name if kind == "median" else f"{name}_{kind}": value
          for kind, value in summary.items()}


def median_interval(values: Sequence[float], confidence: float = 0.95
                    ) -> Optional[Tuple[float, float]]:
  """(low, high), rounded to 3 decimals, holding the median of the distribution that
  `values` are independent draws of with probability >= `confidence` (the sign-test
  interval, see the module docstring), or None where n values are too few."""
  n = len(values)
  tail = (1.0 - confidence) / 2
  below, j = 0.0, 0  # below = P(Binomial(n, 1/2) <= j - 1)
  while j < n // 2 and below + math.comb(n, j) / 2**n <= tail:
    below += math.comb(n, j) / 2**n
    j += 1
  if j == 0:
    return None
  ordered = sorted(values)
  return (round(ordered[j - 1], 3), round(ordered[n - j], 3))
