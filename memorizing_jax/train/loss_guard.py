"""Stops a diverging run before it saves a bad state.

The loop fetches each step's metrics before every summary and every checkpoint,
so a step whose loss is NaN, infinite or above `TrainerConfig.max_loss` stops
the run before the state it produced is saved; a state whose parameters or
optimizer statistics are not finite is not saved either. The error says what is
on disk: the last checkpoint the run can resume from, or that there is none.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

import jax
import jax.numpy as jnp


class NonFiniteLossError(RuntimeError):
  """Training produced a NaN or infinite loss (or a non-finite state); the last good
  checkpoint is kept."""


class LossAboveCeilingError(NonFiniteLossError):
  """A step's loss exceeded `TrainerConfig.max_loss`; the last good checkpoint is kept."""


def _step_loss(metrics: Dict[str, Any]) -> float:
  """Mean loss of one step, nats per token, from its `loss_sum` and `tokens`."""
  return float(metrics["loss_sum"]) / max(float(metrics["tokens"]), 1.0)


def _what_is_kept(checkpointer) -> str:
  """The part of the error that says what a rerun resumes from (after pending saves)."""
  checkpointer.wait()
  good = checkpointer.latest_step()
  if good is None:
    return ("no checkpoint was saved before it, so there is nothing to resume: a rerun "
            "starts again from step 0")
  return (f"the last good checkpoint, step {good}, is kept in {checkpointer.directory} and "
          f"a rerun of the same workdir resumes from step {good}")


_FIX = ("Lower OptimizerConfig.schedule's peak_learning_rate or set clip_gradient_norm, or "
        "check the data")


def check_losses(first_step: int, per_step: List[Dict[str, Any]], checkpointer,
                 max_loss: Optional[float]) -> None:
  """Raises when a step's loss is not finite or above `max_loss`.

  Args:
    first_step: the step counter before the first entry's update (its step is
      `first_step + 1`).
    per_step: host copies of the steps' metrics (`loss_sum`, `tokens`, `grad_norm`).
    checkpointer: the run's `Checkpointer` (to say which checkpoint is kept).
    max_loss: the highest acceptable mean loss of a step, nats per token; None: any
      finite loss.
  Raises:
    NonFiniteLossError: a loss or gradient norm is NaN or infinite.
    LossAboveCeilingError: a loss is above `max_loss`.
  """
  for offset, m in enumerate(per_step):
    step, loss = first_step + offset + 1, _step_loss(m)
    if not (math.isfinite(loss) and math.isfinite(float(m["grad_norm"]))):
      raise NonFiniteLossError(
          f"the training loss became {loss} (gradient norm {float(m['grad_norm'])}) at step "
          f"{step}; {_what_is_kept(checkpointer)}. {_FIX}, then rerun.")
    if max_loss is not None and loss > max_loss:
      raise LossAboveCeilingError(
          f"the training loss was {loss:.4g} at step {step}, above "
          f"loop.TrainerConfig.max_loss={max_loss:g}; {_what_is_kept(checkpointer)}. {_FIX}, "
          "or raise max_loss, then rerun.")


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
  leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves \
      else jnp.array(True)


def check_state_finite(state: Any, checkpointer) -> None:
  """Raises before a state with NaN or infinite parameters or optimizer statistics is
  saved (a finite loss can precede the update that overflows).

  Args:
    state: the `TrainState` about to be saved.
  Raises:
    NonFiniteLossError: naming the step and the checkpoint that is kept.
  """
  if not bool(jax.device_get(_all_finite((state.params, state.opt_state)))):
    raise NonFiniteLossError(
        f"the parameters or optimizer statistics after step {int(jax.device_get(state.step))} "
        f"are not finite, so they were not saved; {_what_is_kept(checkpointer)}. {_FIX}, "
        "then rerun.")
