"""`python -m memorizing_jax.compile` and `compile_for`: a training step compiled for a
TPU topology on this CPU host (libtpu, no TPU), reported as JSON."""
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
