"""The study's runs, each read from the gin files it trains with.

`runs()` lists every run in training order as a `RunSpec`: its gin files (`gin/` here,
layered on the package's train.gin, models/, memory/ and data/) and bindings, how it is
scored, and the steps, batch, segment length, memory size and XL flag its record
reports, all read from the parsed configuration (`read_config`); a fine-tune's learning
rate is its source's last (`final_learning_rate`). `header()` states each study's
settings in the report, read the same way. Only what is the study's own is set here:
which runs, the fine-tunes' share of their source's steps, and how the evaluation
splits its scores.

    specs = runs()                       # parses each run's gin files
    specs = runs(["BATCH_SIZE=8"])       # a binding for every run, before its own
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import gin

from memorizing_jax import main as main_lib
from memorizing_jax.data.config import DataConfig
from memorizing_jax.model.config import ModelConfig
from memorizing_jax.train import optimizer
from memorizing_jax.train.trainer_config import TrainerConfig

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
# The runner and the study's gin files, as commands name them (they run from ROOT).
SCRIPT = os.path.relpath(os.path.join(HERE, "run.py"), ROOT)
GIN_DIR = os.path.relpath(os.path.join(HERE, "gin"), ROOT)

# A fine-tune trains source.steps // FINETUNE_DIVISOR steps ("a tenth" in the report).
FINETUNE_DIVISOR = 10
# How the evaluation splits its scores (the study's own, not the trained configuration's).
# Both studies are scored on the whole validation split (64 synthetic documents; 11
# standard-library packages, 140K tokens).
SYNTHETIC_EVAL_BATCHES = None
STDLIB_EVAL_BATCHES = None
# python_stdlib perplexity is also split by a token's position in its document at the
# memory sizes: beyond 1.5K tokens only the larger memories hold the whole document.
STDLIB_POSITION_EDGES = (1536, 8192, 32768)
# ... and by how far back copying would find a target (the token after the most recent
# earlier occurrence of its 4 preceding tokens; `memorizing_jax.data.repeats`): within
# the segment and XL window (256), or only as far back as each memory size reaches.
STDLIB_COPY_EDGES = (256, 1536, 8192, 32768)

# Filled in by `header` from the configuration of each study's XL-only run.
HEADER = """\
# Memorizing Transformers claims at small scale

Made by `.venv/bin/python {script}` (every figure below comes from its
records in `records/`; rerun the script to reproduce or resume, `--report_only` to
redraw; the training command of each run is listed at the end). Budgets:
synthetic runs {syn.steps} steps each (batch {syn.batch_size} x {syn.segment_length} \
{syn.tokens} tokens, {syn.layers} layers, d_model {syn.d_model});
python_stdlib runs {std.steps} steps each (batch {std.batch_size} x {std.segment_length} \
{std.tokens} tokens, {std.layers} layers),
the fine-tunes a tenth of their source's steps, from the XL-only run's parameters at the
learning rate it ended with; scored on the validation split from a fresh memory
(all of it: 64 synthetic documents; 11 standard-library packages, 140K tokens).
Every model starts its attention temperatures at {temperature:g} and its memory gates at \
sigmoid({gate:g})
(`{gin_dir}/*.gin`; `docs/results/archive/default_init/` holds the study at the
defaults, 5.7 and 0.5), and every run keeps the learning rate constant after warm-up:
{syn.learning_rate:g} on the synthetic task, {std.learning_rate:g} on python_stdlib.

