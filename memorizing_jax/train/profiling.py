"""A `jax.profiler` trace of a window of training steps (`TrainerConfig.profile_steps`).

The loop calls `Profiler.before_step` and `after_step` around every update and
`stop` when it ends; the trace goes to a folder that TensorBoard's profile plugin
or Perfetto reads.
"""
from __future__ import annotations

import logging
from typing import Any

import jax


class Profiler:
  """Traces the updates that start at step counters `first_step .. first_step + steps - 1`
  with `jax.profiler`."""

  def __init__(self, directory: str, first_step: int, steps: int):
    self.directory, self.first_step, self.last_step = directory, first_step, first_step + steps
    self.active = False

  def before_step(self, step: int) -> None:
    if step == self.first_step and self.last_step > self.first_step:
      jax.profiler.start_trace(self.directory)
      self.active = True

  def after_step(self, step: int, state: Any) -> None:
    if self.active and step >= self.last_step:
      jax.block_until_ready(state)  # the traced steps' device work, not only their dispatch
      self.stop()
      logging.info("profile of steps %d-%d written to %s", self.first_step + 1, step,
                   self.directory)

  def stop(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active = False
