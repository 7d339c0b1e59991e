"""Result records of the study -> markdown tables, claim checks and plots.

A record is a JSON-able dict written by `run.py` after a run:

  study        "synthetic" or "python_stdlib"
  run          short name, unique within the study ("xl", "xl_mem8k", ...)
  label        what the table shows ("XL + 8K memory")
  memory_slots tokens of memory per (row, head); 0 without memory
  xl           whether the model has an XL cache
  finetuned    true for a run started from another run's parameters
  steps, batch_size, segment_length, train_seconds, eval_batches, device, command
  and the metrics of `evaluate.evaluate_run` (perplexity, accuracy_far, by_position
  [{"start", "end", "tokens", "perplexity"}], ...).

Nothing here runs a model: the figures come only from the records.
"""
from __future__ import annotations

import dataclasses
import os
import textwrap
from typing import Any, Callable, Dict, List, Optional, Sequence

Record = Dict[str, Any]
# How far above chance "near chance" may be, in accuracy.
NEAR_CHANCE_MARGIN = 0.05
SYNTHETIC_TARGET = 0.90
COPY_NOTE = (
    "By copy source: the validation targets split by whether copying the token that "
    "followed the most recent earlier occurrence of their {context} preceding tokens "
    "in the document would predict them, and how far back that occurrence lies. Within "
    "256 tokens the segment and XL window can see it; further back only a memory of "
    "that reach holds it, so this is where a memory can help most.")
POSITION_NOTE = (
    "By position in the document: perplexity of the validation targets preceded by "
    "that many tokens of their document, and its change from XL only. Below 1.5K "
    "tokens every memory holds the whole document so far; beyond a memory's size it "
    "holds only the most recent tokens.")


@dataclasses.dataclass(frozen=True)
class Claim:
  """One of the paper's claims as checked on the records: holds is None when a run
  it needs has not finished."""
  name: str
  holds: Optional[bool]
  detail: str


def table_order(records: Sequence[Record]) -> List[Record]:
  """Synthetic then python_stdlib; in each: no XL, XL only, growing memory, fine-tuned."""
  return sorted(records, key=lambda r: (r["study"] != "synthetic", bool(r.get("finetuned")),
                                        bool(r["xl"]), r["memory_slots"]))


def _by_run(records: Sequence[Record], study: str) -> Dict[str, Record]:
  return {r["run"]: r for r in records if r["study"] == study}


def _fmt(value: Any, digits: int = 3) -> str:
  if value is None:
    return "—"
  if isinstance(value, float):
    return f"{value:.{digits}f}"
  return str(value)


def _pct(value: Optional[float]) -> str:
  return "—" if value is None else f"{100 * value:.1f}%"


def _minutes(seconds: Optional[float]) -> str:
  return "—" if seconds is None else f"{seconds / 60:.1f}"


def synthetic_table(records: Sequence[Record]) -> str:
  """Markdown: one row per synthetic run, accuracy per kind of value token."""
  rows = [r for r in records if r["study"] == "synthetic"]
  lines = ["| model | steps | train min | far uses (beyond XL) | near uses (in XL window) "
           "| definitions | far retrieval hits | perplexity |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    lines.append(
        f"| {r['label']} | {r['steps']} | {_minutes(r.get('train_seconds'))} | "
        f"{_pct(r.get('accuracy_far'))} ({r.get('count_far', 0)}) | "
        f"{_pct(r.get('accuracy_near'))} ({r.get('count_near', 0)}) | "
        f"{_pct(r.get('accuracy_definition'))} ({r.get('count_definition', 0)}) | "
        f"{_pct(r.get('far_retrieval_hit_rate'))} | {_fmt(r.get('perplexity'))} |")
  return "\n".join(lines)


def stdlib_table(records: Sequence[Record]) -> str:
  """Markdown: one row per python_stdlib run, token-level perplexity."""
  rows = [r for r in records if r["study"] == "python_stdlib"]
  lines = ["| model | memory (tokens) | steps | train min | eval tokens | perplexity "
           "| token accuracy |",
           "|---|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    lines.append(
        f"| {r['label']} | {r['memory_slots'] or '—'} | {r['steps']} | "
        f"{_minutes(r.get('train_seconds'))} | {r.get('tokens', '—')} | "
        f"{_fmt(r.get('perplexity'))} | {_pct(r.get('accuracy'))} |")
  return "\n".join(lines)


