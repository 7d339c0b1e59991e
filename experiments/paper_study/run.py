r"""Runs the paper-claims study at small scale and writes docs/results/.

    .venv/bin/python experiments/paper_study/run.py                 # everything, resumable
    .venv/bin/python experiments/paper_study/run.py --study synthetic
    .venv/bin/python experiments/paper_study/run.py --report_only   # rewrite table and plots
    .venv/bin/python experiments/paper_study/run.py --rescore --study python_stdlib  # score again
    .venv/bin/python experiments/paper_study/run.py --score_step 700  # an earlier checkpoint

Each run trains with the ordinary entry point (`python -m memorizing_jax.main`, the
command is printed and recorded) into `<runs_dir>/<study>/<run>`, then is scored by
`evaluate.py` here (the evaluation command's `evaluate_checkpoint`, plus the
synthetic task's recall counts) on its eval split from a fresh model state. Its
result is a record `<out>/records/<study>__<run>.json`; after every run the table
(`<out>/results.md`) and plots are rewritten from all records.

The runs and their settings are `plan.py`'s: a run's gin files (`gin/` here) set
everything it trains with, its steps included, and the plan reads from the parsed
configuration what the records and the report's header say of it.

Resumable: a run with a record is not redone; an interrupted run continues from its
last checkpoint (the trainer resumes a workdir exactly); its training time is summed
over the invocations in `<workdir>/study_time.json`.

Budgets (fixed step counts, so results do not depend on the machine's load; the
times are what they took on the 2-core CPU of the session that made docs/results, often
with two to four runs at once):
  synthetic      3 runs of gin/synthetic.gin's 2400 steps of 16 x 64 tokens (~5-10 min
                 each), plus the fine-tune: a tenth of those steps from the XL-only run
  python_stdlib  5 runs of gin/stdlib.gin's 750 steps of 32 x 128 tokens (~12 min
                 without memory or XL, 30-47 min with XL), plus the fine-tune and its
                 control: a tenth of those steps each from the XL-only run; each scored
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
from typing import List, Optional, Sequence

# Run as a file, Python puts this folder first on the path, where evaluate.py and its
# siblings would shadow any top-level module of their names: the repository root takes
# its place, for `experiments.paper_study` (and an uninstalled `memorizing_jax`).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
sys.path.insert(0, os.path.dirname(os.path.dirname(_HERE)))
import jax  # noqa: E402  pylint: disable=g-import-not-at-top

from experiments.paper_study import evaluate as evaluate_lib  # noqa: E402  pylint: disable=g-import-not-at-top
from experiments.paper_study import plan  # noqa: E402  pylint: disable=g-import-not-at-top
from experiments.paper_study import report  # noqa: E402  pylint: disable=g-import-not-at-top
from experiments.paper_study.plan import RunSpec  # noqa: E402  pylint: disable=g-import-not-at-top
from memorizing_jax.checkpointing import discovery  # noqa: E402  pylint: disable=g-import-not-at-top

ROOT = plan.ROOT
DEVICE = "CPU (2 shared cores), jax " + "{jax}"


def record_path(out_dir: str, spec: RunSpec) -> str:
  return os.path.join(out_dir, "records", f"{spec.study}__{spec.run}.json")


def load_records(out_dir: str, specs: Sequence[RunSpec]) -> List[dict]:
  """The records of `specs` that exist, in table order (see `report.table_order`)."""
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
  return max(discovery.committed_steps(os.path.join(workdir, "checkpoints")), default=None)


def evaluate(spec: RunSpec, runs_dir: str, step: Optional[int] = None) -> dict:
  """Scores the run's checkpoint at `step`, default the latest, in this process, as
  `python -m memorizing_jax.evaluate` does (the run's config comes from its workdir)."""
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


def write_report(out_dir: str, specs: Sequence[RunSpec],
                 records_dir: Optional[str] = None) -> str:
  """Writes `results.md` and the plots under `out_dir` from the records of `specs` in
  `<records_dir>/records/` (default: `out_dir`'s); returns the markdown path."""
  records = load_records(records_dir or out_dir, specs)
  return report.write_report(records, out_dir, plan.header(specs))


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

  specs = plan.runs(args.gin_param)
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
