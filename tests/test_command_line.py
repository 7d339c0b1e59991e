"""What the command-line entry points share (`memorizing_jax.command_line`): flags defined
once, listed in each command's --help, and the TensorFlow start-up step."""
import subprocess
import sys

import pytest
from absl import flags

from memorizing_jax import command_line
from memorizing_jax import compile as compile_command  # pylint: disable=unused-import
from memorizing_jax import evaluate as evaluate_command  # pylint: disable=unused-import
from memorizing_jax import main as main_command  # pylint: disable=unused-import

FLAGS = flags.FLAGS


def test_the_commands_share_one_definition_of_each_common_flag():
  """All three commands imported into one process (as the tests and the study do): each
  shared flag is defined by command_line alone."""
  for name in (*command_line.GIN_FLAGS, "workdir", "out"):
    assert FLAGS.find_module_defining_flag(name) == command_line.__name__, name


@pytest.fixture
def parsed():
  def parse(argv):
    FLAGS(["command"] + argv)
  yield parse
  FLAGS.unparse_flags()


def test_gin_search_paths_come_from_both_spellings_in_order(parsed):
  parsed(["--gin_search_path=a", "--gin_search_paths=c,d", "--gin_search_path=b"])
  assert command_line.gin_search_path_flags() == ["a", "b", "c", "d"]
  FLAGS.unparse_flags()
  parsed([])
  assert command_line.gin_search_path_flags() == []


@pytest.mark.parametrize("module, shared", [
    ("memorizing_jax.main", ("--gin_file", "--gin_param", "--gin_search_path", "--workdir")),
    ("memorizing_jax.compile", ("--gin_file", "--gin_param", "--gin_search_path", "--out")),
    ("memorizing_jax.evaluate", ("--workdir", "--out")),
])
def test_each_command_lists_the_shared_flags_it_reads_in_its_help(module, shared):
  done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                        text=True, timeout=300, check=False)
  assert "Try --helpfull" in done.stdout, done.stderr[-2000:]  # (absl's --help exits 1)
  for flag in shared:
    assert flag in done.stdout, (module, flag)
  if module == "memorizing_jax.evaluate":
    assert "--gin_file" not in done.stdout  # not a flag evaluation reads


def test_tensorflow_is_kept_off_the_accelerators():
  code = ("import tensorflow as tf; from memorizing_jax import command_line; "
          "command_line.hide_accelerators_from_tensorflow(); "
          "assert tf.config.get_visible_devices('GPU') == []; "
          "assert tf.config.get_visible_devices('CPU')")
  subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