def _tokens(n: int) -> str:
  """1536 -> "1.5K", 8192 -> "8K", 100 -> "100"."""
  if n < 1024:
    return str(n)
  return f"{n / 1024:.1f}".rstrip("0").rstrip(".") + "K"


def _bucket_label(bucket: Record) -> str:
  if bucket["end"] is None:
    return f"{_tokens(bucket['start'])}+"
  return f"{_tokens(bucket['start'])}–{_tokens(bucket['end'])}"


def _split_rows(records: Sequence[Record], key: str = "by_position"
                ) -> tuple[List[Record], Optional[Record]]:
  """The python_stdlib records with the split `key`, and among them XL only (or None)."""
  rows = [r for r in records if r["study"] == "python_stdlib" and r.get(key)]
  return rows, _by_run(rows, "python_stdlib").get("xl")


def _changes(record: Record, base: Optional[Record], key: str = "by_position"
             ) -> List[Optional[float]]:
  """Per bucket of the split `key`, the % change of `record`'s perplexity from `base`'s
  (None where either has no figure, or there is no base)."""
  reference = {(b["start"], b["end"]): b["perplexity"] for b in (base or {}).get(key, [])}
  changes = []
  for b in record[key]:
    q = reference.get((b["start"], b["end"]))
    changes.append(None if b["perplexity"] is None or not q
                   else 100 * (b["perplexity"] / q - 1))
  return changes


def _split_table(records: Sequence[Record], key: str, column: Callable[[Record], str]) -> str:
  """Markdown: python_stdlib perplexity per bucket of the split `key` (column headers
  from `column`), each cell also as a change from XL only; "" when no record has it."""
  rows, base = _split_rows(records, key)
  if not rows:
    return ""
  buckets = rows[0][key]
  lines = ["| model | " + " | ".join(column(b) for b in buckets) + " |",
           "|---|" + "---:|" * len(buckets),
           "| targets | " + " | ".join(str(b["tokens"]) for b in buckets) + " |"]
  for r in rows:
    cells = [_fmt(b["perplexity"], 2) + ("" if c is None else f" ({c:+.1f}%)")
             for b, c in zip(r[key], _changes(r, base, key))]
    lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def stdlib_position_table(records: Sequence[Record]) -> str:
  """python_stdlib perplexity by a token's position in its document (`_split_table`)."""
  return _split_table(records, "by_position", lambda b: f"tokens {_bucket_label(b)}")


def stdlib_copy_table(records: Sequence[Record]) -> str:
  """python_stdlib perplexity by how far back copying would find a token (`_split_table`)."""
  def column(bucket: Record) -> str:
    if bucket["start"] is None:
      return "not found by copying"
    return f"copied from {_bucket_label(bucket)} back"
  return _split_table(records, "by_copy_source", column)


