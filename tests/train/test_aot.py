"""Compiling the training step for a real TPU topology on this CPU host (libtpu, no TPU).

Small configs here; the paper's configs are in benchmarks/tpu_compile.py. What a compiled
step costs (`StepCost`) is read the same way off a small program compiled for the CPU.
"""
import dataclasses

import jax
import jax.numpy as jnp
import pytest

from memorizing_jax.train import aot, chips, partitioner
from small_tpu_run import BATCH, MODEL, TOPOLOGY, build, needs_libtpu  # pylint: disable=g-bad-import-order


@pytest.fixture(scope="module")
def devices():
  needs_libtpu()
  return aot.topology_devices(TOPOLOGY)


@pytest.fixture(scope="module")
def compiled_steps(devices):
  run = build(devices)
  xl_run = build(devices, dataclasses.replace(MODEL, knn_layers=()))
  return (run, aot.compile_train_step(run), aot.compile_eval_step(run),
          aot.compile_train_step(xl_run))


def test_topology_devices(devices):
  assert len(devices) == 4 and devices[0].device_kind == "TPU v5 lite"
  v4 = aot.topology_devices("v4:2x2x1")  # megacore: one device per chip, as a v4 pod runs
  assert len(v4) == 4 and chips.device_peak(v4[0]).hbm_bytes == 32 * chips.GIB
  cores = aot.topology_devices("v4:2x2x1", megacore=False)  # libtpu's default listing
  assert len(cores) == 8 and chips.device_peak(cores[0]).hbm_bytes == 16 * chips.GIB
  with pytest.raises(ValueError, match="cannot build TPU topology 'v9:2x2'"):
    aot.topology_devices("v9:2x2")


