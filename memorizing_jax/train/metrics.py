"""Training and evaluation metrics: accumulation, summaries, writers, progress bar.

Steps return sums (loss_sum, correct, tokens) and per-step values (grad_norm,
learning_rate, memory diagnostics) as device arrays; `MetricsAccumulator` keeps
them on device until a log step, then turns them into scalars. `MetricsLogger`
writes scalars through `clu.metric_writers` (TensorBoard event files plus the
console) and drives a tqdm progress bar. A summary never ends a run: values
beyond float32 (TensorBoard's scalar type) are written as +-inf, and a writer
that fails anyway logs a warning.
"""
from __future__ import annotations

import logging
import math
import os
import time
from typing import Any, Dict, List, Mapping, Optional

import jax
import numpy as np
import tqdm
from clu import metric_writers

SUM_KEYS = ("loss_sum", "correct", "tokens")
LN2 = math.log(2.0)
FLOAT32_MAX = float(np.finfo(np.float32).max)  # TensorBoard stores scalars as float32


def perplexity(loss: float) -> float:
  """exp(loss) for a loss in nats per token; inf where that overflows a float64."""
  try:
    return math.exp(loss)
  except OverflowError:
    return math.inf


def summary_value(value: Any) -> float:
  """`value` as a float TensorBoard can store: NaN stays NaN, a magnitude above
  float32's largest (3.4e38) becomes +-inf (the event writer refuses those)."""
  value = float(value)
  if math.isfinite(value) and abs(value) > FLOAT32_MAX:
    return math.copysign(math.inf, value)
  return value


def _token_metrics(loss_sum: float, correct: float, tokens: float) -> Dict[str, float]:
  """loss (nats per token), perplexity, bits per token and accuracy from sums."""
  if tokens <= 0:
    return {"loss": float("nan"), "perplexity": float("nan"),
            "bits_per_token": float("nan"), "accuracy": float("nan"), "tokens": 0.0}
  loss = loss_sum / tokens
  return {"loss": loss, "perplexity": perplexity(loss),
          "bits_per_token": loss / LN2, "accuracy": correct / tokens, "tokens": tokens}


def summarize(per_step: List[Mapping[str, Any]]) -> Dict[str, float]:
  """Scalars from host copies of several steps' metrics.

  Sums add up over the steps, the learning rate is the last step's, everything
  else (gradient norm, memory diagnostics) is the mean over steps.
  """
  if not per_step:
    return {}
  total = {k: float(sum(float(m[k]) for m in per_step)) for k in SUM_KEYS}
  out = _token_metrics(total["loss_sum"], total["correct"], total["tokens"])
  for key in per_step[0]:
    if key in SUM_KEYS:
      continue
    if key == "learning_rate":
      out[key] = float(per_step[-1][key])
    else:
      out[key] = float(np.mean([float(m[key]) for m in per_step]))
  return out


class MetricsAccumulator:
  """Per-step device metrics of the current logging interval."""

  def __init__(self):
    self._pending: List[Dict[str, jax.Array]] = []
    self._first_step: Optional[int] = None

  def add(self, step: int, metrics: Dict[str, jax.Array]) -> None:
    if self._first_step is None:
      self._first_step = step
    self._pending.append(metrics)

  def __len__(self) -> int:
    return len(self._pending)

  def fetch(self) -> "tuple[int, List[Dict[str, float]]]":
    """(step of the first pending entry, host copies of all pending entries); clears."""
    first, pending = self._first_step, jax.device_get(self._pending)
    self._pending, self._first_step = [], None
    return first, pending


class MetricsLogger:
  """TensorBoard + console scalars and a progress bar for one run.

  Besides what the steps return, each training summary gets the wall-clock figures
  of its interval: `step_time_s`, `tokens_per_s`, `tokens_per_s_per_device` and,
  when the device's peak is known, `mfu`: the compiled step's FLOPs per device per
  second over the device's peak bf16 FLOP/s (rematerialised work counts as done).

  Args:
    workdir: event files go to `<workdir>/train` and `<workdir>/eval`.
    start_step, total_steps: the progress bar's range.
    enabled: False on every process but the first (they only log to the console).
    devices: how many devices the step runs on.
    step_flops_per_device: the compiled training step's FLOPs on one device.
    peak_flops_per_device: the device's peak FLOP/s (None: unknown, no `mfu`).
  """

  def __init__(self, workdir: str, start_step: int, total_steps: int, enabled: bool = True,
               progress_bar: bool = True, devices: int = 1, step_flops_per_device: float = 0.0,
               peak_flops_per_device: Optional[float] = None):
    self._devices = devices
    self._step_flops = step_flops_per_device
    self._peak_flops = peak_flops_per_device
    just_logging = not enabled
    self._train = metric_writers.create_default_writer(
        os.path.join(workdir, "train"), just_logging=just_logging, asynchronous=False)
    self._eval = metric_writers.create_default_writer(
        os.path.join(workdir, "eval"), just_logging=just_logging, asynchronous=False)
    self._bar = tqdm.tqdm(total=total_steps, initial=start_step, unit="step",
                          disable=not (enabled and progress_bar), dynamic_ncols=True)
    self._last_time = time.perf_counter()

  def reset_timer(self) -> None:
    """Starts timing afresh (after compilation, evaluation or checkpointing)."""
    self._last_time = time.perf_counter()

  def advance(self, steps: int = 1) -> None:
    self._bar.update(steps)

  def write_train(self, step: int, scalars: Dict[str, float], tokens_seen: int,
                  steps: int = 1) -> None:
    """Writes a training interval of `steps` steps; adds its speed since the last call."""
    now = time.perf_counter()
    elapsed, self._last_time = max(now - self._last_time, 1e-9), now
    step_time = elapsed / max(steps, 1)
    scalars = dict(scalars, tokens_per_s=tokens_seen / elapsed, step_time_s=step_time,
                   tokens_per_s_per_device=tokens_seen / elapsed / self._devices)
    if self._peak_flops and self._step_flops:
      scalars["mfu"] = self._step_flops / step_time / self._peak_flops
    self._write_scalars(self._train, step, scalars)
    self._bar.set_postfix(loss=f"{scalars['loss']:.3f}",
                          tok_s=f"{scalars['tokens_per_s']:.0f}", refresh=False)

  def write_eval(self, step: int, scalars: Dict[str, float]) -> None:
    self._write_scalars(self._eval, step, scalars)
    self._bar.write(f"eval at step {step}: perplexity {scalars['perplexity']:.3f}, "
                    f"loss {scalars['loss']:.4f}, bits/token {scalars['bits_per_token']:.4f}, "
                    f"accuracy {scalars['accuracy']:.4f} over {int(scalars['tokens'])} tokens")

  @staticmethod
  def _write_scalars(writer, step: int, scalars: Mapping[str, Any]) -> None:
    """Writes `scalars` as TensorBoard can store them; a failure only logs a warning."""
    try:
      writer.write_scalars(step, {k: summary_value(v) for k, v in scalars.items()})
    except Exception as e:  # pylint: disable=broad-except
      logging.warning("could not write the metrics of step %d (%s: %s); training goes on",
                      step, type(e).__name__, e)

  def close(self) -> None:
    self._bar.close()
    for writer in (self._train, self._eval):
      writer.flush()
      writer.close()
