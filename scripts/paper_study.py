r"""Runs the paper-claims study at small scale and writes docs/results/.

    .venv/bin/python scripts/paper_study.py                 # everything, resumable
    .venv/bin/python scripts/paper_study.py --study synthetic
    .venv/bin/python scripts/paper_study.py --report_only   # rewrite table and plots
    .venv/bin/python scripts/paper_study.py --rescore --study python_stdlib  # score again
    .venv/bin/python scripts/paper_study.py --score_step 2800  # an earlier checkpoint

Each run trains with the ordinary entry point (`python -m memorizing_jax.main`, the
command is printed and recorded) into `<runs_dir>/<study>/<run>`, then is scored by
`memorizing_jax.study.evaluate` (the evaluation command's `evaluate_checkpoint`, plus the
synthetic task's recall counts) on its eval split from a fresh model state. Its
result is a record `<out>/records/<study>__<run>.json`; after every run the table
(`<out>/results.md`) and plots are rewritten from all records.

Resumable: a run with a record is not redone; an interrupted run continues from its
last checkpoint (the trainer resumes a workdir exactly); its training time is summed
over the invocations in `<workdir>/study_time.json`.

Budgets (fixed step counts, so results do not depend on the machine's load; the
times are what they took on the 2-core CPU of the session that made docs/results, often
with two to four runs at once):
  synthetic      3 runs x SYNTHETIC_STEPS steps of 16 x 64 tokens (~5-10 min each), plus
                 the fine-tune: SYNTHETIC_STEPS / 10 steps from the XL-only run
  python_stdlib  5 runs x STDLIB_STEPS steps of STDLIB_BATCH_SIZE x 128 tokens (~12 min
                 without memory or XL, 30-47 min with XL), plus the fine-tune and its
                 control: STDLIB_STEPS / 10 steps each from the XL-only run; each scored
                 on the whole validation split (11 packages, 140K tokens; a few minutes).
About 3.3 hours of training in all on that CPU (the sum of `train min` in the report).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time
from typing import List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SYNTHETIC_STEPS = 2400
SYNTHETIC_EVAL_BATCHES = None   # the whole validation split (64 documents)
STDLIB_STEPS = 750
STDLIB_BATCH_SIZE = 32   # as gin/study/stdlib.gin sets it
STDLIB_EVAL_BATCHES = None   # the whole validation split (11 packages, 140K tokens)
# python_stdlib perplexity is also split by a token's position in its document at the
# memory sizes: beyond 1.5K tokens only the larger memories hold the whole document.
STDLIB_POSITION_EDGES = (1536, 8192, 32768)
# ... and by how far back copying would find a target (the token after the most recent
# earlier occurrence of its 4 preceding tokens; `memorizing_jax.data.repeats`): within
# the segment and XL window (256), or only as far back as each memory size reaches.
STDLIB_COPY_EDGES = (256, 1536, 8192, 32768)
DEVICE = "CPU (2 shared cores), jax " + "{jax}"

HEADER = """# Memorizing Transformers claims at small scale