def test_train_step_for_tpu_keeps_the_memory_on_its_chip(compiled_steps):
  run, train, _, xl = compiled_steps
  assert train.approx_top_k and not xl.approx_top_k  # the fused TPU top-k, not a sort
  # Each chip holds its 2 rows' memory: keys and values, bf16.
  memory_per_chip = 2 * (BATCH // 4) * MODEL.num_heads * MODEL.memory_slots * 128 * 2
  added = train.argument_bytes - xl.argument_bytes
  assert memory_per_chip <= added <= 1.01 * memory_per_chip
  assert aot.per_device_bytes(run.layout.abstract.model_state.memories) >= memory_per_chip
  # The memory's step moves no more between chips than the XL-only step does.
  assert train.collectives["total"] - xl.collectives["total"] < 0.01 * memory_per_chip * 4
  assert train.flops > xl.flops > 0 and train.bytes_accessed > xl.bytes_accessed
  assert train.cycles > xl.cycles > 0  # the TPU compiler's own estimate


def test_summary_fits_and_estimates(compiled_steps):
  run, train, evaluation, _ = compiled_steps
  peak = chips.device_peak(run.partitioner.mesh.devices.flat[0])
  report = aot.summary(run, train, evaluation, peak)
  assert report["fits"] and report["chip"] == "v5e" and report["device_hbm_gib"] == 16.0
  assert report["peak_gib"] == max(report["train_peak_gib"], report["eval_peak_gib"])
  assert report["roofline_s"] == max(train.flops / 197e12, train.bytes_accessed / 0.82e12)
  # During evaluation the training memory waits in host memory: the device holds the
  # params, the optimizer state and the evaluation's own state and temporaries.
  expected_eval = (train.argument_bytes
                   - aot.per_device_bytes(run.layout.abstract.model_state)
                   + evaluation.peak_bytes - aot.per_device_bytes(run.layout.abstract.params))
  assert aot.evaluation_peak_bytes(run, train, evaluation) == expected_eval


def test_a_step_too_big_for_the_chip_is_refused(devices):
  huge = dataclasses.replace(MODEL, memory_slots=1 << 22, memory_dtype="float32")
  with pytest.raises(aot.DoesNotFitError) as refused:
    aot.compile_train_step(build(devices, huge))
  assert refused.value.needed_bytes > refused.value.available_bytes > 15 * chips.GIB
  advice = aot.does_not_fit_advice(huge, 70.0, 16.0)
  assert advice.startswith("does not fit: 70.0 GiB needed on a 16.0 GiB device; try ")
  assert "memory_dtype='bfloat16'" in advice and "remat='full'" in advice


def test_a_memory_split_over_the_memory_axis_compiles_for_tpu(devices):
  """The memory's slots split over 4 chips (mesh data 1 x memory 4): each chip holds a
  quarter of every row's memory, and the chips exchange only the candidates' scores
  and slots and the summed output, far less than the memory."""
  split = partitioner.MeshConfig(data=1, model=1, memory=4)
  run = build(devices, MODEL, split)
  xl_run = build(devices, dataclasses.replace(MODEL, knn_layers=()), split)
  train, xl = aot.compile_train_step(run), aot.compile_train_step(xl_run)
  assert train.approx_top_k
  memory_per_chip = 2 * BATCH * MODEL.num_heads * (MODEL.memory_slots // 4) * 128 * 2
  added = train.argument_bytes - xl.argument_bytes
  assert memory_per_chip <= added <= 1.01 * memory_per_chip
  exchanged = train.collectives["total"] - xl.collectives["total"]
  assert 0 < exchanged < 0.1 * memory_per_chip * 4


def test_lower_train_step_takes_the_state_and_a_batch_and_donates_the_state(compiled_steps):
  run = compiled_steps[0]
  lowered = aot.lower_train_step(run)  # lowered once already for the fixture's costs
  (state, batch), kwargs = lowered.args_info
  assert kwargs == {}
  abstract = jax.tree.leaves(run.layout.abstract)
  assert [(a.shape, a.dtype) for a in jax.tree.leaves(state)] == [(a.shape, a.dtype)
                                                                   for a in abstract]
  assert all(a.donated for a in jax.tree.leaves(state))
  assert {k: (a.shape, a.dtype, a.donated) for k, a in batch.items()} == {
      "inputs": ((BATCH, 16), jnp.int32, False), "targets": ((BATCH, 16), jnp.int32, False),
      "loss_mask": ((BATCH, 16), jnp.float32, False),
      "start_of_sequence": ((BATCH,), jnp.bool_, False)}
  new_state, _ = lowered.out_info
  assert [a.shape for a in jax.tree.leaves(new_state)] == [a.shape for a in abstract]


def test_step_cost_of_a_program_compiled_for_the_cpu():
  """[16, 8] @ [8, 4] and [16, 8] + 1, the [16, 8] argument donated to the sum."""
  a = jax.ShapeDtypeStruct((16, 8), jnp.float32)
  b = jax.ShapeDtypeStruct((8, 4), jnp.float32)
  program = jax.jit(lambda a, b: (a @ b, a + 1.0), donate_argnums=0).lower(a, b).compile()
  cost = aot.StepCost.of(program, seconds=1.5)
  assert cost.argument_bytes == (16 * 8 + 8 * 4) * 4
  assert cost.output_bytes >= (16 * 4 + 16 * 8) * 4
  assert cost.alias_bytes == 16 * 8 * 4  # the sum is written over the donated argument
  assert cost.flops == 2 * 16 * 8 * 4 + 16 * 8
  assert cost.bytes_accessed > 0 and cost.compile_seconds == 1.5
  assert cost.collectives == {"total": 0} and not cost.approx_top_k
  assert cost.cycles == 0  # only the TPU compiler writes cycle estimates
  # Peak: arguments, temporaries, and the outputs that do not reuse an argument.
  cost = dataclasses.replace(cost, argument_bytes=100, output_bytes=40, alias_bytes=30,
                             temp_bytes=7)
  assert cost.peak_bytes == 100 + 40 - 30 + 7
