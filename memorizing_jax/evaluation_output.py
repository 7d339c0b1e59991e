"""The result of `checkpoint_evaluation.evaluate_checkpoint` as a person and TensorBoard
read it: a few summary lines, scalars, and the files `python -m memorizing_jax.evaluate`
writes (indented JSON, and event files at the checkpoint's step)."""
from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, Optional, Tuple

from clu import metric_writers
from etils import epath

from memorizing_jax.train import metrics

SPLITS = ("by_position", "by_memory_gain", "by_copy_source")


def _label(start: Optional[float], end: Optional[float]) -> str:
  """A bucket's [start, end) as a tag: "none" (neither), "below_<end>", "from_<start>"
  or "<start>_to_<end>"."""
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
  for split in SPLITS:
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
  path = epath.Path(json_path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(result, indent=1) + "\n")
  if events_dir:
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