Made by `.venv/bin/python scripts/paper_study.py` (every figure below comes from its
records in `records/`; rerun the script to reproduce or resume, `--report_only` to
redraw; the training command of each run is listed at the end). Budgets:
synthetic runs {syn} steps each (batch 16 x 64 byte tokens, 2 layers, d_model 128);
python_stdlib runs {std} steps each (batch {std_batch} x 128 SentencePiece-1024 tokens, 4 layers),
the fine-tunes a tenth of their source's steps, from the XL-only run's parameters at the
learning rate it ended with; scored on the validation split from a fresh memory
(all of it: 64 synthetic documents; 11 standard-library packages, 140K tokens).
Every model starts its attention temperatures at 16 and its memory gates at sigmoid(-2)
(`gin/study/*.gin`; `docs/results/archive/default_init/` holds the study at the
defaults, 5.7 and 0.5), and every run keeps the learning rate constant after warm-up:
0.01 on the synthetic task, 0.03 on python_stdlib.

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
  study: str
  run: str
  label: str
  gin_files: Tuple[str, ...]
  memory_slots: int
  xl: bool
  steps: int
  batch_size: int
  segment_length: int
  eval_batches: Optional[int]
  init_from_run: Optional[str] = None
  # Fine-tunes: the constant learning rate to train at (no warm-up), so that training
  # goes on at the rate the source run ended with instead of warming up again to the peak.
  learning_rate: Optional[float] = None
  # Where the evaluation splits perplexity by position in the document (see
  # `inference.evaluation.Split.by_position`); () for none.
  position_edges: Tuple[int, ...] = ()
  # Where it splits perplexity by the distance copying would find a target at
  # (see `inference.evaluation.Split.by_copy_source`); () for none.
  copy_edges: Tuple[int, ...] = ()
  # Bindings given to every run of the study (`--gin_param`), before the run's own.
  extra_gin_params: Tuple[str, ...] = ()

  def workdir(self, runs_dir: str) -> str:
    return os.path.join(runs_dir, self.study, self.run)

  def gin_params(self, runs_dir: str) -> List[str]:
    params = list(self.extra_gin_params) + [f"loop.TrainerConfig.total_steps={self.steps}"]
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
  import gin  # pylint: disable=g-import-not-at-top
  from memorizing_jax import main as main_lib  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  try:
    main_lib.parse_gin(spec.gin_files, spec.gin_params(runs_dir), main_lib.gin_search_paths())
    return [gin.get_configurable(c)() for c in classes]
  finally:
    gin.clear_config()


def final_learning_rate(spec: RunSpec) -> float:
  """The learning rate of the run's last update, from its gin files' schedule."""
  from memorizing_jax.train import optimizer  # pylint: disable=g-import-not-at-top
  schedule_config, = configured(spec, "", optimizer.ScheduleConfig)
  return float(optimizer.learning_rate_schedule(schedule_config)(spec.steps - 1))


def finetune(source: RunSpec, run: str, label: str, gin_files: Tuple[str, ...],
             memory_slots: int) -> RunSpec:
  """`source`'s model trained on (with the memory of `gin_files`, if any) for a tenth
  of its steps, at the learning rate `source` ended with."""
  return dataclasses.replace(source, run=run, label=label, gin_files=gin_files,
                             memory_slots=memory_slots, steps=max(source.steps // 10, 1),
                             init_from_run=source.run,
                             learning_rate=final_learning_rate(source))


def plan(gin_params: Sequence[str] = ()) -> List[RunSpec]:
  """Every run, in the order they are trained (what the claims need first), each with
  the extra gin bindings `gin_params`."""
  syn = ("gin/study/synthetic.gin",)
  std = ("gin/study/stdlib.gin",)
  extra = dict(extra_gin_params=tuple(gin_params))
  s = dict(steps=SYNTHETIC_STEPS, batch_size=16, segment_length=64,
           eval_batches=SYNTHETIC_EVAL_BATCHES, **extra)
  p = dict(steps=STDLIB_STEPS, batch_size=STDLIB_BATCH_SIZE, segment_length=128,
           eval_batches=STDLIB_EVAL_BATCHES, position_edges=STDLIB_POSITION_EDGES,
           copy_edges=STDLIB_COPY_EDGES, **extra)
  synthetic_xl = RunSpec("synthetic", "xl", "XL only", syn + ("memory/xl_only.gin",), 0,
                         True, **s)
  stdlib_xl = RunSpec("python_stdlib", "xl", "XL only", std + ("memory/xl_only.gin",), 0,
                      True, **p)
  return [
      RunSpec("synthetic", "xl_mem", "XL + 2K memory", syn + ("study/synthetic_mem.gin",),
              2048, True, **s),
      synthetic_xl,
      RunSpec("synthetic", "none", "no memory, no XL", syn + ("memory/none.gin",), 0, False,
              **s),
      finetune(synthetic_xl, "xl_finetune_mem", "XL only, then + 2K memory fine-tuned",
               syn + ("study/synthetic_mem.gin",), 2048),
      stdlib_xl,
      RunSpec("python_stdlib", "xl_mem8k", "XL + 8K memory", std + ("memory/mem_8k.gin",),
              8192, True, **p),
      finetune(stdlib_xl, "xl_finetune_mem8k", "XL only, then + 8K memory fine-tuned",
               std + ("memory/mem_8k.gin",), 8192),
      # The control of the fine-tune: as many more steps, the same way, without memory.
      finetune(stdlib_xl, "xl_continued", "XL only, then trained on without memory",
               std + ("memory/xl_only.gin",), 0),
      RunSpec("python_stdlib", "xl_mem1536", "XL + 1.5K memory",
              std + ("memory/mem_1536.gin",), 1536, True, **p),
      RunSpec("python_stdlib", "xl_mem32k", "XL + 32K memory",
              std + ("study/stdlib_mem32k.gin",), 32768, True, **p),
      RunSpec("python_stdlib", "none", "no memory, no XL", std + ("memory/none.gin",), 0,
              False, **p),
  ]


def record_path(out_dir: str, spec: RunSpec) -> str:
  return os.path.join(out_dir, "records", f"{spec.study}__{spec.run}.json")


def load_records(out_dir: str, specs: Sequence[RunSpec]) -> List[dict]:
  """The records of `specs` that exist, in table order (see `report.table_order`)."""
  from memorizing_jax.study import report  # pylint: disable=g-import-not-at-top
  records = []
  for spec in specs:
    path = record_path(out_dir, spec)
    if os.path.isfile(path):
      with open(path) as f:
        records.append(json.load(f))
  return report.table_order(records)


def _git_commit() -> str:
  """The checkout's commit, "+" when tracked files other than the study's own report
  (docs/results/, rewritten after every run) differ from it."""
  def git(*args):
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout
  commit = git("rev-parse", "--short", "HEAD").strip() or "unknown"
  changed = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                ":(exclude)docs/results")
  return commit + ("+" if changed.strip() else "")


