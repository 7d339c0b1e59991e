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
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from memorizing_jax.data import repeats  # noqa: E402  (numpy only)

FLAGS = flags.FLAGS
# --workdir and --out mean here what they mean to memorizing_jax.main and .compile;
# allow_override lets those modules and this one share a process (tests, the study).
flags.DEFINE_string("workdir", None, "The run's workdir (or its checkpoints/ folder); "
                    "required.", allow_override=True)
flags.DEFINE_string("out", None, "Write the JSON result here (default "
                    "<workdir>/eval/<name>/step_<step>.json).", allow_override=True)
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

# The paper's memory sizes: the default position edges beyond the local context.
PAPER_MEMORY_SIZES = (1536, 8192, 65536)


def _increasing(name: str, values: Sequence[Any], positive: bool = True) -> None:
  if list(values) != sorted(set(values)) or (positive and any(v <= 0 for v in values)):
    raise ValueError(f"{name} must be increasing{' and positive' if positive else ''}, "
                     f"got {tuple(values)}")


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
  """What to score and how to split it.

  Attributes:
    step: the checkpoint (None: the newest intact one).
    task, split: what to read (None: the run's task, its eval split).
    memory_slots: the memory size to read with (None: the run's).
    batch_size: rows per batch (None: the run's eval batch size).
    max_batches: stop after this many batches (None: the whole split).
    position_edges: split by position in the document (None: `default_position_edges`;
      (): no split).
    memory_gain: also read with the memory ablated.
    gain_edges: with memory_gain, split by gain (nats) at these values.
    copy_edges: split by how far back copying would find a target (): no split.
    copy_context: the tokens copying matches.
    data_dir: where the task's data is (None: the run's).
  """

  step: Optional[int] = None
  task: Optional[str] = None
  split: Optional[str] = None
  memory_slots: Optional[int] = None
  batch_size: Optional[int] = None
  max_batches: Optional[int] = None
  position_edges: Optional[Tuple[int, ...]] = None
  memory_gain: bool = False
  gain_edges: Tuple[float, ...] = (-1.0, -0.1, -0.01, 0.01, 0.1, 1.0)
  copy_edges: Tuple[int, ...] = ()
  copy_context: int = repeats.COPY_CONTEXT
  data_dir: Optional[str] = None

  def __post_init__(self):
    for name in ("step", "memory_slots", "batch_size", "max_batches"):
      value = getattr(self, name)
      if value is not None and value < (0 if name == "step" else 1):
        raise ValueError(f"{name} must be {'>= 0' if name == 'step' else 'positive'}, "
                         f"got {value}")
    if self.position_edges is not None:
      _increasing("position_edges", self.position_edges)
    _increasing("gain_edges", self.gain_edges, positive=False)
    _increasing("copy_edges", self.copy_edges)
    if self.copy_context < 1:
      raise ValueError(f"copy_context must be positive, got {self.copy_context}")


def default_position_edges(model_config) -> Tuple[int, ...]:
  """The local context (L, or 2L with the XL cache: what a model reaches without
  memory), then the paper's memory sizes beyond it."""
  window = model_config.segment_length * (2 if model_config.use_xl_cache else 1)
  return (window,) + tuple(e for e in PAPER_MEMORY_SIZES if e > window)


def with_memory_slots(model_config, memory_slots: Optional[int]):
  """`model_config` reading with `memory_slots` (None: as it is).

  Raises:
    ValueError: the model has no memory, or the size does not fit it (fewer slots
      than knn_k or than one segment), naming the flag.
  """
  if memory_slots is None or memory_slots == model_config.memory_slots:
    return model_config
  if not model_config.knn_layers:
    raise ValueError(f"--memory_slots={memory_slots}: the run's model has no memory "
                     "(knn_layers=()), so there is no memory size to change")
  try:
    return dataclasses.replace(model_config, memory_slots=memory_slots)
  except ValueError as e:
    raise ValueError(f"--memory_slots={memory_slots} does not fit the run's model: {e}") from e


