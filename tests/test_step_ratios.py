"""benchmarks/step_ratios.py: the three summaries of a ratio of step times, by hand."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))

from step_ratios import ratios  # noqa: E402


def test_ratios_by_hand():
  # The reference ran its third step in a slow spell: the paired median ignores it.
  times, reference = [2.0, 4.0, 3.0], [1.0, 2.0, 4.0]
  assert ratios(times, reference) == {"median": 1.5,        # 3 / 2
                                      "of_best": 2.0,       # 2 / 1
                                      "paired": 2.0}        # median(2, 2, 0.75)


def test_ratios_need_the_same_rounds():
  with pytest.raises(ValueError, match="same number"):
    ratios([1.0, 2.0], [1.0])
  with pytest.raises(ValueError, match="same number"):
    ratios([], [])
