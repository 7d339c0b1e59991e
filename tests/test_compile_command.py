"""`python -m memorizing_jax.compile` and `compile_for`: a training step compiled for a
TPU topology on this CPU host (libtpu, no TPU), reported as JSON; `describe`'s lines on
hand-made reports."""
import dataclasses
import json
import subprocess
import sys

import pytest

from memorizing_jax import compile as compile_lib
from memorizing_jax.train import aot
from small_tpu_run import MODEL, TOPOLOGY, arguments, needs_libtpu  # pylint: disable=g-bad-import-order


def test_reference_step_gives_the_ratio_to_xl():
  needs_libtpu()
  devices = aot.topology_devices(TOPOLOGY)
  # Another segment length than test_aot's steps: the session's persistent compilation
  # cache would otherwise offer its compile-only TPU executables back (and warn).
  longer = arguments(dataclasses.replace(MODEL, segment_length=32))
  report = compile_lib.compile_for(devices, longer, evaluation=False, reference=True)
  assert report["fits"] and report["ratio_to_xl"] > 1.0 and report["cycles_ratio_to_xl"] > 1.0
  assert report["roofline_s"] == pytest.approx(report["ratio_to_xl"] * report["xl_roofline_s"])
  # The memory stays on its chips: its step adds (almost) no collective.
  assert 0 <= report["memory_collectives_mib"] < 1


def test_compile_command_prints_the_report(tmp_path):
  needs_libtpu()
  out = tmp_path / "report.json"
  done = subprocess.run(
      [sys.executable, "-m", "memorizing_jax.compile", "--gin_file=gin/quickstart.gin",
       "--gin_param=model_config.ModelConfig.lookup_method = 'approx'",
       "--gin_param=model_config.ModelConfig.num_layers = 2",
       f"--topology={TOPOLOGY}", f"--out={out}", "--noevaluation", "--noreference"],
      capture_output=True, text=True, timeout=600, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  report = json.loads(done.stdout.strip().splitlines()[-1])
  assert report == json.loads(out.read_text())
  assert report["topology"] == TOPOLOGY and report["devices"] == 4 and report["fits"]
  assert report["approx_top_k"] and "ratio_to_xl" not in report
  assert "fits a 16.0 GiB v5e device" in done.stdout


def _report(**changes):
  """A report as `main` prints it: a v5e-16 that fits, with a reference step."""
  report = dict(topology="v5e:4x4", devices=16, device_kind="TPU v5 lite",
                mesh={"data": 8, "model": 2, "memory": 1}, peak_gib=7.25,
                train_arguments_gib=3.5, train_temporaries_gib=2.125, fits=True,
                device_hbm_gib=16.0, chip="v5e", roofline_s=0.0425, roofline_bound="memory",
                ratio_to_xl=1.1484, cycles_ratio_to_xl=1.25,
                collectives_gib={"all-reduce": 0.25, "total": 0.25},
                memory_collectives_mib=0.5, approx_top_k=True)
  report.update(changes)
  return {k: v for k, v in report.items() if v is not None}


def test_describe_reports_memory_fit_roofline_and_ratio_to_xl():
  lines = compile_lib.describe(_report()).splitlines()
  assert lines[:5] == [
      "v5e:4x4: 16 x TPU v5 lite, mesh {'data': 8, 'model': 2, 'memory': 1}",
      "  per device: 7.25 GiB peak (training: arguments 3.50, temporaries 2.12 GiB)",
      "  fits a 16.0 GiB v5e device",
      "  roofline step 42.5 ms (memory-bound; a compiled estimate, not a run)",
      "  1.148x the XL-only step's roofline, 1.250x its cycles as the TPU compiler estimates "
      "them"]
  assert lines[5:] == ["  collectives per step: 0.25 GiB (0.5 MiB more than the XL-only "
                       "step's); approximate top-k: True"]


def test_describe_leaves_out_what_the_report_lacks():
  lines = compile_lib.describe(_report(
      fits=False, ratio_to_xl=None, cycles_ratio_to_xl=None, memory_collectives_mib=None,
      approx_top_k=False)).splitlines()
  assert lines[2] == "  DOES NOT FIT a 16.0 GiB v5e device"
  assert not any("XL-only" in line for line in lines)
  assert lines[-1] == "  collectives per step: 0.25 GiB; approximate top-k: False"
  off_tpu = compile_lib.describe(_report(fits=None, ratio_to_xl=None)).splitlines()
  assert len(off_tpu) == 3 and "fits" not in "".join(off_tpu[1:])  # no chip figures: no fit


def test_describe_of_a_step_the_compiler_refused_is_its_error():
  report = dict(topology="v4:2x2x4", devices=16, device_kind="TPU v4",
                mesh={"data": 16, "model": 1, "memory": 1}, fits=False,
                compiler_error="RESOURCE_EXHAUSTED: 40.1G of 32G hbm", peak_gib=40.1)
  assert compile_lib.describe(report) == (
      "v4:2x2x4: 16 x TPU v4, mesh {'data': 16, 'model': 1, 'memory': 1}\n"
      "  DOES NOT FIT: RESOURCE_EXHAUSTED: 40.1G of 32G hbm")