def run_name(config: EvaluationConfig, run_task: str, trained_slots: int, slots: int,
             split: str) -> str:
  """The result's folder under `<workdir>/eval`: split, task when not the run's,
  memory size when not the run's."""
  name = split if config.task in (None, run_task) else f"{config.task}-{split}"
  return name if slots == trained_slots else f"{name}-mem{slots}"


def copy_bands_of_split(data_config, vocabulary, context: int, edges: Sequence[int]
                        ) -> Callable[[int], Any]:
  """document id of the eval split -> its `repeats.copy_bands` (computed once each)."""
  from memorizing_jax.data import token_cache  # pylint: disable=g-import-not-at-top
  cache = token_cache.load_or_build(data_config.task, data_config.eval_split, vocabulary,
                                    data_config.data_dir, progress=False)
  computed: Dict[int, Any] = {}

  def bands(document_id: int):
    if document_id not in computed:
      computed[document_id] = repeats.copy_bands(cache.document(document_id), context,
                                                 vocabulary.vocab_size, edges)
    return computed[document_id]

  return bands


def evaluate_checkpoint(workdir: str, config: EvaluationConfig = EvaluationConfig(),
                        mesh=None, extra_tallies: Sequence[Callable] = ()) -> Dict[str, Any]:
  """Scores a checkpoint of `workdir` (see the module docstring).

  Args:
    mesh: a `train.partitioner.MeshConfig` (None: all devices on the data axis).
    extra_tallies: functions (model config, data config) -> a tally or None; a tally
      has `add(ScoredBatch)` and `result() -> dict` (merged into the result) and,
      when it reads `top_positions`, `retrievals = True`.
  Returns:
    {"step", "loss", "perplexity", "bits_per_token", "accuracy", "tokens", the splits
    ("by_position", ...), with memory_gain "loss_without_memory",
    "perplexity_without_memory", "gain_share" and "by_memory_gain", and
    "evaluation": what was read how (workdir, task, split, memory sizes, batches,
    mesh, edges, seconds)}.
  Raises:
    NoCheckpointError, CorruptCheckpointError, ValueError: see `inference.load`, and a
      config, split, memory size or batch size that does not fit.
  """
  started = time.perf_counter()
  from memorizing_jax.inference import evaluation, loading  # pylint: disable=g-import-not-at-top
  from memorizing_jax.train import inputs, partitioner as partitioner_lib  # pylint: disable=g-import-not-at-top
  partitioner = partitioner_lib.Partitioner(mesh or partitioner_lib.MeshConfig())
  loaded = loading.load(workdir, config.step, mesh=partitioner.mesh)
  model_config = with_memory_slots(loaded.config, config.memory_slots)
  data_config = _data_config(loaded.data_config, config)
  partitioner.check_batch_size(data_config.eval_batch_size, "--batch_size" if config.batch_size
                               else "the run's eval batch size (set --batch_size)")
  edges = (default_position_edges(model_config) if config.position_edges is None
           else tuple(config.position_edges))
  tallies = [evaluation.Tally(_splits(config, edges, data_config, loaded.vocabulary))]
  tallies += [t for t in (make(model_config, data_config) for make in extra_tallies) if t]
  stream = inputs.make_stream(data_config, model_config.segment_length, loaded.vocabulary,
                              mode="eval")
  batches = 0
  for scored in evaluation.score_batches(
      model_config, loaded.params, stream, mesh=partitioner.mesh, rules=partitioner.rules,
      memory_gain=config.memory_gain, max_batches=config.max_batches,
      retrievals=any(getattr(t, "retrievals", False) for t in tallies)):
    batches += 1
    for tally in tallies:
      tally.add(scored)
  result = {"step": loaded.step}
  for tally in tallies:
    result.update(tally.result())
  if config.copy_edges:
    result["copy_context"] = config.copy_context
  memory = (lambda c: c.memory_slots if c.knn_layers else 0)
  result["evaluation"] = dict(
      workdir=loaded.workdir, task=data_config.task, split=data_config.eval_split,
      name=run_name(config, loaded.data_config.task, memory(loaded.config),
                    memory(model_config), data_config.eval_split),
      memory_slots=memory(model_config), trained_memory_slots=memory(loaded.config),
      segment_length=model_config.segment_length, batch_size=data_config.eval_batch_size,
      max_batches=config.max_batches, batches=batches, mesh=dict(partitioner.mesh.shape),
      position_edges=list(edges),
      gain_edges=list(config.gain_edges) if config.memory_gain else None,
      seconds=round(time.perf_counter() - started, 2))
  return result