def check_claims(records: Sequence[Record]) -> List[Claim]:
  """The issue's three claims, each held, failed, or pending (a run is missing)."""
  claims = []
  syn = _by_run(records, "synthetic")
  mem, xl = syn.get("xl_mem"), syn.get("xl")
  name = (f"synthetic: XL + memory >= {SYNTHETIC_TARGET:.0%} on far uses, XL only near "
          f"chance (within {NEAR_CHANCE_MARGIN:.0%} of it)")
  if mem is None or xl is None or mem.get("accuracy_far") is None \
      or xl.get("accuracy_far") is None:
    claims.append(Claim(name, None, "runs pending"))
  else:
    chance = xl["chance"]
    holds = (mem["accuracy_far"] >= SYNTHETIC_TARGET
             and xl["accuracy_far"] <= chance + NEAR_CHANCE_MARGIN)
    claims.append(Claim(name, holds, f"XL + memory {_pct(mem['accuracy_far'])}, XL only "
                        f"{_pct(xl['accuracy_far'])}, chance {_pct(chance)}"))

  tuned = syn.get("xl_finetune_mem")
  name = (f"synthetic: XL only fine-tuned with memory (a tenth of the steps) >= "
          f"{SYNTHETIC_TARGET:.0%} on far uses")
  if tuned is None or tuned.get("accuracy_far") is None:
    claims.append(Claim(name, None, "run pending"))
  else:
    claims.append(Claim(name, tuned["accuracy_far"] >= SYNTHETIC_TARGET,
                        f"fine-tuned {_pct(tuned['accuracy_far'])}, chance "
                        f"{_pct(tuned['chance'])}"))

  std = _by_run(records, "python_stdlib")
  order = ["xl", "xl_mem1536", "xl_mem8k", "xl_mem32k"]
  name = "python_stdlib: perplexity falls from XL only through 1.5K, 8K and 32K memory"
  if any(r not in std for r in order):
    claims.append(Claim(name, None, "runs pending: " +
                        ", ".join(r for r in order if r not in std)))
  else:
    ppl = [std[r]["perplexity"] for r in order]
    holds = all(a > b for a, b in zip(ppl, ppl[1:]))
    claims.append(Claim(name, holds, " > ".join(f"{p:.3f}" for p in ppl) if holds else
                        ", ".join(f"{std[r]['label']} {p:.3f}" for r, p in zip(order, ppl))))

  name = ("python_stdlib: XL only fine-tuned with 8K memory (a tenth of the steps) recovers "
          ">= half the gap between XL only and XL + 8K from scratch")
  needed = ["xl", "xl_mem8k", "xl_finetune_mem8k"]
  if any(r not in std for r in needed):
    claims.append(Claim(name, None, "runs pending: " +
                        ", ".join(r for r in needed if r not in std)))
  else:
    base, target, tuned = (std[r]["perplexity"] for r in needed)
    gap = base - target
    # The fine-tune trains longer than XL only; with its control (as many more steps,
    # without memory) its gain is measured against that, so that it is the memory's.
    control = std.get("xl_continued")
    start = control["perplexity"] if control else base
    start_name = "XL only trained on as long" if control else "XL only"
    if gap <= 0:
      claims.append(Claim(name, False, f"no gap to recover: XL only {base:.3f}, "
                          f"XL + 8K {target:.3f}"))
    else:
      share = (start - tuned) / gap
      claims.append(Claim(name, share >= 0.5, f"recovered {share:.0%} of the gap "
                          f"{base:.3f} (XL only) - {target:.3f} (XL + 8K): fine-tuned "
                          f"{tuned:.3f} against {start_name} {start:.3f}"))
  return claims


def claims_table(claims: Sequence[Claim]) -> str:
  mark = {True: "holds", False: "does not hold", None: "pending"}
  lines = ["| claim | result | figures |", "|---|---|---|"]
  lines += [f"| {c.name} | **{mark[c.holds]}** | {c.detail} |" for c in claims]
  return "\n".join(lines)


