"""Ahead-of-time compilation of a run's steps, and what they cost per device.

`compile_train_step` and `compile_eval_step` compile the steps exactly as the
trainer builds them, for the run's devices: this host's, or a TPU topology's
compile-only devices (`topology_devices`, libtpu on a CPU host, as MaxText's
`train_compile.py` does). Nothing runs; the figures are the compiler's:
per-device memory, FLOPs, bytes accessed and collectives, and from the chip's
peak figures a roofline step time and whether the step fits the chip's HBM.
"""
from __future__ import annotations

import dataclasses
import math
import re
import time
from typing import Any, Dict, List, Optional

import jax
from jax.experimental import topologies
import numpy as np

from memorizing_jax.train import chips as chips_lib
from memorizing_jax.train import compiled as compiled_lib
from memorizing_jax.train import steps as steps_lib

# TPU generations with two TensorCores per chip: compiled in megacore mode (one JAX
# device per chip), as a pod of them runs.
MEGACORE_PREFIXES = ("v4", "v5p")


def topology_devices(topology: str, megacore: bool = True) -> List[Any]:
  """The compile-only devices of a TPU topology, e.g. "v4:2x2x4" or "v5e:4x4".

  Needs libtpu (`pip install memorizing_jax[tpu]`), not a TPU. With `megacore`
  (the default), v4 and v5p give one device per chip; else one per TensorCore,
  each with half the chip.
  """
  options = ({"chip_config_name": "megacore"}
             if megacore and topology.startswith(MEGACORE_PREFIXES) else {})
  try:
    return list(topologies.get_topology_desc(platform="tpu", topology_name=topology,
                                             **options).devices)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(
        f"cannot build TPU topology {topology!r}: {e}. Name a generation and chip grid, e.g. "
        "v4:2x2x4 (16 chips), v5e:4x4, v5p:2x2x1, v6e:2x2; compiling for TPU needs libtpu "
        "(pip install -e '.[tpu]')") from e


def per_device_bytes(abstract: Any) -> int:
  """Bytes one device holds of a tree of ShapeDtypeStructs carrying shardings."""
  total = 0
  for leaf in jax.tree.leaves(abstract):
    shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
    total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
  return total


@dataclasses.dataclass(frozen=True)
class StepCost:
  """What one compiled step costs on each device (bytes, FLOPs: per device)."""

  argument_bytes: int
  output_bytes: int
  alias_bytes: int
  temp_bytes: int
  flops: float
  bytes_accessed: float
  collectives: Dict[str, int]
  approx_top_k: bool
  compile_seconds: float
  cycles: Optional[int] = 0

  @property
  def peak_bytes(self) -> int:
    """Arguments, temporaries and the outputs that do not reuse a donated argument."""
    return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes

  @classmethod
  def of(cls, compiled: jax.stages.Compiled, seconds: float) -> "StepCost":
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}
    text = compiled.as_text()
    return cls(argument_bytes=memory.argument_size_in_bytes,
               output_bytes=memory.output_size_in_bytes,
               alias_bytes=memory.alias_size_in_bytes, temp_bytes=memory.temp_size_in_bytes,
               flops=compiled_lib.flops_per_device(compiled),
               bytes_accessed=float(cost.get("bytes accessed", 0.0)),
               collectives=compiled_lib.collective_bytes(text),
               approx_top_k=compiled_lib.has_approx_top_k(text), compile_seconds=seconds,
               cycles=compiled_lib.estimated_cycles(text))


class DoesNotFitError(ValueError):
  """The compiler found that the step needs more memory than a device has.

  Attributes:
    needed_bytes, available_bytes: per device, as the compiler reported them (None
      where its message does not say).
  """

  def __init__(self, message: str, needed_bytes: Optional[float],
               available_bytes: Optional[float]):
    super().__init__(message)
    self.needed_bytes, self.available_bytes = needed_bytes, available_bytes


_SIZE = r"\(([0-9.]+)([KMGT])\)"
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _compiled_cost(lowered: jax.stages.Lowered, started: float) -> StepCost:
  """Compiles `lowered`; its cost, timed from `started` (before the lowering)."""
  try:
    compiled = lowered.compile()
  except Exception as e:  # pylint: disable=broad-except
    message = str(e)
    if "RESOURCE_EXHAUSTED" not in message and "Ran out of memory" not in message:
      raise
    sizes = [float(v) * _UNITS[u] for v, u in re.findall(_SIZE, message)]
    raise DoesNotFitError(message.strip().splitlines()[-1], *(sizes[:2] if len(sizes) >= 2
                                                             else (None, None))) from e
  return StepCost.of(compiled, time.perf_counter() - started)