Synthetic task (`memorizing_jax/data/synthetic.py`): statements `<name><value>;`, 24
one-letter names defined with random values (one of 26 letters), then 316 uses: half
repeat one of the 4 most recently stated names, half any defined name. A use is *far*
when the name's previous statement lies outside the XL window (more than one segment
back), so that only the external memory can hold it; *near* otherwise.
Chance on far uses is 1/26 = 3.8%. *Far retrieval hits*: the share of far uses for which
some head's highest-weighted retrieved memory entry lies in the name's previous statement.
"""


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One run: what trains it (gin files and bindings), how it is scored, and what its
  record reports of its configuration, read from the parsed gin files (`read_config`)."""
  study: str
  run: str
  label: str
  gin_files: Tuple[str, ...]
  eval_batches: Optional[int] = None
  # Where the evaluation splits perplexity by position in the document (see
  # `inference.evaluation.Split.by_position`); () for none.
  position_edges: Tuple[int, ...] = ()
  # Where it splits perplexity by the distance copying would find a target at
  # (see `inference.evaluation.Split.by_copy_source`); () for none.
  copy_edges: Tuple[int, ...] = ()
  # Bindings given to every run of the study (`--gin_param`), before the run's own.
  extra_gin_params: Tuple[str, ...] = ()
  init_from_run: Optional[str] = None
  # Fine-tunes: the constant learning rate to train at (no warm-up), so that training
  # goes on at the rate the source run ended with instead of warming up again to the peak.
  learning_rate: Optional[float] = None
  # Fine-tunes: the steps to train, bound over the gin files' (a share of the source's).
  total_steps: Optional[int] = None
  # From the parsed configuration (`read_config`): loop.TrainerConfig.total_steps,
  # DataConfig.batch_size, ModelConfig.segment_length, the memory's slots (0 without a
  # kNN layer) and ModelConfig.use_xl_cache.
  steps: Optional[int] = None
  batch_size: Optional[int] = None
  segment_length: Optional[int] = None
  memory_slots: Optional[int] = None
  xl: Optional[bool] = None

  def workdir(self, runs_dir: str) -> str:
    return os.path.join(runs_dir, self.study, self.run)

  def gin_params(self, runs_dir: str) -> List[str]:
    params = list(self.extra_gin_params)
    if self.total_steps is not None:
      params.append(f"loop.TrainerConfig.total_steps={self.total_steps}")
    if self.init_from_run:
      source = os.path.join(runs_dir, self.study, self.init_from_run)
      params.append(f"loop.train.init_from='{source}'")
    if self.learning_rate is not None:
      params += [f"optimizer.ScheduleConfig.peak_learning_rate={self.learning_rate:.6g}",
                 "optimizer.ScheduleConfig.warmup_steps=0",
                 "optimizer.ScheduleConfig.decay='constant'"]
    return params

  def command(self, runs_dir: str) -> List[str]:
    return ([".venv/bin/python", "-m", "memorizing_jax.main"]
            + [f"--gin_file={f}" for f in self.gin_files]
            + [f"--gin_param={p}" for p in self.gin_params(runs_dir)]
            + [f"--workdir={self.workdir(runs_dir)}"])


def configured(spec: RunSpec, runs_dir: str, *classes) -> list:
  """Instances of `classes` as the run's gin files and parameters configure them; the
  global gin configuration is left empty before and after."""
  gin.clear_config()
  try:
    main_lib.parse_gin(spec.gin_files, spec.gin_params(runs_dir),
                       main_lib.gin_search_paths([ROOT]))
    return [gin.get_configurable(c)() for c in classes]
  finally:
    gin.clear_config()


def read_config(spec: RunSpec) -> RunSpec:
  """`spec` with the steps, batch size, segment length, memory size and XL flag that
  its gin files and bindings configure (what its record reports)."""
  data, model, trainer = configured(spec, "", DataConfig, ModelConfig, TrainerConfig)
  return dataclasses.replace(
      spec, steps=trainer.total_steps, batch_size=data.batch_size,
      segment_length=model.segment_length,
      memory_slots=model.memory_slots if model.knn_layers else 0, xl=model.use_xl_cache)


def final_learning_rate(spec: RunSpec) -> float:
  """The learning rate of the run's last update, from its gin files' schedule."""
  schedule_config, = configured(spec, "", optimizer.ScheduleConfig)
  return float(optimizer.learning_rate_schedule(schedule_config)(spec.steps - 1))


