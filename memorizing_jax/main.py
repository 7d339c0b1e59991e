r"""The training entry point, t5x-style flags.

  python -m memorizing_jax.main --gin_file=gin/quickstart.gin \
      [--gin_file=...] [--gin_param="loop.TrainerConfig.total_steps=100"] \
      --workdir=runs/quickstart

t5x's spellings work too (--gin_bindings, --gin_search_paths=a,b), and
--print_config prints the operative config (the run's config.gin) without training.
A binding that sets a macro no gin file uses, or gives a config field a value of
the wrong type, is an error that names it (`memorizing_jax.gin_errors`).

Several processes (hosts) train one model through `jax.distributed`: on a TPU pod
slice nothing more is needed (every worker runs the same command); elsewhere give
each process --coordinator_address=HOST:PORT (process 0's), --num_processes=N and
--process_id=I (or $JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES, $JAX_PROCESS_ID).
`launch/` has scripts for TPU pods, a GPU host and N local CPU processes.

Gin files are looked up as given (relative to the current directory), then in
the checkout's `gin/` folder, then in the installed package's `gin_files/`;
`include` lines inside them resolve the same way. An installed package also has
the command `memorizing-jax-train`, the same as `python -m memorizing_jax.main`.
The gin files bind ordinary classes and functions (`dynamic_registration`); this
module only parses them and calls `memorizing_jax.train.loop.train`.
"""
from __future__ import annotations

import inspect
import logging as std_logging
import os
import pathlib
import sys
from typing import List, Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import gin

from memorizing_jax import command_line
from memorizing_jax import gin_errors
from memorizing_jax import host_memory
from memorizing_jax.gin_errors import ConfigError
from memorizing_jax.train import multihost

# TensorFlow comes in through the data pipeline and the metric writers only: keep its
# C++ logging quiet (set before it is imported).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The trainer (memorizing_jax.train.loop and .checkpoints) is imported in the functions
# that use it, not here: importing it loads TensorFlow and starts JAX's backend, and
# jax.distributed.initialize (in main) refuses to run once a backend has started.

FLAGS = flags.FLAGS
for _name in (*command_line.GIN_FLAGS, "workdir"):  # defined in command_line
  flags.declare_key_flag(_name)
flags.DEFINE_bool("print_config", False,
                  "Parse the gin files and bindings, build and validate the configs, print "
                  "the operative config (what the run's config.gin would hold) and exit "
                  "without training; --workdir is not needed.")
flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                  "Start jax.distributed: auto = when --coordinator_address/--num_processes "
                  "(or their $JAX_* variables) are given, or on a TPU VM; on = always (JAX "
                  "detects TPU pod, Slurm or MPI settings); off = never.")
flags.DEFINE_string("coordinator_address", None,
                    "host:port of process 0 in a multi-process run "
                    "(default $JAX_COORDINATOR_ADDRESS).")
flags.DEFINE_integer("num_processes", None,
                     "Processes in a multi-process run (default $JAX_NUM_PROCESSES).")
flags.DEFINE_integer("process_id", None,
                     "This process's index, 0..num_processes-1 (default $JAX_PROCESS_ID).")
flags.DEFINE_integer("profile_steps", 0,
                     "Trace this many training steps (from the run's second step on) with "
                     "jax.profiler into <workdir>/profile; the same as the binding "
                     "loop.TrainerConfig.profile_steps.")
flags.DEFINE_integer("distributed_timeout", 300,
                     "Seconds to wait for every process to reach the coordinator.")


def gin_search_paths(extra: Sequence[str] = ()) -> List[str]:
  """Folders in which gin files (and their `include`s) are looked up, in order."""
  paths = [os.getcwd(), *extra]
  package = pathlib.Path(__file__).resolve().parent
  # The checkout's gin/ (a source tree or an editable install), then the copy a
  # wheel installs as the package's data folder gin_files/ (see setup.py).
  for folder in (package.parent / "gin", package / "gin_files"):
    if folder.is_dir():
      paths.append(str(folder))
  return list(dict.fromkeys(paths))


def resolve_gin_file(name: str, search_paths: Sequence[str]) -> str:
  """The first existing `<search path>/<name>` (or `name` itself when absolute)."""
  if os.path.isabs(name):
    candidates = [name]
  else:
    candidates = [os.path.join(p, name) for p in search_paths]
    if name.startswith("gin/"):  # "gin/x.gin" also names x.gin in an installed package
      candidates += [os.path.join(p, name[len("gin/"):]) for p in search_paths]
  for candidate in candidates:
    if os.path.isfile(candidate):
      return candidate
  raise FileNotFoundError(f"gin file {name!r} not found in {list(search_paths)}; check the "
                          "name or add its folder with --gin_search_path")


def parse_gin(files: Sequence[str], params: Sequence[str], search_paths: Sequence[str]) -> None:
  """Parses the gin files then the bindings, with errors that name the problem."""
  # Our folders go before gin's own '' (the current directory): for an include that is
  # not under the current directory gin next tries it as a Python package path, which
  # crashes when a folder of that name (say data/ or memory/) is a namespace package.
  prefixes = gin.config._LOCATION_PREFIXES  # pylint: disable=protected-access
  prefixes[:] = list(dict.fromkeys([*search_paths, *prefixes]))
  resolved = [resolve_gin_file(f, search_paths) for f in files]
  # gin logs "Path not found" (an error, on the root logger) for each search path an
  # `include` is not in: noise while parsing, whoever calls this.
  std_logging.getLogger().addFilter(_not_gin_include_search)
  try:
    gin.parse_config_files_and_bindings(resolved, params, finalize_config=True)
  except (ValueError, KeyError, TypeError, SyntaxError, ImportError, IOError) as e:
    raise gin_errors.explain_parse_error(e) from e
  finally:
    std_logging.getLogger().removeFilter(_not_gin_include_search)
  gin_errors.check_macros_are_used(params)
  gin_errors.check_field_types()