def _data_config(run_data, config: EvaluationConfig):
  """The run's DataConfig reading what `config` asks for."""
  return dataclasses.replace(
      run_data, task=config.task or run_data.task, eval_split=config.split or run_data.eval_split,
      eval_batch_size=config.batch_size or run_data.eval_batch_size,
      data_dir=config.data_dir or run_data.data_dir)


def _splits(config: EvaluationConfig, edges: Sequence[int], data_config, vocabulary) -> list:
  """The `inference.evaluation.Split`s `config` asks for."""
  from memorizing_jax.inference import evaluation  # pylint: disable=g-import-not-at-top
  splits = [evaluation.Split.by_position(edges)] if edges else []
  if config.memory_gain:
    splits.append(evaluation.Split.by_memory_gain(config.gain_edges))
  if config.copy_edges:
    splits.append(evaluation.Split.by_copy_source(config.copy_edges, copy_bands_of_split(
        data_config, vocabulary, config.copy_context, config.copy_edges)))
  return splits


# -- output -------------------------------------------------------------------------

def _label(start, end) -> str:
  if start is None and end is None:
    return "none"
  if start is None:
    return f"below_{end:g}"
  return f"from_{start:g}" if end is None else f"{start:g}_to_{end:g}"


def scalars(result: Dict[str, Any]) -> Dict[str, float]:
  """The result as TensorBoard scalars: the trainer's eval tags (loss, perplexity,
  bits_per_token, accuracy, tokens), the memory ablation's, and
  `<split>/<metric>/<bucket>` per bucket that has tokens."""
  keys = ("loss", "perplexity", "bits_per_token", "accuracy", "tokens",
          "loss_without_memory", "perplexity_without_memory", "gain_share")
  out = {k: float(result[k]) for k in keys if result.get(k) is not None}
  for split in ("by_position", "by_memory_gain", "by_copy_source"):
    for row in result.get(split, ()):
      if not row["tokens"]:
        continue
      for metric in ("perplexity", "perplexity_without_memory", "gain_share", "tokens"):
        if row.get(metric) is not None:
          out[f"{split}/{metric}/{_label(row['start'], row['end'])}"] = float(row[metric])
  return out


def default_paths(result: Dict[str, Any]) -> Tuple[str, str]:
  """(JSON path, events folder) under `<workdir>/eval/<name>` of the run scored."""
  run_dir = result["evaluation"]["workdir"].rstrip("/")
  if os.path.basename(run_dir) == "checkpoints":  # given the checkpoints folder itself
    run_dir = os.path.dirname(run_dir)
  folder = os.path.join(run_dir, "eval", result["evaluation"]["name"])
  return os.path.join(folder, f"step_{result['step']}.json"), folder


