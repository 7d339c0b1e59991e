"""benchmarks/profile_step.py's --xla_option parsing: XLA refuses "true" for a boolean option."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))

from profile_step import xla_option  # noqa: E402


def test_booleans_become_bools_and_the_rest_stays_text():
  assert xla_option("xla_cpu_enable_fast_min_max=true") == ("xla_cpu_enable_fast_min_max", True)
  assert xla_option("xla_cpu_enable_fast_min_max=False") == ("xla_cpu_enable_fast_min_max", False)
  assert xla_option("xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT") == (
      "xla_cpu_experimental_ynn_fusion_type", "LIBRARY_FUSION_TYPE_DOT")
  assert xla_option("key=a=b") == ("key", "a=b")  # only the first "=" splits