def _add_time(workdir: str, seconds: float, commit: Optional[str] = None) -> dict:
  """Adds to the run's training time and the commits it trained at; returns both."""
  path = os.path.join(workdir, "study_time.json")
  log = {"train_seconds": 0.0, "commits": []}
  if os.path.isfile(path):
    with open(path) as f:
      log.update(json.load(f))
  log["train_seconds"] += seconds
  if commit and commit not in log["commits"]:
    log["commits"].append(commit)
  with open(path, "w") as f:
    json.dump(log, f)
  return log


def train(spec: RunSpec, runs_dir: str) -> dict:
  """Trains (or resumes) the run; returns its training time over all invocations
  ("train_seconds") and the code commits it trained at ("commits")."""
  workdir = spec.workdir(runs_dir)
  os.makedirs(workdir, exist_ok=True)
  if latest_step(workdir) == spec.steps:  # trained before the evaluation was interrupted
    print(f"  trained already: {workdir} has step {spec.steps}", flush=True)
    return _add_time(workdir, 0.0)
  command = spec.command(runs_dir)
  command[0] = sys.executable
  print("  $ " + shlex.join(spec.command(runs_dir)), flush=True)
  commit = _git_commit()
  started = time.time()
  result = subprocess.run(command, cwd=ROOT, check=False)
  total = _add_time(workdir, time.time() - started, commit)
  if result.returncode != 0:
    raise SystemExit(f"training {spec.study}/{spec.run} failed (exit {result.returncode}); "
                     "rerun the script to resume it")
  reached = latest_step(workdir)
  if reached != spec.steps:  # e.g. stopped by SIGTERM: the checkpoint is kept
    raise SystemExit(f"training {spec.study}/{spec.run} stopped at step {reached} of "
                     f"{spec.steps}; rerun the script to resume it")
  return total


def latest_step(workdir: str) -> Optional[int]:
  """The newest checkpoint step in `workdir` (None if none)."""
  folder = os.path.join(workdir, "checkpoints")
  steps = [int(d) for d in os.listdir(folder) if d.isdigit()] if os.path.isdir(folder) else []
  return max(steps, default=None)


def evaluate(spec: RunSpec, runs_dir: str, step: Optional[int] = None) -> dict:
  """Scores the run's checkpoint at `step`, default the latest, in this process, as
  `python -m memorizing_jax.evaluate` does (the run's config comes from its workdir)."""
  from memorizing_jax.study import evaluate as evaluate_lib  # pylint: disable=g-import-not-at-top
  return evaluate_lib.evaluate_run(spec.workdir(runs_dir), max_batches=spec.eval_batches,
                                   position_edges=spec.position_edges, step=step,
                                   copy_edges=spec.copy_edges)


