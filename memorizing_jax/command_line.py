"""What the command-line entry points (`main`, `compile`, `evaluate`) share: the flags
more than one of them reads, defined once here, and the start-up step that keeps
TensorFlow off the accelerators.

absl flags are global, so a flag two commands read is one flag (and tests and the
study import several commands into one process). Each command declares the shared
flags it reads as its key flags, so that its `--help` lists them:

    for name in command_line.GIN_FLAGS:
      flags.declare_key_flag(name)
"""
from __future__ import annotations

from absl import flags

flags.DEFINE_multi_string("gin_file", [], "Gin files to parse, in order.")
flags.DEFINE_multi_string("gin_param", [], "Gin bindings applied after the files "
                          "(also spelt --gin_bindings, as in t5x).")
flags.DEFINE_alias("gin_bindings", "gin_param")
flags.DEFINE_multi_string("gin_search_path", [], "More folders to look for gin files in.")
flags.DEFINE_list("gin_search_paths", [], "More folders to look for gin files in, "
                  "comma-separated (t5x's spelling; added after --gin_search_path).")
flags.DEFINE_string("workdir", None, "The run's workdir (a local path or gs://...): where "
                    "training writes checkpoints, events and config.gin; what evaluation "
                    "scores (the workdir or its checkpoints/ folder).")
flags.DEFINE_string("out", None, "Write the command's JSON result to this file (evaluation "
                    "writes <workdir>/eval/<name>/step_<step>.json when it is not given).")

# The gin flags, as `main` and `compile` read them (gin_bindings is gin_param's alias).
GIN_FLAGS = ("gin_file", "gin_param", "gin_search_path", "gin_search_paths")


def gin_search_path_flags() -> list:
  """--gin_search_path then --gin_search_paths, in order."""
  return [*flags.FLAGS.gin_search_path, *flags.FLAGS.gin_search_paths]


def hide_accelerators_from_tensorflow() -> None:
  """TensorFlow (the data pipeline, event files) must not take GPU memory JAX needs."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (seconds; only when a command runs)
  tf.config.set_visible_devices([], "GPU")