def _not_gin_include_search(record: std_logging.LogRecord) -> bool:
  """False for gin's records about looking up an include (see parse_gin)."""
  return not record.pathname.replace("\\", "/").endswith("gin/resource_reader.py")


def _build_train_arguments() -> dict:
  """The arguments gin gives `loop.train` besides workdir and gin_config: the configs,
  each validated as it is built (unbound ones keep `loop.train`'s defaults)."""
  from memorizing_jax.train import loop  # pylint: disable=g-import-not-at-top  (see the top)
  try:
    gin.get_configurable(loop.train)
  except ValueError:  # no file binds loop.train: the defaults
    bindings = {}
  else:
    try:
      bindings = gin.get_bindings(loop.train)  # builds the @Config() references
    except TypeError as e:  # a bad value gin passed on (e.g. a list for a number)
      raise ConfigError(f"gin configuration error: {e}") from e
  return {name: bindings.get(name, parameter.default)
          for name, parameter in inspect.signature(loop.train).parameters.items()
          if name not in ("workdir", "gin_config")}


def load_run_config(files: Sequence[str], params: Sequence[str],
                    extra_search_paths: Sequence[str] = ()) -> dict:
  """Parses the gin config and builds `loop.train`'s arguments (see above)."""
  if not files:
    raise ConfigError("no --gin_file given; start from --gin_file=gin/quickstart.gin")
  parse_gin(files, params, gin_search_paths(extra_search_paths))
  return _build_train_arguments()


def run_training(workdir: str, files: Sequence[str], params: Sequence[str],
                 extra_search_paths: Sequence[str] = ()):
  """Parses the gin config and trains; returns the loop's `TrainResult`."""
  from memorizing_jax.train import loop  # pylint: disable=g-import-not-at-top  (see the top)
  arguments = load_run_config(files, params, extra_search_paths)
  return loop.train(workdir=workdir, gin_config=gin.config_str(), **arguments)


def operative_config(files: Sequence[str], params: Sequence[str],
                     extra_search_paths: Sequence[str] = ()) -> str:
  """What a run's config.gin would hold, after the configs were built and validated."""
  load_run_config(files, params, extra_search_paths)
  return gin.config_str()


class _QuietLibraries(std_logging.Filter):
  """Drops INFO records of chatty libraries (orbax logs every save) from the console."""

  NOISY = ("orbax", "jax/_src", "tensorflow", "seqio", "absl/")

  def filter(self, record) -> bool:
    path = record.pathname.replace("\\", "/")
    if record.levelno >= std_logging.WARNING:
      return True
    return not any(f"/{name}" in path for name in self.NOISY)


def _print_config(params: Sequence[str], search_paths: Sequence[str]) -> int:
  """--print_config: the operative config on stdout, or the error on stderr."""
  try:
    print(operative_config(FLAGS.gin_file, params, search_paths), end="")
  except (ConfigError, ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


def main(argv: Sequence[str]) -> Optional[int]:
  logging.get_absl_handler().addFilter(_QuietLibraries())
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; use --gin_file/--gin_param")
  host_memory.reuse_freed_memory_on_cpu()  # before JAX's backend starts
  params = list(FLAGS.gin_param)
  if FLAGS.profile_steps:
    params.append(f"loop.TrainerConfig.profile_steps = {FLAGS.profile_steps}")
  search_paths = command_line.gin_search_path_flags()
  if FLAGS.print_config:
    return _print_config(params, search_paths)
  try:
    multihost.initialize(multihost.DistributedConfig.from_env(
        FLAGS.distributed, FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
        FLAGS.distributed_timeout))
  except multihost.DistributedError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  command_line.hide_accelerators_from_tensorflow()
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required (e.g. --workdir=runs/quickstart)")
  # Only now: importing the trainer starts JAX's backend (see the top of this module).
  from memorizing_jax.train import checkpoints, loop  # pylint: disable=g-import-not-at-top
  try:
    result = run_training(FLAGS.workdir, FLAGS.gin_file, params, search_paths)
  except (ConfigError, ValueError, OSError, checkpoints.CheckpointMismatchError,
          checkpoints.CorruptCheckpointError, loop.NonFiniteLossError) as e:
    # Bad input: the message names the problem and the fix; the traceback is for bugs.
    logging.debug("", exc_info=True)
    print(f"error: {e}", file=sys.stderr)
    return 1
  if result.stopped_by_signal:
    print(f"stopped by signal at step {result.step}; checkpoint saved in {FLAGS.workdir}")
    return 0
  final = result.evals.get(result.step)
  if final is not None:
    print(f"final evaluation at step {result.step}: perplexity {final['perplexity']:.3f} "
          f"(loss {final['loss']:.4f} nats/token, {final['bits_per_token']:.4f} bits/token, "
          f"accuracy {final['accuracy']:.4f}, {int(final['tokens'])} tokens)")
  return 0


def run() -> None:
  app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
  run()
