"""One run per workdir: the lock refuses a second run, takes over stale locks, and
`loop.train` takes it before writing anything."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import jax
import pytest

from memorizing_jax.train import loop, multihost
from memorizing_jax.train.workdir_lock import LOCK_NAME, LockHolder, WorkdirLock, \
    WorkdirLockedError, lock_workdir

from tiny_runs import entry_point_bindings, run_entry_point  # pylint: disable=g-bad-import-order


def _write_lock(workdir, host, pid, heartbeat_age_s):
  now = time.time()
  holder = LockHolder(host, pid, now - heartbeat_age_s - 60, now - heartbeat_age_s, "other")
  (workdir / LOCK_NAME).write_text(holder.to_json())
  return holder


def _ended_pid():
  child = subprocess.Popen([sys.executable, "-c", "pass"])
  child.wait()
  return child.pid


def test_the_lock_file_names_its_holder(tmp_path):
  before = time.time()
  lock = WorkdirLock(str(tmp_path), stale_after_s=600)
  lock.acquire()
  written = json.loads((tmp_path / LOCK_NAME).read_text())
  assert written["host"] == socket.gethostname() and written["pid"] == os.getpid()
  assert before <= written["started"] == written["heartbeat"] <= time.time()
  lock.release()


def test_a_second_lock_on_a_live_lock_refuses_naming_the_holder(tmp_path):
  first = WorkdirLock(str(tmp_path), stale_after_s=600)
  first.acquire()
  text = (tmp_path / LOCK_NAME).read_text()
  with pytest.raises(WorkdirLockedError) as error:
    WorkdirLock(str(tmp_path), stale_after_s=600).acquire()
  message = str(error.value)
  assert f"host {socket.gethostname()}, pid {os.getpid()}, started " in message
  assert f"kill {os.getpid()} on {socket.gethostname()}" in message
  assert "Wait for that run to finish" in message and "another --workdir" in message
  assert (tmp_path / LOCK_NAME).read_text() == text  # the holder's lock is untouched
  first.release()


def test_the_lock_of_an_ended_process_on_this_host_is_taken_over(tmp_path, caplog):
  pid = _ended_pid()
  _write_lock(tmp_path, socket.gethostname(), pid, heartbeat_age_s=1)
  lock = WorkdirLock(str(tmp_path), stale_after_s=600)
  with caplog.at_level("WARNING"):
    lock.acquire()
  assert f"its process {pid} on this host has ended" in caplog.text
  assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
  assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME]  # nothing left aside
  lock.release()


def test_another_hosts_lock_is_taken_over_only_when_its_heartbeat_is_old(tmp_path, caplog):
  _write_lock(tmp_path, "other-host", 1, heartbeat_age_s=30)
  with pytest.raises(WorkdirLockedError, match=r"host other-host, pid 1, .*heartbeat 30 s ago"):
    WorkdirLock(str(tmp_path), stale_after_s=600).acquire()

  _write_lock(tmp_path, "other-host", 1, heartbeat_age_s=700)
  lock = WorkdirLock(str(tmp_path), stale_after_s=600)
  with caplog.at_level("WARNING"):
    lock.acquire()
  assert "its heartbeat is 700 s old (stale after 600 s)" in caplog.text
  assert json.loads((tmp_path / LOCK_NAME).read_text())["host"] == socket.gethostname()
  lock.release()


def test_release_removes_the_lock_and_a_new_run_takes_it(tmp_path):
  lock = WorkdirLock(str(tmp_path), stale_after_s=600)
  lock.acquire()
  lock.release()
  assert not (tmp_path / LOCK_NAME).exists()
  again = WorkdirLock(str(tmp_path), stale_after_s=600)
  again.acquire()
  again.release()


def test_refresh_moves_the_heartbeat_and_notices_a_takeover(tmp_path):
  lock = WorkdirLock(str(tmp_path), stale_after_s=600)
  lock.acquire()
  first = json.loads((tmp_path / LOCK_NAME).read_text())
  time.sleep(0.01)
  lock.refresh()
  refreshed = json.loads((tmp_path / LOCK_NAME).read_text())
  assert refreshed["heartbeat"] > first["heartbeat"]
  assert refreshed["started"] == first["started"] and refreshed["token"] == first["token"]
  # Another run took the lock over (this one had stalled): this run must stop.
  other = _write_lock(tmp_path, "other-host", 7, heartbeat_age_s=0)
  with pytest.raises(WorkdirLockedError, match=r"taken over by host other-host, pid 7"):
    lock.refresh()
  lock.release()  # leaves the other run's lock alone
  assert json.loads((tmp_path / LOCK_NAME).read_text())["token"] == other.token


def test_holding_beats_in_the_background_and_restores_sigterm(tmp_path):
  handler = signal.getsignal(signal.SIGTERM)
  with WorkdirLock(str(tmp_path), stale_after_s=0.5) as lock:  # a heartbeat every 0.05 s
    started = lock.holder.heartbeat
    time.sleep(0.3)
    assert json.loads((tmp_path / LOCK_NAME).read_text())["heartbeat"] > started
  assert not (tmp_path / LOCK_NAME).exists()
  assert signal.getsignal(signal.SIGTERM) == handler


def test_sigterm_releases_a_held_lock(tmp_path):
  holder = subprocess.Popen(
      [sys.executable, "-c",
       "import sys, time\n"
       "from memorizing_jax.train.workdir_lock import WorkdirLock\n"
       f"with WorkdirLock({str(tmp_path)!r}, stale_after_s=600):\n"
       "  print('held', flush=True)\n"
       "  time.sleep(60)\n"],
      stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline() == "held\n"
  assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == holder.pid
  holder.send_signal(signal.SIGTERM)
  assert holder.wait(timeout=30) == 128 + signal.SIGTERM
  assert not (tmp_path / LOCK_NAME).exists()


def _files(root):
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
          if p.is_file()}


def test_train_refuses_a_workdir_held_by_a_live_run_and_changes_nothing(tiny, tmp_path):
  one_step = tiny.replace(mesh=dict(data=1, model=1), trainer=dict(total_steps=1))
  loop.train(workdir=str(tmp_path), gin_config="# the first run\n", **one_step.kwargs())
  assert not (tmp_path / LOCK_NAME).exists()  # released at the end
  assert (tmp_path / "checkpoints" / "1").is_dir()
  sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
  try:
    _write_lock(tmp_path, socket.gethostname(), sleeper.pid, heartbeat_age_s=0)
    before = _files(tmp_path)
    with pytest.raises(WorkdirLockedError, match=rf"pid {sleeper.pid}, started "):
      loop.train(workdir=str(tmp_path), gin_config="# a second run\n",
                 **one_step.replace(trainer=dict(total_steps=2)).kwargs())
    assert _files(tmp_path) == before
  finally:
    sleeper.kill()
    sleeper.wait()


def test_the_entry_point_reports_a_held_workdir_in_one_line(github_corpus, tmp_path, capsys):
  _write_lock(tmp_path, socket.gethostname(), os.getpid(), heartbeat_age_s=0)  # a live run
  bindings = entry_point_bindings(1, 1, eval_batches=1, keep_checkpoints=1)
  assert run_entry_point(["--gin_file=train.gin", f"--workdir={tmp_path}",
                          *[f"--gin_param={b}" for b in bindings]]) == 1
  err = capsys.readouterr().err
  assert err.startswith("error: ") and f"pid {os.getpid()}" in err and "Traceback" not in err
  assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME]  # nothing else written


def test_a_gs_workdir_is_locked_through_etils(local_gcs):
  """The remote path (temporary object, rename, read back) on a gs:// stand-in."""
  workdir = "gs://bucket/run"
  first = WorkdirLock(workdir, stale_after_s=600)
  first.acquire()
  stored = json.loads((local_gcs / "bucket" / "run" / LOCK_NAME).read_text())
  assert (stored["host"], stored["pid"]) == (socket.gethostname(), os.getpid())
  with pytest.raises(WorkdirLockedError, match=rf"pid {os.getpid()}"):
    WorkdirLock(workdir, stale_after_s=600).acquire()
  first.release()
  assert list((local_gcs / "bucket" / "run").iterdir()) == []
  _write_lock(local_gcs / "bucket" / "run", "another-host", 1, heartbeat_age_s=700)
  second = WorkdirLock(workdir, stale_after_s=600)
  second.acquire()  # a stale lock of another host is taken over
  assert json.loads((local_gcs / "bucket" / "run" / LOCK_NAME).read_text())["pid"] == os.getpid()
  second.release()


