"""TrainerConfig: how long the loop trains and how often it logs, evaluates and saves.

The gin files bind it as `loop.TrainerConfig` (`from memorizing_jax.train import loop`),
the name the training loop (train/loop.py) re-exports it under, so the gin files and
the config.gin of existing workdirs keep working.
"""
from __future__ import annotations

import dataclasses
from typing import Optional


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
  """How long to train and how often to log, evaluate and checkpoint.

  Attributes:
    total_steps: train until the step counter reaches this.
    log_every: write training metrics every this many steps.
    eval_every: evaluate every this many steps (0: only at the end).
    eval_batches: evaluate on at most this many batches (None: the whole split).
    checkpoint_every: save every this many steps (and always at the end).
    keep_checkpoints: how many recent checkpoints to keep.
    async_checkpoints: write checkpoints in the background.
    seed: parameter initialisation and dropout.
    progress_bar: show a tqdm progress bar on the first process.
    stop_check_every: in a multi-process run, every this many steps the processes
      agree whether any of them received SIGTERM (then all save and stop together);
      each check waits for the step in flight. One process checks every step.
    profile_steps: trace this many steps with `jax.profiler` (from the run's second
      step on: the first one warms up) into `<workdir>/profile`, for TensorBoard's
      profile plugin or Perfetto; 0: no trace.
    max_loss: stop the run (`LossAboveCeilingError`, before saving) when a step's mean
      training loss, nats per token, is above this; None: stop only on a NaN or
      infinite loss. A diverging run's loss first jumps far above ln(vocab_size)
      (5.5 for the byte vocabulary, 10.4 for 32K), e.g. max_loss = 20.
    lock_stale_after_s: seconds after which the workdir lock of a run on another
      host whose heartbeat stopped is taken over (the running holder refreshes it
      every tenth of this); on the same host a lock is taken over as soon as its
      process has ended.
  """

  total_steps: int = 1000
  log_every: int = 50
  eval_every: int = 0
  eval_batches: Optional[int] = None
  checkpoint_every: int = 500
  keep_checkpoints: int = 3
  async_checkpoints: bool = True
  seed: int = 0
  progress_bar: bool = True
  stop_check_every: int = 10
  profile_steps: int = 0
  max_loss: Optional[float] = None
  lock_stale_after_s: float = 600.0

  def __post_init__(self):
    for name in ("total_steps", "log_every", "checkpoint_every", "keep_checkpoints",
                 "stop_check_every"):
      if getattr(self, name) < 1:
        raise ValueError(f"TrainerConfig.{name} must be positive, got {getattr(self, name)}")
    if self.profile_steps < 0:
      raise ValueError(f"TrainerConfig.profile_steps must be >= 0, got {self.profile_steps}")
    if self.eval_every < 0:
      raise ValueError(f"TrainerConfig.eval_every must be >= 0, got {self.eval_every}")
    if self.eval_batches is not None and self.eval_batches < 1:
      raise ValueError("TrainerConfig.eval_batches must be positive or None, got "
                       f"{self.eval_batches}")
    if self.max_loss is not None and not self.max_loss > 0:
      raise ValueError(f"TrainerConfig.max_loss must be positive or None, got {self.max_loss}")
    if not self.lock_stale_after_s > 0:
      raise ValueError("TrainerConfig.lock_stale_after_s must be positive, got "
                       f"{self.lock_stale_after_s}")
