"""Stopping a run on SIGTERM (a preemption notice): save a checkpoint, then exit.

`StopOnSignal` turns the signal into a flag the training loop checks after each
step; `agreed_stop` makes every process of a multi-process run give the same
answer, so that all of them save the same step and stop together.
"""
from __future__ import annotations

import logging
import signal
import threading

import jax

from memorizing_jax.train import multihost


def agreed_stop(requested: bool, step: int, every: int) -> bool:
  """Whether to save and stop now; the same answer on every process.

  One process stops as soon as it is asked; several agree every `every` steps
  (a collective), since a save that one process starts alone never finishes.
  """
  if jax.process_count() == 1:
    return requested
  return step % every == 0 and multihost.any_process(requested)


class StopOnSignal:
  """Turns SIGTERM into a flag the loop checks after each step (save, then exit).

  A context manager: SIGTERM's previous handler is back on exit. Outside the main
  thread (where Python cannot install handlers) it leaves SIGTERM alone.
  """

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    logging.warning("received signal %d: saving a checkpoint and stopping", signum)
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    return False
