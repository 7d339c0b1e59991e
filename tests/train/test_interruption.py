"""Stopping on SIGTERM: the flag the loop checks, and when the processes agree to stop."""
import signal
import threading

import jax

from memorizing_jax.train import multihost
from memorizing_jax.train.interruption import StopOnSignal, agreed_stop


def test_sigterm_sets_the_flag_and_the_previous_handler_comes_back():
  previous = signal.getsignal(signal.SIGTERM)
  with StopOnSignal() as stop:
    assert not stop.requested
    signal.raise_signal(signal.SIGTERM)
    assert stop.requested
  assert signal.getsignal(signal.SIGTERM) == previous


def test_outside_the_main_thread_sigterm_is_left_alone():
  previous = signal.getsignal(signal.SIGTERM)
  seen = []

  def enter():
    with StopOnSignal() as stop:
      seen.append((signal.getsignal(signal.SIGTERM), stop.requested))

  thread = threading.Thread(target=enter)
  thread.start()
  thread.join()
  assert seen == [(previous, False)]
  assert signal.getsignal(signal.SIGTERM) == previous


def test_one_process_stops_as_soon_as_asked():
  assert agreed_stop(True, step=3, every=10)
  assert not agreed_stop(False, step=10, every=10)


def test_several_processes_agree_every_few_steps(monkeypatch):
  """Between checks no process stops; at a check, all stop when any one was asked."""
  asked = []

  def any_process(flag):  # another process received SIGTERM
    asked.append(flag)
    return True

  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(multihost, "any_process", any_process)
  assert not agreed_stop(True, step=3, every=10)
  assert asked == []  # no collective between checks
  assert agreed_stop(False, step=20, every=10)
  assert asked == [False]
