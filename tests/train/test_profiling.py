"""The profiler's window: which updates it traces, and the trace it writes."""
import jax
import jax.numpy as jnp

from memorizing_jax.train.profiling import Profiler


def _record_traces(monkeypatch):
  events = []
  monkeypatch.setattr(jax.profiler, "start_trace", lambda d: events.append(("start", d)))
  monkeypatch.setattr(jax.profiler, "stop_trace", lambda: events.append(("stop",)))
  return events


def _run(profiler: Profiler, steps: int, events):
  """The loop's calls around `steps` updates from step counter 0; the events after each
  update."""
  after = []
  state = jnp.zeros(())
  for step in range(steps):
    profiler.before_step(step)
    state = state + 1
    profiler.after_step(step + 1, state)
    after.append(list(events))
  return after


def test_traces_the_updates_of_its_window(monkeypatch):
  events = _record_traces(monkeypatch)
  profiler = Profiler("/runs/a/profile", first_step=1, steps=2)
  after = _run(profiler, 5, events)
  assert after[0] == []  # the first update warms up
  assert after[1] == after[2][:1] == [("start", "/runs/a/profile")]
  assert after[2] == after[4] == [("start", "/runs/a/profile"), ("stop",)]
  assert not profiler.active


def test_zero_steps_trace_nothing(monkeypatch):
  events = _record_traces(monkeypatch)
  profiler = Profiler("/runs/a/profile", first_step=1, steps=0)
  _run(profiler, 3, events)
  profiler.stop()
  assert events == []


def test_stop_ends_a_trace_cut_short_once(monkeypatch):
  """The loop calls `stop` when it ends, also on an error inside the window."""
  events = _record_traces(monkeypatch)
  profiler = Profiler("/runs/a/profile", first_step=0, steps=10)
  _run(profiler, 2, events)
  profiler.stop()
  profiler.stop()
  assert events == [("start", "/runs/a/profile"), ("stop",)]


def test_writes_a_trace_for_tensorboard(tmp_path):
  profiler = Profiler(str(tmp_path), first_step=0, steps=1)
  _run(profiler, 2, [])
  traces = list(tmp_path.rglob("*.xplane.pb"))
  assert len(traces) == 1 and traces[0].stat().st_size > 0