def rescore(spec: RunSpec, runs_dir: str, path: str) -> dict:
  """Replaces the metrics of the record at `path` by a new evaluation of its run;
  the record notes the commit that scored it ("scored_at")."""
  with open(path) as f:
    record = json.load(f)
  record.update(evaluate(spec, runs_dir), scored_at=_git_commit())
  with open(path, "w") as f:
    json.dump(record, f, indent=1)
  return record


def write_report(out_dir: str, specs: Sequence[RunSpec]) -> str:
  from memorizing_jax.study import report  # pylint: disable=g-import-not-at-top
  header = HEADER.format(syn=SYNTHETIC_STEPS, std=STDLIB_STEPS, std_batch=STDLIB_BATCH_SIZE)
  return report.write_report(load_records(out_dir, specs), out_dir, header)


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--study", choices=("all", "synthetic", "python_stdlib"), default="all")
  parser.add_argument("--runs", nargs="*", default=None,
                      help="only these runs of the study (names as in the table's records)")
  parser.add_argument("--runs_dir", default=os.path.join(ROOT, "runs", "study"))
  parser.add_argument("--out", default=os.path.join(ROOT, "docs", "results"))
  parser.add_argument("--gin_param", action="append", default=[],
                      help="a gin binding for every run (repeatable), e.g. to run the study "
                           "at another learning rate; use with its own --runs_dir and --out")
  parser.add_argument("--report_only", action="store_true")
  parser.add_argument("--rescore", action="store_true",
                      help="score again the selected runs that have a record (e.g. after "
                           "the evaluation gained a metric), keeping their training fields")
  parser.add_argument("--score_step", type=int, default=None,
                      help="only print (as JSON lines) each selected run's scores at this "
                           "earlier checkpoint step, to see how much a run's last steps "
                           "move its figures; records are left as they are")
  args = parser.parse_args(argv)

  specs = plan(args.gin_param)
  todo = [s for s in specs if args.study in ("all", s.study)
          and (args.runs is None or s.run in args.runs)]
  if args.score_step is not None:
    for spec in todo:
      try:
        metrics = evaluate(spec, args.runs_dir, step=args.score_step)
      except FileNotFoundError as e:
        print(f"{spec.study}/{spec.run}: skipped: {e}", flush=True)
        continue
      print(json.dumps(dict(study=spec.study, run=spec.run, label=spec.label, **metrics)),
            flush=True)
    return 0
  if not args.report_only:
    for i, spec in enumerate(todo, 1):
      path = record_path(args.out, spec)
      name = f"[{i}/{len(todo)}] {spec.study}/{spec.run} ({spec.label})"
      if os.path.isfile(path) and args.rescore:
        print(f"{name}: scoring again", flush=True)
        rescore(spec, args.runs_dir, path)
        write_report(args.out, specs)
        continue
      if os.path.isfile(path):
        print(f"{name}: done (record {os.path.relpath(path, ROOT)})", flush=True)
        continue
      if spec.init_from_run and not os.path.isfile(record_path(
          args.out, dataclasses.replace(spec, run=spec.init_from_run))):
        print(f"{name}: waits for {spec.study}/{spec.init_from_run}; skipped", flush=True)
        continue
      print(f"{name}: training {spec.steps} steps", flush=True)
      trained = train(spec, args.runs_dir)
      print(f"{name}: evaluating", flush=True)
      import jax  # pylint: disable=g-import-not-at-top
      metrics = evaluate(spec, args.runs_dir)
      record = dict(study=spec.study, run=spec.run, label=spec.label,
                    memory_slots=spec.memory_slots, xl=spec.xl,
                    finetuned=spec.init_from_run is not None, steps=spec.steps,
                    batch_size=spec.batch_size, segment_length=spec.segment_length,
                    eval_batches=spec.eval_batches,
                    train_seconds=round(trained["train_seconds"], 1),
                    code_commits=trained["commits"],
                    device=DEVICE.format(jax=jax.__version__),
                    command=shlex.join(spec.command(os.path.relpath(args.runs_dir, ROOT))),
                    **metrics)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, "w") as f:
        json.dump(record, f, indent=1)
      print(f"{name}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                    for k, v in metrics.items()), flush=True)
      write_report(args.out, specs)
  print("wrote " + os.path.relpath(write_report(args.out, specs), ROOT))
  return 0


if __name__ == "__main__":
  sys.exit(main())