def write_outputs(result: Dict[str, Any], json_path: str, events_dir: Optional[str]) -> None:
  """The result as indented JSON at `json_path`; its `scalars` as TensorBoard events at
  the checkpoint's step in `events_dir` (None: none)."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  path = epath.Path(json_path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(result, indent=1) + "\n")
  if events_dir:
    from clu import metric_writers  # pylint: disable=g-import-not-at-top
    from memorizing_jax.train import metrics  # pylint: disable=g-import-not-at-top
    writer = metric_writers.SummaryWriter(events_dir)  # (the summary is printed instead)
    try:
      writer.write_scalars(result["step"], {k: metrics.summary_value(v)
                                            for k, v in scalars(result).items()})
    finally:
      writer.flush()
      writer.close()


def _ppl(value: Optional[float]) -> str:
  return "-" if value is None or not math.isfinite(value) else f"{value:.3f}"


def describe(result: Dict[str, Any]) -> str:
  """A few lines a person reads before the JSON line."""
  e = result["evaluation"]
  memory = f"memory {e['memory_slots']} slots" if e["memory_slots"] else "no memory"
  if e["memory_slots"] != e["trained_memory_slots"]:
    memory += f" (trained with {e['trained_memory_slots']})"
  lines = [f"step {result['step']} of {e['workdir']} on {e['task']}/{e['split']}: {memory}, "
           f"{e['batches']} batches of {e['batch_size']} x {e['segment_length']} tokens, "
           f"mesh {e['mesh']}, {e['seconds']:.1f} s",
           f"  perplexity {_ppl(result['perplexity'])} (loss {result['loss']:.4f} nats/token, "
           f"{result['bits_per_token']:.4f} bits/token, accuracy {result['accuracy']:.4f}, "
           f"{result['tokens']} tokens)"]
  if "perplexity_without_memory" in result:
    lines.append(f"  without memory: perplexity {_ppl(result['perplexity_without_memory'])}; "
                 f"the memory lowers the loss of {100 * (result['gain_share'] or 0):.1f}% "
                 "of the tokens")
  for split in ("by_position", "by_copy_source", "by_memory_gain"):
    rows = [r for r in result.get(split, ()) if r["tokens"]]
    if rows:
      lines.append(f"  {split.replace('_', ' ')}: " + ", ".join(
          f"{_label(r['start'], r['end'])} {_ppl(r['perplexity'])}"
          + (f" ({_ppl(r['perplexity_without_memory'])} without)"
             if "perplexity_without_memory" in r and split != "by_memory_gain" else "")
          + f" [{r['tokens']}]" for r in rows))
  return "\n".join(lines)


def _numbers(name: str, kind=int) -> Optional[tuple]:
  """The list flag `name` as a tuple of `kind` (None when unset)."""
  values = getattr(FLAGS, name)
  try:
    return None if values is None else tuple(kind(v) for v in values)
  except ValueError as e:
    raise ValueError(f"--{name} takes comma-separated {'integers' if kind is int else 'numbers'}"
                     f", got {','.join(values)}") from e


def config_from_flags() -> EvaluationConfig:
  return EvaluationConfig(
      step=FLAGS.step, task=FLAGS.task, split=FLAGS.split, memory_slots=FLAGS.memory_slots,
      batch_size=FLAGS.batch_size, max_batches=FLAGS.max_batches,
      position_edges=_numbers("position_edges"), memory_gain=FLAGS.memory_gain,
      gain_edges=_numbers("gain_edges", float), copy_edges=_numbers("copy_edges"),
      copy_context=FLAGS.copy_context, data_dir=FLAGS.data_dir)


def _hide_accelerators_from_tensorflow() -> None:
  """TensorFlow (the data pipeline, event files) must not take GPU memory JAX needs."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")


def main(argv: Sequence[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; flags are --workdir=... etc.")
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required (e.g. --workdir=runs/quickstart)")
  from memorizing_jax.checkpointing.fallback import CorruptCheckpointError  # pylint: disable=g-import-not-at-top
  from memorizing_jax.train.partitioner import MeshConfig  # pylint: disable=g-import-not-at-top
  _hide_accelerators_from_tensorflow()
  try:
    config = config_from_flags()
    result = evaluate_checkpoint(FLAGS.workdir, config,
                                 MeshConfig(data=FLAGS.mesh_data, model=FLAGS.mesh_model,
                                            memory=FLAGS.mesh_memory))
  except (ValueError, OSError, CorruptCheckpointError) as e:
    # Bad input: the message names the problem and the fix; the traceback is for bugs.
    print(f"error: {e}", file=sys.stderr)
    return 1
  json_path, events_dir = default_paths(result)
  json_path = FLAGS.out or json_path
  events_dir = events_dir if FLAGS.events_dir is None else FLAGS.events_dir
  print(describe(result))
  status = 0
  try:
    write_outputs(result, json_path, events_dir)
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
