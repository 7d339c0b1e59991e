"""One training run per workdir: a lock file that names its holder.

Two runs started on the same workdir would both train and delete each other's
checkpoints. The first run writes `<workdir>/workdir.lock`, JSON of its host,
pid, start time and a heartbeat time (unix seconds), and refreshes the
heartbeat while it runs; a second run finds the lock and refuses at once.

A lock is stale, and is taken over with a warning, when its holder is gone:
  same host     the pid no longer runs (`os.kill(pid, 0)`), or
  any host      the heartbeat is older than `stale_after_s` (a stopped machine,
                or a pid reused after a reboot).

Creation is as atomic as the filesystem allows: a local workdir uses
`O_CREAT | O_EXCL`; a remote one (`gs://...`, through `etils.epath`) writes a
temporary object, moves it to the lock's name, then reads the lock back and
checks that it holds this run's token.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from typing import Optional

from etils import epath

from memorizing_jax.train import multihost

LOCK_NAME = "workdir.lock"


class WorkdirLockedError(FileExistsError):
  """Another live run holds the workdir (or took it over from this run)."""


@dataclasses.dataclass(frozen=True)
class LockHolder:
  """Who holds a workdir lock.

  Attributes:
    host: `socket.gethostname()` of the holder.
    pid: its process id on that host.
    started: when it took the lock, unix seconds.
    heartbeat: when it last said it was alive, unix seconds.
    token: a random id of this holding (tells two holders apart).
  """

  host: str
  pid: int
  started: float
  heartbeat: float
  token: str

  @classmethod
  def this_process(cls) -> "LockHolder":
    now = time.time()
    return cls(socket.gethostname(), os.getpid(), now, now, uuid.uuid4().hex)

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=1) + "\n"

  @classmethod
  def from_json(cls, text: str) -> "LockHolder":
    fields = json.loads(text)
    return cls(str(fields["host"]), int(fields["pid"]), float(fields["started"]),
               float(fields["heartbeat"]), str(fields["token"]))

  def describe(self) -> str:
    started = datetime.datetime.fromtimestamp(self.started).isoformat(timespec="seconds")
    return (f"host {self.host}, pid {self.pid}, started {started}, last heartbeat "
            f"{max(time.time() - self.heartbeat, 0.0):.0f} s ago")


def _pid_is_running(pid: int) -> bool:
  """Whether a process `pid` exists on this host (it may belong to another user)."""
  if pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, owned by someone else
    return True
  return True


def _stale_reason(holder: LockHolder, stale_after_s: float) -> Optional[str]:
  """Why `holder` no longer holds its lock, or None while it may still be running."""
  age = time.time() - holder.heartbeat
  if holder.host == socket.gethostname() and not _pid_is_running(holder.pid):
    return f"its process {holder.pid} on this host has ended"
  if age > stale_after_s:
    return f"its heartbeat is {age:.0f} s old (stale after {stale_after_s:.0f} s)"
  return None


class WorkdirLock:
  """The lock of one workdir, held by this process between `hold` (or `acquire`, without
  the heartbeat thread and SIGTERM handler) and `release`; also a context manager.

  Args:
    workdir: the run's directory (local or remote); created if missing.
    stale_after_s: a lock whose heartbeat is older than this is taken over.
  """

  def __init__(self, workdir: str, stale_after_s: float):
    self.path = epath.Path(workdir) / LOCK_NAME
    self.stale_after_s = stale_after_s
    self.holder: Optional[LockHolder] = None
    self._local = "://" not in str(workdir)
    self._write_lock = threading.Lock()  # the heartbeat thread and the loop both write
    self._stop_beating = threading.Event()
    self._beater: Optional[threading.Thread] = None
    self._previous_sigterm = None

  # -- taking and giving back ------------------------------------------------------

  def acquire(self) -> None:
    """Takes the lock, taking over a stale one with a warning.

    Raises:
      WorkdirLockedError: a live run holds the workdir; the message names it.
    """
    self.path.parent.mkdir(parents=True, exist_ok=True)
    me = LockHolder.this_process()
    for _ in range(5):  # a few rounds, in case another run takes over at the same time
      if self._create_exclusive(me):
        self.holder = me
        return
      text, other = self._read()
      if text is None:  # released meanwhile
        continue
      reason = _stale_reason(other, self.stale_after_s)
      if reason is None:
        raise WorkdirLockedError(
            f"workdir {self.path.parent} is in use by another training run ("
            f"{other.describe()}); its lock is {self.path}. Wait for that run to finish, "
            f"stop it (kill {other.pid} on {other.host}), or choose another --workdir. "
            f"If no run uses this workdir, delete {self.path}.")
      logging.warning("taking over the stale lock of workdir %s (%s): %s",
                      self.path.parent, other.describe(), reason)
      self._remove_if_unchanged(text)
    raise WorkdirLockedError(f"could not take {self.path}: other runs keep taking it; "
                             "start one run per workdir")

  def hold(self) -> "WorkdirLock":
    """`acquire`, then keep the heartbeat fresh from a thread and release on SIGTERM.

    Without a handler SIGTERM ends the process at once and leaves the lock behind;
    raising SystemExit runs the `finally` blocks (saves, then `release`) instead.
    A handler installed later (the loop's own, while it steps) takes precedence.
    """
    self.acquire()
    if (threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL):
      self._previous_sigterm = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    self.start_heartbeat(self.stale_after_s / 10)
    return self

  def release(self) -> None:
    """Stops the heartbeat, restores SIGTERM's handler, and removes the lock if this
    process still holds it."""
    self.stop_heartbeat()
    if self._previous_sigterm is not None:
      signal.signal(signal.SIGTERM, self._previous_sigterm)
      self._previous_sigterm = None
    if self.holder is None:
      return
    with self._write_lock:
      _, current = self._read()
      if current is not None and current.token == self.holder.token:
        self.path.unlink(missing_ok=True)
      self.holder = None

  def refresh(self) -> None:
    """Writes a new heartbeat time.

    Raises:
      WorkdirLockedError: another run took the lock over (this run's heartbeat
        had gone stale); this run must stop writing to the workdir.
    """
    if self.holder is None:
      return
    with self._write_lock:
      _, current = self._read()
      if current is None or current.token != self.holder.token:
        taken = f"taken over by {current.describe()}" if current is not None else "deleted"
        raise WorkdirLockedError(
            f"the lock of workdir {self.path.parent} was {taken} while this run "
            f"(pid {self.holder.pid}) held it: stopping so that the two runs do not "
            "overwrite each other's checkpoints. Run one training per workdir, or raise "
            "loop.TrainerConfig.lock_stale_after_s if this run stalled for that long.")
      self.holder = dataclasses.replace(self.holder, heartbeat=time.time())
      self._write(self.holder)

  # -- background heartbeat and SIGTERM --------------------------------------------

  def start_heartbeat(self, every_s: float) -> None:
    """Refreshes the heartbeat every `every_s` seconds in a daemon thread, so a long
    compilation or evaluation does not look like a dead run."""
    def beat():
      while not self._stop_beating.wait(every_s):
        try:
          self.refresh()
        except WorkdirLockedError as e:  # the loop's own refresh (each checkpoint) raises
          logging.error("%s", e)
          return
        except Exception as e:  # pylint: disable=broad-except
          logging.warning("could not refresh the workdir lock's heartbeat (%s); retrying "
                          "in %.0f s", e, every_s)
    self._stop_beating.clear()
    self._beater = threading.Thread(target=beat, name="workdir-lock-heartbeat", daemon=True)
    self._beater.start()

  def stop_heartbeat(self) -> None:
    self._stop_beating.set()
    if self._beater is not None:
      self._beater.join()
      self._beater = None

  def __enter__(self) -> "WorkdirLock":
    return self.hold()

  def __exit__(self, *exc) -> bool:
    self.release()
    return False

  # -- the file --------------------------------------------------------------------

  def _read(self):
    """(the lock's text, its holder), or (None, None) when there is no lock. An
    unreadable lock (a holder that died while writing it) counts as written at its
    modification time by an unknown process."""
    try:
      text = self.path.read_text()
    except FileNotFoundError:
      return None, None
    try:
      return text, LockHolder.from_json(text)
    except (ValueError, KeyError, TypeError):
      try:
        written = self.path.stat().mtime
      except FileNotFoundError:
        return None, None
      return text, LockHolder("unknown", 0, written, written, "")

  def _write(self, holder: LockHolder) -> None:
    """Replaces the lock's content (local: atomically, through a renamed temp file)."""
    if self._local:
      temporary = f"{self.path}.{holder.token}.tmp"
      with open(temporary, "w") as f:
        f.write(holder.to_json())
      os.replace(temporary, self.path)
    else:
      self.path.write_text(holder.to_json())

  def _create_exclusive(self, me: LockHolder) -> bool:
    """Creates the lock holding `me` unless a lock exists; True when created."""
    if self._local:
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        return False
      with os.fdopen(fd, "w") as f:
        f.write(me.to_json())
      return True
    if self.path.exists():
      return False
    temporary = self.path.parent / f"{LOCK_NAME}.{me.token}.tmp"
    temporary.write_text(me.to_json())
    try:
      temporary.rename(self.path)
    except Exception:  # pylint: disable=broad-except
      temporary.unlink(missing_ok=True)
      return False
    _, holder = self._read()  # another run may have written at the same moment
    return holder is not None and holder.token == me.token

  def _remove_if_unchanged(self, judged_text: str) -> None:
    """Removes the stale lock whose content was `judged_text`, unless another run
    replaced it meanwhile (local: moved aside atomically first, then checked)."""
    if not self._local:
      text, _ = self._read()
      if text == judged_text:
        self.path.unlink(missing_ok=True)
      return
    aside = f"{self.path}.stale.{uuid.uuid4().hex}"
    try:
      os.rename(self.path, aside)
    except FileNotFoundError:
      return
    with open(aside) as f:
      moved = f.read()
    if moved != judged_text:  # a new holder's lock: put it back
      try:
        os.link(aside, self.path)
      except FileExistsError:
        pass
    os.unlink(aside)



def lock_workdir(workdir: str, stale_after_s: float) -> Optional[WorkdirLock]:
  """Process 0 takes the workdir's lock (returned; None on the other processes).

  Raises:
    WorkdirLockedError: on every process, when another live run holds the workdir.
  """
  return multihost.on_process_zero(
      lambda: WorkdirLock(workdir, stale_after_s).hold(),
      WorkdirLockedError(f"workdir {workdir} is in use by another training run (process "
                         "0's log names it)"))

def _exit_on_sigterm(signum, frame):
  del frame
  raise SystemExit(128 + signum)
