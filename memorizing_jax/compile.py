r"""Compile a run's training step for a TPU topology on this host, before paying for a pod.

  python -m memorizing_jax.compile --gin_file=experiments/table4_512_xl_mem65k.gin \
      --gin_file=data/arxiv.gin --topology=v4:2x2x4 [--gin_param=...] [--out=compile.json]

The same gin files and bindings as training (`memorizing_jax.main`). The real TPU
compiler (libtpu: `pip install -e '.[tpu]'`; no TPU needed) compiles the training
and evaluation steps for the topology's devices, exactly as the trainer builds
them, and one JSON line reports per device: HBM (arguments, temporaries, outputs,
aliased; the peak over training and evaluation) and whether it fits the chip,
collective bytes by kind, FLOPs and bytes per step, a roofline step time (the
larger of FLOPs / peak FLOP/s and bytes / HBM bandwidth), whether the approximate
top-k (`ApproxTopK`) is in the program, and, for a model with memory,
`ratio_to_xl`: its roofline over the same model's without memory (XL cache only),
with `cycles_ratio_to_xl`, the same ratio of the TPU compiler's own cycle
estimates. These are compiled estimates, not measurements of a run.

Topologies name a TPU generation and its chip grid: v4:2x2x4 (a v4-32 slice, 16
chips), v5e:4x4 (v5e-16), v5p:2x2x1 (v5p-8), v6e:2x2. v4 and v5p compile in
megacore mode, one device per chip, as their pods run (--nomegacore: one device
per TensorCore, as libtpu lists them by default, each with half the chip's HBM).
Exits with status 1 and says what to change when the step does not fit.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any, Dict, Optional, Sequence

# Compile for the topology from the CPU; a second libtpu user on this host is fine.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from memorizing_jax import command_line  # noqa: E402  (--gin_file, --gin_param, --out)
from memorizing_jax import main as main_lib  # noqa: E402
from memorizing_jax.train import aot  # noqa: E402
from memorizing_jax.train import chips  # noqa: E402

# The trainer (train.loop, which builds the run) is imported in `compile_for`, not here:
# it loads TensorFlow (clu's metric writers), which made `--help` take 5.6 s.

FLAGS = flags.FLAGS
for _name in (*command_line.GIN_FLAGS, "out"):  # defined in command_line
  flags.declare_key_flag(_name)
flags.DEFINE_string("topology", None, "TPU topology to compile for, e.g. v4:2x2x4, v5e:4x4, "
                    "v5p:2x2x1, v6e:2x2.")
flags.DEFINE_bool("evaluation", True, "Also compile the evaluation step (its peak memory "
                  "counts towards fitting).")
flags.DEFINE_bool("megacore", True, "v4 and v5p: one device per chip, as their pods run "
                  "JAX; --nomegacore: one device per TensorCore (half a chip each).")
flags.DEFINE_bool("reference", True, "For a model with memory, also compile the XL-only "
                  "step and report ratio_to_xl.")

def compile_for(devices: Sequence[Any], arguments: Dict[str, Any], evaluation: bool = True,
                reference: bool = True) -> Dict[str, Any]:
  """Compiles the configured steps for `devices`; the report `summary` gives, plus
  `ratio_to_xl` when a reference step was compiled."""

  from memorizing_jax.train import loop  # pylint: disable=g-import-not-at-top  (see the top)

  def build(model):
    return loop.build_run(model, arguments["data"], arguments["optimizer"], arguments["mesh"],
                          arguments["trainer"], devices=devices)

  model = arguments["model"]
  run = build(model)
  peak = chips.device_peak(devices[0])
  try:
    train = aot.compile_train_step(run)
    evaluation_cost = aot.compile_eval_step(run) if evaluation else None
  except aot.DoesNotFitError as e:  # the compiler itself refused: report it as a misfit
    gib = lambda b: None if b is None else round(b / chips.GIB, 3)
    return dict(device_kind=devices[0].device_kind, devices=len(devices),
                mesh=dict(run.partitioner.mesh.shape), fits=False, compiler_error=str(e),
                peak_gib=gib(e.needed_bytes),
                device_hbm_gib=gib(e.available_bytes if e.available_bytes is not None
                                   else (peak.hbm_bytes if peak else None)))
  report = dict(device_kind=devices[0].device_kind,
                **aot.summary(run, train, evaluation_cost, peak))
  if reference and model.knn_layers and peak is not None:
    xl_train = aot.compile_train_step(build(dataclasses.replace(model, knn_layers=())))
    xl_roofline = peak.roofline_seconds(xl_train.flops, xl_train.bytes_accessed)
    report.update(xl_roofline_s=xl_roofline, ratio_to_xl=report["roofline_s"] / xl_roofline,
                  # What the memory adds to the step's collectives (per device per step).
                  memory_collectives_mib=round(
                      (train.collectives["total"] - xl_train.collectives["total"]) / 2**20, 1))
    if train.cycles and xl_train.cycles:  # 0 off TPU, None where not every op is estimated
      report["cycles_ratio_to_xl"] = train.cycles / xl_train.cycles
  return report


def describe(report: Dict[str, Any]) -> str:
  """A few lines a person reads before the JSON line."""
  lines = [f"{report['topology']}: {report['devices']} x {report['device_kind']}, mesh "
           f"{report['mesh']}"]
  if "compiler_error" in report:
    return "\n".join(lines + [f"  DOES NOT FIT: {report['compiler_error']}"])
  lines.append(f"  per device: {report['peak_gib']:.2f} GiB peak (training: arguments "
               f"{report['train_arguments_gib']:.2f}, temporaries "
               f"{report['train_temporaries_gib']:.2f} GiB)")
  if "fits" in report:
    lines.append(f"  {'fits' if report['fits'] else 'DOES NOT FIT'} a "
                 f"{report['device_hbm_gib']:.1f} GiB {report['chip']} device")
    lines.append(f"  roofline step {report['roofline_s'] * 1e3:.1f} ms "
                 f"({report['roofline_bound']}-bound; a compiled estimate, not a run)")
  if "ratio_to_xl" in report:
    lines.append(f"  {report['ratio_to_xl']:.3f}x the XL-only step's roofline"
                 + (f", {report['cycles_ratio_to_xl']:.3f}x its cycles as the TPU compiler "
                    "estimates them" if "cycles_ratio_to_xl" in report else ""))
  lines.append(f"  collectives per step: {report['collectives_gib']['total']} GiB"
               + (f" ({report['memory_collectives_mib']} MiB more than the XL-only step's)"
                  if "memory_collectives_mib" in report else "")
               + f"; approximate top-k: {report['approx_top_k']}")
  return "\n".join(lines)


def main(argv: Sequence[str]) -> Optional[int]:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; use --gin_file/--gin_param")
  if not FLAGS.topology:
    raise app.UsageError("--topology is required (e.g. --topology=v5e:4x4)")
  try:
    arguments = main_lib.load_run_config(FLAGS.gin_file, FLAGS.gin_param,
                                         command_line.gin_search_path_flags())
    devices = aot.topology_devices(FLAGS.topology, FLAGS.megacore)
    report = dict(topology=FLAGS.topology,
                  **compile_for(devices, arguments, FLAGS.evaluation, FLAGS.reference))
  except (main_lib.ConfigError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(describe(report))
  line = json.dumps(report, sort_keys=True)
  print(line)
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      f.write(line + "\n")
  if report.get("fits") is False:
    print("error: " + aot.does_not_fit_advice(arguments["model"], report["peak_gib"],
                                              report["device_hbm_gib"]), file=sys.stderr)
    return 1
  return 0


def run() -> None:
  app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
  run()