def test_lock_workdir_holds_the_lock_on_process_zero(tmp_path):
  workdir = str(tmp_path / "run")
  lock = lock_workdir(workdir, stale_after_s=600)
  try:
    assert isinstance(lock, WorkdirLock) and lock.holder.pid == os.getpid()
    assert json.loads((tmp_path / "run" / LOCK_NAME).read_text())["token"] == lock.holder.token
    with pytest.raises(WorkdirLockedError, match=rf"pid {os.getpid()}, started "):
      lock_workdir(workdir, stale_after_s=600)
  finally:
    lock.release()
  assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_lock_workdir_on_another_process_takes_nothing_and_shares_a_refusal(tmp_path,
                                                                            monkeypatch):
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  monkeypatch.setattr(multihost, "any_process", lambda failed: False)  # process 0 holds it
  assert lock_workdir(str(tmp_path), stale_after_s=600) is None
  assert not (tmp_path / LOCK_NAME).exists()
  monkeypatch.setattr(multihost, "any_process", lambda failed: True)  # process 0 refused
  with pytest.raises(WorkdirLockedError) as error:
    lock_workdir(str(tmp_path), stale_after_s=600)
  assert str(error.value) == (f"workdir {tmp_path} is in use by another training run "
                              "(process 0's log names it)")


