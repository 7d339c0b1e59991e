"""benchmarks/step_ratios.py: the three summaries of a ratio of step times, and the paired
ratio's 95% interval, by hand and by simulation."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))

from step_ratios import median_interval, ratio_fields, ratios  # noqa: E402


def test_ratios_by_hand():
  # The reference ran its third step in a slow spell: the paired median ignores it.
  times, reference = [2.0, 4.0, 3.0], [1.0, 2.0, 4.0]
  assert ratios(times, reference) == {"median": 1.5,        # 3 / 2
                                      "of_best": 2.0,       # 2 / 1
                                      "paired": 2.0,        # median(2, 2, 0.75)
                                      "paired_ci95": None}  # 3 rounds are too few


def test_ratio_fields_name_each_summary():
  times, reference = [2.0, 4.0, 3.0], [1.0, 2.0, 4.0]
  assert ratio_fields("ratio_to_xl", times, reference) == {
      "ratio_to_xl": 1.5, "ratio_to_xl_of_best": 2.0, "ratio_to_xl_paired": 2.0,
      "ratio_to_xl_paired_ci95": None}


def test_ratios_need_the_same_rounds():
  with pytest.raises(ValueError, match="same number"):
    ratios([1.0, 2.0], [1.0])
  with pytest.raises(ValueError, match="same number"):
    ratios([], [])


def test_median_interval_by_hand():
  # n = 5: even the range covers the median with 1 - 2/32 < 95% only.
  assert median_interval([1.0, 2.0, 3.0, 4.0, 5.0]) is None
  # n = 7: P(all 7 above the median) = 1/128 <= 2.5% < P(6 or more) = 8/128: the range.
  assert median_interval([1.3, 1.1, 1.7, 1.2, 1.0, 1.5, 1.4]) == (1.0, 1.7)
  # n = 20: P(Binomial(20, 1/2) <= 5) = 21700/2**20 = 2.07% <= 2.5% < P(<= 6) = 5.77%:
  # the 6th smallest to the 6th largest.
  values = [float(v) for v in np.random.default_rng(0).permutation(20)]
  assert median_interval(values) == (5.0, 14.0)


def test_median_interval_covers_the_median_95_percent_of_the_time():
  # Lognormal ratios around a true median of 1.1037 (off the 3-decimal grid the bounds
  # are rounded to), 20 rounds: the interval's coverage is 1 - 2 * 21700/2**20 = 95.86%
  # in theory; 4,000 trials measure it to +-0.32% (one bound further in, 7th to 14th,
  # covers 89%; one further out, 5th to 16th, 99%).
  rng = np.random.default_rng(1)
  median = 1.1037
  draws = median * np.exp(0.08 * rng.standard_normal((4000, 20)))
  intervals = [median_interval(list(row)) for row in draws]
  covered = np.mean([low <= median <= high for low, high in intervals])
  assert 0.945 <= covered <= 0.972