def finetune(source: RunSpec, run: str, label: str, gin_files: Tuple[str, ...]) -> RunSpec:
  """`source`'s model trained on (with the memory of `gin_files`, if any) for
  1 / `FINETUNE_DIVISOR` of its steps, at the learning rate `source` ended with."""
  return read_config(dataclasses.replace(
      source, run=run, label=label, gin_files=gin_files,
      total_steps=max(source.steps // FINETUNE_DIVISOR, 1), init_from_run=source.run,
      learning_rate=final_learning_rate(source)))


def runs(gin_params: Sequence[str] = ()) -> List[RunSpec]:
  """Every run, in the order they are trained (what the claims need first), each with
  the extra gin bindings `gin_params`."""
  syn = (f"{GIN_DIR}/synthetic.gin",)
  std = (f"{GIN_DIR}/stdlib.gin",)
  syn_mem = f"{GIN_DIR}/synthetic_mem.gin"
  extra = dict(extra_gin_params=tuple(gin_params))
  s = dict(eval_batches=SYNTHETIC_EVAL_BATCHES, **extra)
  p = dict(eval_batches=STDLIB_EVAL_BATCHES, position_edges=STDLIB_POSITION_EDGES,
           copy_edges=STDLIB_COPY_EDGES, **extra)
  synthetic_xl = read_config(RunSpec("synthetic", "xl", "XL only",
                                     syn + ("memory/xl_only.gin",), **s))
  stdlib_xl = read_config(RunSpec("python_stdlib", "xl", "XL only",
                                  std + ("memory/xl_only.gin",), **p))
  return [
      read_config(RunSpec("synthetic", "xl_mem", "XL + 2K memory", syn + (syn_mem,), **s)),
      synthetic_xl,
      read_config(RunSpec("synthetic", "none", "no memory, no XL", syn + ("memory/none.gin",),
                          **s)),
      finetune(synthetic_xl, "xl_finetune_mem", "XL only, then + 2K memory fine-tuned",
               syn + (syn_mem,)),
      stdlib_xl,
      read_config(RunSpec("python_stdlib", "xl_mem8k", "XL + 8K memory",
                          std + ("memory/mem_8k.gin",), **p)),
      finetune(stdlib_xl, "xl_finetune_mem8k", "XL only, then + 8K memory fine-tuned",
               std + ("memory/mem_8k.gin",)),
      # The control of the fine-tune: as many more steps, the same way, without memory.
      finetune(stdlib_xl, "xl_continued", "XL only, then trained on without memory",
               std + ("memory/xl_only.gin",)),
      read_config(RunSpec("python_stdlib", "xl_mem1536", "XL + 1.5K memory",
                          std + ("memory/mem_1536.gin",), **p)),
      read_config(RunSpec("python_stdlib", "xl_mem32k", "XL + 32K memory",
                          std + (f"{GIN_DIR}/stdlib_mem32k.gin",), **p)),
      read_config(RunSpec("python_stdlib", "none", "no memory, no XL",
                          std + ("memory/none.gin",), **p)),
  ]


@dataclasses.dataclass(frozen=True)
class StudySettings:
  """What the report's header says of a study, from its XL-only run's configuration."""
  steps: int
  batch_size: int
  segment_length: int
  tokens: str  # "byte" or "SentencePiece-<pieces>"
  layers: int
  d_model: int
  learning_rate: float
  temperature_init: float
  gate_bias_init: float


def study_settings(spec: RunSpec) -> StudySettings:
  """The header's settings of `spec`'s study, as `spec`'s gin files configure them."""
  data, model, schedule = configured(spec, "", DataConfig, ModelConfig,
                                     optimizer.ScheduleConfig)
  tokens = {"byte": "byte", "sentencepiece": f"SentencePiece-{data.vocabulary_size}"}
  return StudySettings(spec.steps, spec.batch_size, spec.segment_length,
                       tokens.get(data.vocabulary, data.vocabulary), model.num_layers,
                       model.d_model, schedule.peak_learning_rate, model.temperature_init,
                       model.gate_bias_init)


def header(specs: Sequence[RunSpec]) -> str:
  """The report's header: `HEADER` with each study's settings from its XL-only run."""
  runs = {(s.study, s.run): s for s in specs}
  syn, std = (study_settings(runs[(study, "xl")]) for study in ("synthetic", "python_stdlib"))
  shared: Dict[str, Any] = {}
  for name in ("temperature_init", "gate_bias_init"):
    values = {getattr(syn, name), getattr(std, name)}
    if len(values) != 1:  # the header states one value for every model
      raise ValueError(f"the studies' gin files set different {name}: {sorted(values)}")
    shared[name] = values.pop()
  return HEADER.format(script=SCRIPT, gin_dir=GIN_DIR, syn=syn, std=std,
                       temperature=shared["temperature_init"],
                       gate=shared["gate_bias_init"])
