"""A trained run's checkpoint scored on a split: what `python -m memorizing_jax.evaluate`
and the paper study run.

`evaluate_checkpoint(workdir, EvaluationConfig(...))` loads the run (`inference.load`,
onto a mesh of this host's devices), reads the split from a fresh model state as
training reads it (`inference.evaluation.score_batches`) and adds the scores up
(`inference.evaluation.Tally`): perplexity, bits per token and accuracy, split by
position in the document, by gain from memory, or by where copying would find a
target. `evaluation_output.py` turns the result into a summary and files.

An entry-point module: it composes inference with the trainer's mesh (`Partitioner`)
and its eval stream (`train.inputs.make_stream`), which inference may not import.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from memorizing_jax.data import repeats, token_cache
from memorizing_jax.data.config import DataConfig
from memorizing_jax.inference import evaluation, loading
from memorizing_jax.model.config import ModelConfig
from memorizing_jax.train import inputs
from memorizing_jax.train import partitioner as partitioner_lib

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
    position_edges: split by position in the document (None: the local context, L
      or 2L with the XL cache, then `PAPER_MEMORY_SIZES` beyond it; (): no split).
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


def _default_position_edges(model_config: ModelConfig) -> Tuple[int, ...]:
  """The local context (L, or 2L with the XL cache: what a model reaches without
  memory), then the paper's memory sizes beyond it."""
  window = model_config.segment_length * (2 if model_config.use_xl_cache else 1)
  return (window,) + tuple(e for e in PAPER_MEMORY_SIZES if e > window)


def _with_memory_slots(model_config: ModelConfig, memory_slots: Optional[int]) -> ModelConfig:
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


def _run_name(config: EvaluationConfig, run_task: str, trained_slots: int, slots: int,
              split: str) -> str:
  """The result's folder under `<workdir>/eval`: split, task when not the run's,
  memory size when not the run's."""
  name = split if config.task in (None, run_task) else f"{config.task}-{split}"
  return name if slots == trained_slots else f"{name}-mem{slots}"


def _copy_bands_of_split(data_config: DataConfig, vocabulary, context: int,
                         edges: Sequence[int]) -> Callable[[int], Any]:
  """document id of the eval split -> its `repeats.copy_bands` (computed once each)."""
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
                        mesh: Optional[partitioner_lib.MeshConfig] = None,
                        extra_tallies: Sequence[Callable] = ()) -> Dict[str, Any]:
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
  partitioner = partitioner_lib.Partitioner(mesh or partitioner_lib.MeshConfig())
  loaded = loading.load(workdir, config.step, mesh=partitioner.mesh)
  model_config = _with_memory_slots(loaded.config, config.memory_slots)
  data_config = _data_config(loaded.data_config, config)
  partitioner.check_batch_size(data_config.eval_batch_size, "--batch_size" if config.batch_size
                               else "the run's eval batch size (set --batch_size)")
  edges = (_default_position_edges(model_config) if config.position_edges is None
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
      name=_run_name(config, loaded.data_config.task, memory(loaded.config),
                    memory(model_config), data_config.eval_split),
      memory_slots=memory(model_config), trained_memory_slots=memory(loaded.config),
      segment_length=model_config.segment_length, batch_size=data_config.eval_batch_size,
      max_batches=config.max_batches, batches=batches, mesh=dict(partitioner.mesh.shape),
      position_edges=list(edges),
      gain_edges=list(config.gain_edges) if config.memory_gain else None,
      seconds=round(time.perf_counter() - started, 2))
  return result


def _data_config(run_data: DataConfig, config: EvaluationConfig) -> DataConfig:
  """The run's DataConfig reading what `config` asks for."""
  return dataclasses.replace(
      run_data, task=config.task or run_data.task, eval_split=config.split or run_data.eval_split,
      eval_batch_size=config.batch_size or run_data.eval_batch_size,
      data_dir=config.data_dir or run_data.data_dir)


def _splits(config: EvaluationConfig, edges: Sequence[int], data_config: DataConfig,
            vocabulary) -> list:
  """The `inference.evaluation.Split`s `config` asks for."""
  splits = [evaluation.Split.by_position(edges)] if edges else []
  if config.memory_gain:
    splits.append(evaluation.Split.by_memory_gain(config.gain_edges))
  if config.copy_edges:
    splits.append(evaluation.Split.by_copy_source(config.copy_edges, _copy_bands_of_split(
        data_config, vocabulary, config.copy_context, config.copy_edges)))
  return splits
