"""The loss guard: which steps' metrics stop a run, and what the error says is kept."""
import math

import pytest

from memorizing_jax.train import loss_guard
from memorizing_jax.train.loss_guard import LossAboveCeilingError, NonFiniteLossError


class _Checkpointer:
  """What the guard asks a `Checkpointer`: wait for pending saves, the newest step."""

  def __init__(self, latest):
    self.directory, self.latest, self.waited = "/runs/a/checkpoints", latest, False

  def wait(self):
    self.waited = True

  def latest_step(self):
    return self.latest if self.waited else "not waited for"


def _step(loss_sum, tokens=100.0, grad_norm=1.0):
  return {"loss_sum": loss_sum, "tokens": tokens, "grad_norm": grad_norm}


def test_finite_losses_at_or_below_the_ceiling_pass():
  checkpointer = _Checkpointer(latest=4)
  steps = [_step(550.0), _step(600.0), _step(0.0, tokens=0.0)]  # 5.5, 6.0, no tokens
  loss_guard.check_losses(4, steps, checkpointer, max_loss=None)
  loss_guard.check_losses(4, steps, checkpointer, max_loss=6.0)  # 6.0 is not above 6.0
  assert not checkpointer.waited  # nothing to report


def test_a_nan_loss_names_its_step_and_the_kept_checkpoint():
  checkpointer = _Checkpointer(latest=10)
  with pytest.raises(NonFiniteLossError) as error:
    loss_guard.check_losses(10, [_step(500.0), _step(math.nan)], checkpointer, max_loss=None)
  assert type(error.value) is NonFiniteLossError  # pylint: disable=unidiomatic-typecheck
  message = str(error.value)
  assert message.startswith("the training loss became nan (gradient norm 1.0) at step 12; ")
  assert ("the last good checkpoint, step 10, is kept in /runs/a/checkpoints and a rerun "
          "of the same workdir resumes from step 10") in message
  assert checkpointer.waited and message.endswith("then rerun.")


def test_an_infinite_gradient_norm_stops_a_finite_loss():
  with pytest.raises(NonFiniteLossError, match=r"became 5.0 \(gradient norm inf\) at step 1;"):
    loss_guard.check_losses(0, [_step(500.0, grad_norm=math.inf)], _Checkpointer(None), None)


def test_a_loss_above_the_ceiling_says_a_rerun_starts_afresh_without_checkpoints():
  with pytest.raises(LossAboveCeilingError) as error:
    loss_guard.check_losses(2, [_step(100.0), _step(612.5)], _Checkpointer(None), max_loss=6.0)
  message = str(error.value)
  assert message.startswith("the training loss was 6.125 at step 4, above "
                            "loop.TrainerConfig.max_loss=6; no checkpoint was saved before "
                            "it, so there is nothing to resume: a rerun starts again from "
                            "step 0.")
  assert "or raise max_loss" in message
