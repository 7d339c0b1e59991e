"""gin errors that name the problem and the fix, on a small configurable of the test's own
(test_main.py checks the same messages through the real gin files and the entry point)."""
import dataclasses
import re
from typing import Optional, Tuple

import gin
import pytest

from memorizing_jax import gin_errors


@dataclasses.dataclass(frozen=True)
class Sizes:
  batch_size: int = 8
  learning_rate: float = 0.1
  eval_batches: Optional[int] = None
  shape: Tuple[int, ...] = (1, 2)


gin.external_configurable(Sizes, module="gin_errors_test")


@pytest.fixture(autouse=True)
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def _parse_error(bindings: str) -> Exception:
  with pytest.raises(Exception) as raised:
    gin.parse_config(bindings)
  return raised.value


def test_a_misspelt_parameter_gets_a_suggestion():
  error = gin_errors.explain_parse_error(_parse_error("gin_errors_test.Sizes.batch_sise = 4"))
  assert isinstance(error, gin_errors.ConfigError)
  assert str(error).startswith("gin configuration error: ")
  assert "\nDid you mean: batch_size?" in str(error)


def test_a_parameter_far_from_any_lists_the_parameters():
  error = gin_errors.explain_parse_error(_parse_error("gin_errors_test.Sizes.colour = 4"))
  assert str(error).endswith(
      "\nIts parameters are: batch_size, learning_rate, eval_batches, shape")


def test_a_misspelt_configurable_gets_a_suggestion():
  error = gin_errors.explain_parse_error(_parse_error("gin_errors_test.Size.batch_size = 4"))
  assert "\nDid you mean: gin_errors_test.Sizes" in str(error)


def test_a_macro_never_set_says_how_to_set_it():
  gin.parse_config("gin_errors_test.Sizes.batch_size = %BATCH")
  with pytest.raises(Exception) as raised:
    gin.finalize()
    gin.get_configurable(Sizes)()
  assert str(gin_errors.explain_parse_error(raised.value)) == (
      "gin configuration error: the macro BATCH is used but never set: set it, e.g. "
      "--gin_param=\"BATCH=...\"")


def test_a_macro_no_file_uses_is_named():
  gin.parse_config("gin_errors_test.Sizes.batch_size = %BATCH_SIZE\nBATCH_SIZE = 4")
  gin_errors.check_macros_are_used(["BATCH_SIZE = 4"])
  with pytest.raises(gin_errors.ConfigError,
                     match=r"(?s)'BATCH_SIZ = 4' sets the macro BATCH_SIZ, which no gin file "
                           r"uses.*Did you mean: BATCH_SIZE"):
    gin_errors.check_macros_are_used(["BATCH_SIZ = 4"])


@pytest.mark.parametrize("binding,message", [
    ("batch_size = 'x'", "gin_errors_test.Sizes.batch_size = 'x' is a str, but "
                         "Sizes.batch_size takes int"),
    ("batch_size = True", "is a bool, but Sizes.batch_size takes int"),
    ("eval_batches = 'all'", "is a str, but Sizes.eval_batches takes Optional[int]"),
    ("shape = [1, 'a']", "is a list, but Sizes.shape takes Tuple[int, ...]"),
])
def test_a_value_of_the_wrong_type_is_named(binding, message):
  gin.parse_config(f"gin_errors_test.Sizes.{binding}")
  with pytest.raises(gin_errors.ConfigError, match=re.escape(message)):
    gin_errors.check_field_types()


def test_values_of_the_right_type_pass():
  gin.parse_config("gin_errors_test.Sizes.learning_rate = 1\n"  # an int for a float
                   "gin_errors_test.Sizes.eval_batches = None\n"
                   "gin_errors_test.Sizes.shape = [3, 4]\n"  # a gin list for a tuple
                   "gin_errors_test.Sizes.batch_size = %B\nB = 16")
  gin_errors.check_field_types()


def test_a_macro_resolves_before_its_type_is_checked():
  gin.parse_config("gin_errors_test.Sizes.batch_size = %B\nB = 8.5")
  with pytest.raises(gin_errors.ConfigError,
                     match=r"gin_errors_test\.Sizes\.batch_size = %B \(= 8\.5\) is a float"):
    gin_errors.check_field_types()