def _pyplot():
  """matplotlib.pyplot on the file-only Agg backend."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _save(fig, ax, path: str, title: str, xlabel: Optional[str], ylabel: str,
          legend_size: int = 8) -> bool:
  """Titles and labels `ax`, writes `fig` to `path` as a PNG, closes it; True."""
  ax.set_title(title)
  if xlabel:
    ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if ax.get_legend_handles_labels()[0]:  # a partial study may have nothing labelled yet
    ax.legend(fontsize=legend_size)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  _pyplot().close(fig)
  return True


def plot_perplexity(records: Sequence[Record], path: str) -> bool:
  """Perplexity against memory size (python_stdlib); False when nothing to plot."""
  plt = _pyplot()
  std = [r for r in records if r["study"] == "python_stdlib"]
  scratch = sorted((r for r in std if r["xl"] and not r.get("finetuned")),
                   key=lambda r: r["memory_slots"])
  if not std:
    return False
  fig, ax = plt.subplots(figsize=(6, 4))
  # Memory 0 (XL only) sits at the left edge of a log axis, at 512 tokens.
  xs = [r["memory_slots"] or 512 for r in scratch]
  ax.plot(xs, [r["perplexity"] for r in scratch], "o-", label="XL + memory, from scratch")
  for r, x in zip(scratch, xs):
    ax.annotate(r["label"], (x, r["perplexity"]), textcoords="offset points",
                xytext=(4, 4), fontsize=8)
  for r in std:
    if r.get("finetuned"):  # a fine-tune; its control, without memory, at 512 like XL only
      color = "C2" if r["memory_slots"] else "C4"
      ax.plot([r["memory_slots"] or 512], [r["perplexity"]], "s", color=color,
              label=r["label"])
    elif not r["xl"]:
      ax.axhline(r["perplexity"], color="C3", ls="--", lw=1, label=r["label"])
  ax.set_xscale("log", base=2)
  return _save(fig, ax, path, "python_stdlib, small model on CPU",
               "memory size (tokens; XL only drawn at 512)",
               "token-level perplexity (validation)")


def plot_position(records: Sequence[Record], path: str) -> bool:
  """Perplexity change from XL only by position in the document (python_stdlib), one
  line per model; False when the records lack the split or an XL-only run."""
  rows, base = _split_rows(records)
  if base is None:
    return False
  fig, ax = _pyplot().subplots(figsize=(7, 4))
  labels = [_bucket_label(b) for b in base["by_position"]]
  for i, r in enumerate(rows):
    if r is base:
      continue
    change = [float("nan") if c is None else c for c in _changes(r, base)]
    style = "s--" if r.get("finetuned") else "o-"
    ax.plot(range(len(change)), change, style, color=f"C{i}", label=r["label"])
  ax.axhline(0.0, color="k", lw=1)
  ax.set_xticks(range(len(labels)), labels)
  return _save(fig, ax, path, "python_stdlib: where in a document each model gains",
               "position of the token in its document (tokens before it)",
               "perplexity change from XL only (%)", legend_size=7)


def plot_synthetic(records: Sequence[Record], path: str) -> bool:
  """Accuracy on near and far uses per synthetic model, with chance; False if none."""
  plt = _pyplot()
  rows = [r for r in records if r["study"] == "synthetic"]
  if not rows:
    return False
  fig, ax = plt.subplots(figsize=(7.5, 4.5))
  width = 0.38
  for i, r in enumerate(rows):
    for offset, kind, color in ((-width / 2, "near", "C0"), (width / 2, "far", "C1")):
      value = r.get(f"accuracy_{kind}") or 0.0
      ax.bar(i + offset, value, width, color=color,
             label=f"{kind} uses" if i == 0 else None)
  ax.axhline(rows[0].get("chance", 0.0), color="k", ls=":", lw=1, label="chance")
  ax.set_xticks(range(len(rows)), [textwrap.fill(r["label"], 16) for r in rows], fontsize=8)
  ax.set_ylim(0, 1)
  return _save(fig, ax, path, "synthetic recall: near = source in XL window, far = beyond it",
               None, "accuracy on recalled values")


def _copy_context(records: Sequence[Record]) -> str:
  contexts = sorted({str(r["copy_context"]) for r in records if "copy_context" in r})
  return " or ".join(contexts) or "?"


def write_report(records: Sequence[Record], out_dir: str, header: str = "") -> str:
  """Writes `results.md` and the plots under `out_dir`; returns the markdown path."""
  os.makedirs(out_dir, exist_ok=True)
  plots = []
  if plot_synthetic(records, os.path.join(out_dir, "synthetic_accuracy.png")):
    plots.append("![synthetic accuracy](synthetic_accuracy.png)")
  if plot_perplexity(records, os.path.join(out_dir, "perplexity_vs_memory.png")):
    plots.append("![perplexity against memory size](perplexity_vs_memory.png)")
  position_table = stdlib_position_table(records)
  copy_table = stdlib_copy_table(records)
  position_plot = ""
  if plot_position(records, os.path.join(out_dir, "perplexity_by_position.png")):
    position_plot = "![perplexity by position in the document](perplexity_by_position.png)"
  devices = sorted({r.get("device", "?") for r in records})
  parts = [header.strip(), "## Claims", claims_table(check_claims(records)),
           "## Synthetic recall", synthetic_table(records),
           "## python_stdlib", stdlib_table(records), *plots,
           position_table and POSITION_NOTE, position_table, position_plot,
           copy_table and COPY_NOTE.format(context=_copy_context(records)), copy_table,
           f"Device: {', '.join(devices) or '—'}.",
           "## Commands", "\n".join(
               f"- `{r['study']}/{r['run']}` (code {', '.join(r.get('code_commits') or ['?'])}):"
               f" `{r['command']}`" for r in records)]
  path = os.path.join(out_dir, "results.md")
  with open(path, "w") as f:
    f.write("\n\n".join(p for p in parts if p) + "\n")
  return path