def test_this_process_names_this_host_and_pid_with_a_new_token_each_time():
  before = time.time()
  first, second = LockHolder.this_process(), LockHolder.this_process()
  assert (first.host, first.pid) == (socket.gethostname(), os.getpid())
  assert before <= first.started == first.heartbeat <= second.started <= time.time()
  assert len(first.token) == 32 and int(first.token, 16) >= 0  # a uuid4's hex
  assert first.token != second.token


def test_from_json_reads_to_json_back_and_coerces_the_field_types():
  holder = LockHolder("host-a", 1234, 1700000000.25, 1700000042.5, "abc")
  assert json.loads(holder.to_json()) == dict(host="host-a", pid=1234, started=1700000000.25,
                                              heartbeat=1700000042.5, token="abc")
  assert LockHolder.from_json(holder.to_json()) == holder
  loose = '{"host": 7, "pid": "12", "started": 1, "heartbeat": "2.5", "token": 5, "x": 0}'
  assert LockHolder.from_json(loose) == LockHolder("7", 12, 1.0, 2.5, "5")
  with pytest.raises(KeyError, match="token"):
    LockHolder.from_json('{"host": "h", "pid": 1, "started": 1, "heartbeat": 1}')


def test_describe_gives_the_local_start_time_and_the_heartbeat_age():
  started = 1700000000.0
  local = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started))
  old = LockHolder("host-a", 99, started, time.time() - 120, "t")
  assert old.describe() == f"host host-a, pid 99, started {local}, last heartbeat 120 s ago"
  future = LockHolder("host-a", 99, started, time.time() + 30, "t")  # another host's clock
  assert future.describe().endswith("last heartbeat 0 s ago")


def _heartbeat(workdir):
  return json.loads((workdir / LOCK_NAME).read_text())["heartbeat"]


def _beating():
  return [t for t in threading.enumerate() if t.name == "workdir-lock-heartbeat"]


def test_start_heartbeat_refreshes_the_lock_until_stop_heartbeat(tmp_path):
  lock = WorkdirLock(str(tmp_path), stale_after_s=600)
  lock.acquire()
  handler = signal.getsignal(signal.SIGTERM)
  try:
    first = _heartbeat(tmp_path)
    lock.start_heartbeat(0.02)
    assert signal.getsignal(signal.SIGTERM) == handler  # only `hold` installs a handler
    deadline = time.time() + 10
    while _heartbeat(tmp_path) == first and time.time() < deadline:
      time.sleep(0.01)
    assert _heartbeat(tmp_path) > first
    lock.stop_heartbeat()
    assert not _beating()
    stopped = _heartbeat(tmp_path)
    time.sleep(0.1)  # five periods
    assert _heartbeat(tmp_path) == stopped
  finally:
    lock.release()


def test_the_heartbeat_thread_ends_when_another_run_takes_the_lock(tmp_path, caplog):
  lock = WorkdirLock(str(tmp_path), stale_after_s=600)
  lock.acquire()
  other = _write_lock(tmp_path, "other-host", 7, heartbeat_age_s=0)
  with caplog.at_level("ERROR"):
    lock.start_heartbeat(0.02)
    deadline = time.time() + 10
    while _beating() and time.time() < deadline:
      time.sleep(0.01)
  assert not _beating()
  assert "was taken over by host other-host, pid 7" in caplog.text
  assert (tmp_path / LOCK_NAME).read_text() == other.to_json()  # left as the other run wrote it
  lock.release()
  assert (tmp_path / LOCK_NAME).read_text() == other.to_json()


def test_hold_keeps_a_sigterm_handler_that_was_already_installed(tmp_path):
  def own_handler(signum, frame):
    del signum, frame

  previous = signal.signal(signal.SIGTERM, own_handler)
  try:
    lock = WorkdirLock(str(tmp_path), stale_after_s=600).hold()
    assert signal.getsignal(signal.SIGTERM) is own_handler
    assert json.loads((tmp_path / LOCK_NAME).read_text())["token"] == lock.holder.token
    lock.release()
    assert signal.getsignal(signal.SIGTERM) is own_handler
    assert not (tmp_path / LOCK_NAME).exists() and not _beating()
  finally:
    signal.signal(signal.SIGTERM, previous)