def lower_train_step(run) -> jax.stages.Lowered:
  """`run.steps.train` lowered for the run's mesh (see `loop.build_run`), from the
  state's and a batch's shapes: the trainer compiles this once before its loop."""
  batch = steps_lib.abstract_batch(run.partitioner, run.data.batch_size,
                                   run.model_config.segment_length)
  return run.steps.train.lower(run.layout.abstract, batch)


def compile_train_step(run) -> StepCost:
  """Compiles `run.steps.train` for the run's mesh and reads what it costs."""
  started = time.perf_counter()
  return _compiled_cost(lower_train_step(run), started)


def compile_eval_step(run) -> StepCost:
  """Compiles `run.steps.evaluate` (the eval batch size's model state)."""
  started = time.perf_counter()
  batch = steps_lib.abstract_batch(run.partitioner, run.data.eval_batch_size,
                                   run.model_config.segment_length)
  lowered = run.steps.evaluate.lower(run.layout.abstract.params, run.eval_state, batch)
  return _compiled_cost(lowered, started)


def evaluation_peak_bytes(run, train: StepCost, evaluation: StepCost) -> int:
  """Per-device bytes while the evaluation step runs during training.

  The train state stays on the device except its model state (XL caches and
  memories), which the trainer moves to host memory for the evaluation
  (`loop.run_evaluation`); the evaluation's own arguments repeat the params.
  """
  train_model_state = per_device_bytes(run.layout.abstract.model_state)
  params = per_device_bytes(run.layout.abstract.params)
  return (train.argument_bytes - train_model_state) + (evaluation.peak_bytes - params)


def summary(run, train: StepCost, evaluation: Optional[StepCost],
            peak: Optional[chips_lib.DevicePeak]) -> Dict[str, Any]:
  """The figures a person deciding on a slice reads, as one flat JSON-able dict.

  Bytes are per device in GiB; `roofline_s` is the larger of FLOPs / peak FLOP/s and
  bytes accessed / HBM bandwidth for the training step on one device;
  `compiler_cycles` is the TPU compiler's own cycle estimate (0 elsewhere, None
  where it could not estimate every op).
  """
  gib = lambda b: round(b / chips_lib.GIB, 3)
  out = {
      "devices": run.partitioner.mesh.size,
      "mesh": dict(run.partitioner.mesh.shape),
      "train_arguments_gib": gib(train.argument_bytes),
      "train_temporaries_gib": gib(train.temp_bytes),
      "train_outputs_gib": gib(train.output_bytes),
      "train_aliased_gib": gib(train.alias_bytes),
      "train_peak_gib": gib(train.peak_bytes),
      "collectives_gib": {k: gib(v) for k, v in train.collectives.items()},
      "flops": train.flops,
      "bytes_accessed": train.bytes_accessed,
      "approx_top_k": train.approx_top_k,
      "compiler_cycles": train.cycles,
      "compile_s": round(train.compile_seconds, 1),
  }
  needed = train.peak_bytes
  if evaluation is not None:
    eval_peak = evaluation_peak_bytes(run, train, evaluation)
    out.update(eval_peak_gib=gib(eval_peak), eval_temporaries_gib=gib(evaluation.temp_bytes),
               eval_compile_s=round(evaluation.compile_seconds, 1))
    needed = max(needed, eval_peak)
  out["peak_gib"] = gib(needed)
  if peak is not None:
    out.update(chip=peak.chip.name, device_hbm_gib=gib(peak.hbm_bytes),
               fits=bool(needed <= peak.hbm_bytes),
               roofline_s=peak.roofline_seconds(train.flops, train.bytes_accessed),
               roofline_bound=("compute" if train.flops / peak.peak_flops
                               >= train.bytes_accessed / peak.hbm_bandwidth else "memory"))
  return out


def does_not_fit_advice(config, needed_gib: Optional[float], hbm_gib: Optional[float]) -> str:
  """What to change when a step needs more than the chip's HBM."""
  tries = []
  if config.knn_layers and config.memory_dtype == "float32":
    tries.append("memory_dtype='bfloat16' (halves the memory)")
  if config.compute_dtype == "float32":
    tries.append("compute_dtype='bfloat16'")
  if config.remat == "none":
    tries.append("remat='full' (recompute activations in the backward pass)")
  tries += ["a larger slice (more chips share the batch and the memory)",
            "a smaller data_config.DataConfig.batch_size"]
  needed = f"{needed_gib:.1f} GiB" if needed_gib is not None else "more memory than"
  device = f"a {hbm_gib:.1f} GiB device" if hbm_gib is not None else "the device has"
  return f"does not fit: {needed} needed on {device}; try " + "; ".join(tries)
