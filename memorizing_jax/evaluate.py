r"""Score a trained run's checkpoint on a split: the evaluation-only command.

  python -m memorizing_jax.evaluate --workdir=runs/quickstart \
      [--step=300] [--task=python_stdlib --split=test] [--memory_slots=8192] \
      [--memory_gain] [--max_batches=100] [--batch_size=16] [--position_edges=256,1536] \
      [--mesh_data=-1 --mesh_model=1] [--out=scores.json]

The run's config, vocabulary and parameters come from the workdir (`inference.load`,
onto a mesh of this host's devices); the split is read from a fresh model state as
training reads it (`inference/evaluation.py`). Reports perplexity, bits per token
and accuracy, split by position in the document; --memory_gain also reads with the
memory ablated (perplexity without memory, per bucket too, and the tokens split by
their gain); --memory_slots reads with a memory of another size than training's.
Writes JSON (default `<workdir>/eval/<name>/step_<step>.json`) and TensorBoard
scalars at the checkpoint's step (default in `<workdir>/eval/<name>`), `<name>`
being the split, e.g. `validation`, `pg19-test`, `validation-mem8192`. Prints a
summary, then the result as one JSON line. Bad input (no checkpoint, an unknown
split, a memory that does not fit the model, a batch that does not divide over the
mesh) exits with status 1 and a message that says what to change, writing nothing.
One process. docs/evaluation.md has the details.

This module holds the command's flags and `main`; the scoring is
`checkpoint_evaluation.evaluate_checkpoint`, the summary and files
`evaluation_output.py`.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Optional, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from memorizing_jax import command_line  # noqa: E402  (--workdir, --out)
from memorizing_jax import host_memory  # noqa: E402
from memorizing_jax.checkpointing.fallback import CorruptCheckpointError  # noqa: E402
from memorizing_jax.data import repeats  # noqa: E402
from memorizing_jax.train.partitioner import MeshConfig  # noqa: E402

# The scoring (checkpoint_evaluation) and the output (evaluation_output) are imported in
# `main`, not here: they load TensorFlow (seqio, clu), which made `--help` take 7.6 s
# instead of 1.7 s.

FLAGS = flags.FLAGS
flags.declare_key_flag("workdir")  # required
flags.declare_key_flag("out")
flags.DEFINE_integer("step", None, "The checkpoint to score (default: the newest intact "
                     "one).")
flags.DEFINE_string("task", None, "The task to read (default: the run's).")
flags.DEFINE_string("split", None, "The split to read (default: the run's eval split).")
flags.DEFINE_integer("memory_slots", None, "Read with memories of this many slots "
                     "(default: the run's); at least knn_k and one segment.")
flags.DEFINE_integer("max_batches", None, "Read at most this many batches (default: the "
                     "whole split).")
flags.DEFINE_integer("batch_size", None, "Rows per batch (default: the run's "
                     "DataConfig.eval_batch_size); must divide over --mesh_data.")
flags.DEFINE_list("position_edges", None, "Split the targets by position in the document "
                  "at these positions (default: the local context, L or 2L with the XL "
                  "cache, then the paper's memory sizes 1536,8192,65536 beyond it); "
                  "empty: no split.")
flags.DEFINE_bool("memory_gain", False, "Also read with the memory ablated: perplexity "
                  "without memory, per position bucket too, and the tokens split by gain.")
flags.DEFINE_list("gain_edges", ["-1", "-0.1", "-0.01", "0.01", "0.1", "1"],
                  "With --memory_gain: split the targets by gain (loss without memory minus "
                  "loss with it, nats) at these values.")
flags.DEFINE_list("copy_edges", [], "Split the targets by how far back copying (the token "
                  "after the latest earlier occurrence of the --copy_context tokens before "
                  "it) would find them, at these distances; empty: no split.")
flags.DEFINE_integer("copy_context", repeats.COPY_CONTEXT,
                     "Tokens of context copying matches (with --copy_edges).")
flags.DEFINE_string("data_dir", None, "Where the task's data and token caches are (default: "
                    "the run's DataConfig.data_dir, else $MEMORIZING_JAX_DATA_DIR).")
flags.DEFINE_integer("mesh_data", -1, "Devices on the data (batch) axis; -1: all that "
                     "--mesh_model and --mesh_memory leave.")
flags.DEFINE_integer("mesh_model", 1, "Devices on the model axis (heads, MLP, vocabulary).")
flags.DEFINE_integer("mesh_memory", 1, "Devices on the memory axis, over which every "
                     "memory's slots are split (for a memory too large for one device).")
flags.DEFINE_string("events_dir", None, "Write TensorBoard events here (default "
                    "<workdir>/eval/<name>); empty: none.")


def _numbers(name: str, kind=int) -> Optional[tuple]:
  """The list flag `name` as a tuple of `kind` (None when unset)."""
  values = getattr(FLAGS, name)
  try:
    return None if values is None else tuple(kind(v) for v in values)
  except ValueError as e:
    raise ValueError(f"--{name} takes comma-separated {'integers' if kind is int else 'numbers'}"
                     f", got {','.join(values)}") from e


def _config_from_flags() -> dict:
  """`EvaluationConfig`'s fields, from the flags."""
  return dict(
      step=FLAGS.step, task=FLAGS.task, split=FLAGS.split, memory_slots=FLAGS.memory_slots,
      batch_size=FLAGS.batch_size, max_batches=FLAGS.max_batches,
      position_edges=_numbers("position_edges"), memory_gain=FLAGS.memory_gain,
      gain_edges=_numbers("gain_edges", float), copy_edges=_numbers("copy_edges"),
      copy_context=FLAGS.copy_context, data_dir=FLAGS.data_dir)


def main(argv: Sequence[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; flags are --workdir=... etc.")
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required (e.g. --workdir=runs/quickstart)")
  host_memory.reuse_freed_memory_on_cpu()  # before JAX's backend starts
  # pylint: disable=g-import-not-at-top  (TensorFlow: see the top of this module)
  from memorizing_jax import checkpoint_evaluation, evaluation_output
  # pylint: enable=g-import-not-at-top
  command_line.hide_accelerators_from_tensorflow()
  try:
    config = checkpoint_evaluation.EvaluationConfig(**_config_from_flags())
    mesh = MeshConfig(data=FLAGS.mesh_data, model=FLAGS.mesh_model, memory=FLAGS.mesh_memory)
    result = checkpoint_evaluation.evaluate_checkpoint(FLAGS.workdir, config, mesh)
  except (ValueError, OSError, CorruptCheckpointError) as e:
    # Bad input: the message names the problem and the fix; the traceback is for bugs.
    print(f"error: {e}", file=sys.stderr)
    return 1
  json_path, events_dir = evaluation_output.default_paths(result)
  json_path = FLAGS.out or json_path
  events_dir = events_dir if FLAGS.events_dir is None else FLAGS.events_dir
  print(evaluation_output.describe(result))
  status = 0
  try:
    evaluation_output.write_outputs(result, json_path, events_dir)
    print(f"wrote {json_path}" + (f" and TensorBoard events in {events_dir}"
                                  if events_dir else ""))
  except OSError as e:
    print(f"error: could not write the result ({e}); it is the JSON line below",
          file=sys.stderr)
    status = 1
  print(json.dumps(result, sort_keys=True))
  return status


def run() -> None:
  app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
  run()
