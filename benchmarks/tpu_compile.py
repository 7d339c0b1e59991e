"""The paper's Table 4 training steps compiled for TPU slices: memory, fit, roofline.

Compiles (no TPU needed: libtpu on this CPU host, `pip install -e '.[tpu]'`) the
200M model's training step at 2^17 tokens per batch, for segments of 512 and 2048,
XL only and with 8K, 65K (and, at 512, 262K) memories, on each topology, as
`python -m memorizing_jax.compile` does, and prints one JSON object per config:

  {"bench": "tpu_compile", "topology", "experiment", "memory_slots", "segment_length",
   "remat", "peak_gib", "device_hbm_gib", "fits", "roofline_ms", "roofline_bound",
   "ratio_to_xl", "cycles_ratio_to_xl", "approx_top_k", "collectives_gib",
   "compile_s", ...}

`ratio_to_xl` is the step's roofline estimate over the XL-only step's on the same
topology with the same settings (the paper measured 1.25x at 8K and 3.0x at 65K on
TPUv3); `cycles_ratio_to_xl` is that ratio of the TPU compiler's own cycle estimates. A config that does not fit is compiled again with `remat='full'` (the
nearest that fits), and the line says so. Every figure is a compiled estimate for
one device of the slice, not a measurement of a run.

    .venv/bin/python benchmarks/tpu_compile.py [--topologies v4:2x2x4 v5e:4x4 v5p:2x2x1]
        [--experiments table4_512_xl table4_512_xl_mem8k ...]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from memorizing_jax import compile as compile_lib  # noqa: E402  (sets JAX_PLATFORMS=cpu)

import gin  # noqa: E402

from memorizing_jax import main as main_lib  # noqa: E402
from memorizing_jax.train import aot  # noqa: E402

# v4-32 (16 chips), v5e-16, v5p-8 (4 chips).
TOPOLOGIES = ("v4:2x2x4", "v5e:4x4", "v5p:2x2x1")
# (name, gin files): each experiment file with a data file for its TASK.
EXPERIMENTS = {
    "table4_512_xl": ["experiments/table4_512_xl.gin"],
    "table4_512_xl_mem8k": ["experiments/table4_512_xl_mem8k.gin"],
    "table4_512_xl_mem65k": ["experiments/table4_512_xl_mem65k.gin"],
    "table4_512_xl_mem262k": ["experiments/table4_512_xl.gin", "memory/mem_262k.gin"],
    "table4_2048_xl": ["experiments/table4_2048_xl.gin"],
    "table4_2048_xl_mem8k": ["experiments/table4_2048_xl_mem8k.gin"],
    "table4_2048_xl_mem65k": ["experiments/table4_2048_xl_mem65k.gin"],
}
DATA = "data/arxiv.gin"


def configured(files, params=()):
  gin.clear_config()
  return main_lib.load_run_config([*files, DATA], list(params))


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--topologies", nargs="+", default=list(TOPOLOGIES))
  parser.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS))
  args = parser.parse_args(argv)
  for topology in args.topologies:
    devices = aot.topology_devices(topology)
    xl_roofline, xl_cycles = {}, {}  # (segment_length, remat) -> seconds, cycles
    for name in args.experiments:
      remat = "none"
      while True:
        arguments = configured(EXPERIMENTS[name],
                               [f"model_config.ModelConfig.remat = '{remat}'"])
        report = compile_lib.compile_for(devices, arguments, evaluation=False,
                                         reference=False)
        if report["fits"] or remat == "full":
          break
        remat = "full"
      model = arguments["model"]
      line = {"bench": "tpu_compile", "topology": topology, "experiment": name,
              "memory_slots": model.memory_slots if model.knn_layers else 0,
              "segment_length": model.segment_length, "batch": arguments["data"].batch_size,
              "lookup_method": model.lookup_method, "memory_dtype": model.memory_dtype,
              "remat": remat, "devices": report["devices"], "fits": report["fits"],
              "peak_gib": report["peak_gib"], "device_hbm_gib": report["device_hbm_gib"]}
      if "compiler_error" in report:  # the TPU compiler refused it: too big even so
        print(json.dumps(dict(line, compiler_error=report["compiler_error"])), flush=True)
        continue
      key = (model.segment_length, remat)
      if not model.knn_layers:
        xl = report
      elif key not in xl_roofline:
        xl_name = name.split("_mem")[0]
        xl_arguments = configured(EXPERIMENTS.get(xl_name, [f"experiments/{xl_name}.gin"]),
                                  [f"model_config.ModelConfig.remat = '{remat}'"])
        xl = compile_lib.compile_for(devices, xl_arguments, evaluation=False, reference=False)
      if not model.knn_layers or key not in xl_roofline:
        xl_roofline[key], xl_cycles[key] = xl["roofline_s"], xl["compiler_cycles"]
      print(json.dumps(dict(
          line, chip=report["chip"], train_arguments_gib=report["train_arguments_gib"],
          train_temporaries_gib=report["train_temporaries_gib"],
          roofline_ms=round(report["roofline_s"] * 1e3, 2),
          roofline_bound=report["roofline_bound"],
          ratio_to_xl=round(report["roofline_s"] / xl_roofline[key], 3),
          cycles_ratio_to_xl=(round(report["compiler_cycles"] / xl_cycles[key], 3)
                              if report["compiler_cycles"] and xl_cycles[key] else None),
          flops=report["flops"], bytes_accessed=report["bytes_accessed"],
          approx_top_k=report["approx_top_k"],
          collectives_gib=report["collectives_gib"]["total"],
          compile_s=report["compile_s"])), flush=True)


if __name__ == "__main__":
  main()
