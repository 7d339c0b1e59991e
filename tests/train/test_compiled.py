"""Reading a compiled program: collectives (hand-written HLO), FLOPs, chip figures."""
import jax
import jax.numpy as jnp
import pytest

from memorizing_jax.train import chips, compiled

HLO = """HloModule hand_written

%add (x: f32[], y: f32[]) -> f32[] {
  %x = f32[] parameter(0)
  %y = f32[] parameter(1)
  ROOT %sum = f32[] add(%x, %y)
}

%body (p: (s32[], f32[8])) -> (s32[], f32[8]) {
  %p = (s32[], f32[8]{0}) parameter(0)
  %i = s32[] get-tuple-element(%p), index=0
  %v = f32[8]{0} get-tuple-element(%p), index=1
  %moved = f32[8]{0} collective-permute(%v), channel_id=9, source_target_pairs={{0,1},{1,0}}, metadata={op_name="jit(f)/while/body/ppermute"}, backend_config={"estimated_cycles":"7"}
  ROOT %next = (s32[], f32[8]{0}) tuple(%i, %moved)
}

%cond (p.1: (s32[], f32[8])) -> pred[] {
  %p.1 = (s32[], f32[8]{0}) parameter(0)
  ROOT %true = pred[] constant(true)
}

ENTRY %main (a: f32[4,16], b: bf16[2], init: (s32[], f32[8])) -> f32[16,16] {
  %a = f32[4,16]{1,0} parameter(0)
  %b = bf16[2]{0} parameter(1)
  %init = (s32[], f32[8]{0}) parameter(2)
  %gathered = f32[16,16]{1,0} all-gather(%a), channel_id=1, dimensions={0}, backend_config={"flag_configs":[],"estimated_cycles":"100"}
  %reduced = (f32[16,16]{1,0}, bf16[2]{0}) all-reduce(%gathered, %b), channel_id=2, to_apply=%add
  %scattered = f32[4,16]{1,0} reduce-scatter(%gathered), channel_id=3, dimensions={0}, to_apply=%add
  %started = (f32[4,16]{1,0}, f32[16,16]{1,0}) all-gather-start(%a), channel_id=4, dimensions={0}
  %done = f32[16,16]{1,0} all-gather-done(%started)
  %loop = (s32[], f32[8]{0}) while(%init), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"5"}}
  ROOT %out = f32[16,16]{1,0} get-tuple-element(%reduced), index=0
}
"""


def test_collectives_of_hand_written_hlo():
  found = {(c.kind, c.bytes, c.executions) for c in compiled.collectives(HLO)}
  assert found == {
      ("all-gather", 16 * 16 * 4, 1),  # receives the whole [16, 16]
      ("all-reduce", 16 * 16 * 4 + 2 * 2, 1),  # both operands of the combined reduce
      ("reduce-scatter", 16 * 16 * 4, 1),  # sends the whole [16, 16]
      ("all-gather", 16 * 16 * 4, 1),  # the async form: its output less its operand
      ("collective-permute", 8 * 4, 5),  # in a loop that runs 5 times
  }
  totals = compiled.collective_bytes(HLO)
  assert totals["collective-permute"] == 160
  assert totals["total"] == 1024 + 1028 + 1024 + 1024 + 160
  loop = [c for c in compiled.collectives(HLO) if c.kind == "collective-permute"][0]
  assert loop.op_name == "jit(f)/while/body/ppermute"
  assert loop == compiled.Collective("collective-permute", 32, 5, "jit(f)/while/body/ppermute")
  assert loop.total_bytes == 5 * 32  # each of the loop's executions moves its bytes


def test_estimated_cycles_count_each_execution():
  assert compiled.estimated_cycles(HLO) == 100 + 5 * 7  # the loop body runs 5 times
  assert compiled.estimated_cycles("HloModule empty") == 0
  unknown = HLO.replace('"estimated_cycles":"7"', f'"estimated_cycles":"{2**63 - 1}"')
  assert compiled.estimated_cycles(unknown) is None  # an op the compiler could not estimate


def test_shape_bytes():
  assert compiled.shape_bytes("bf16[2048,65536,128]{2,1,0}") == 2048 * 65536 * 128 * 2
  assert compiled.shape_bytes("(f32[3]{0}, s32[], pred[5])") == 12 + 4 + 5
  assert compiled.shape_bytes("f8e4m3fn[10]") == 10
  with pytest.raises(ValueError, match="no ENTRY computation"):
    compiled.collectives("HloModule empty")


def test_flops_per_device_of_a_matmul():
  a = jax.ShapeDtypeStruct((64, 32), jnp.float32)
  b = jax.ShapeDtypeStruct((32, 16), jnp.float32)
  program = jax.jit(jnp.matmul).lower(a, b).compile()
  assert compiled.flops_per_device(program) == 2 * 64 * 32 * 16
  assert not compiled.has_approx_top_k(program.as_text())


def test_chip_table():
  assert chips.chip_of("TPU v5 lite").name == "v5e"
  assert chips.chip_of("NVIDIA H200").name == "H200"
  assert chips.chip_of("cpu") is None
  v4 = chips.CHIPS["TPU v4"]
  # A megacore device is the whole chip; one TensorCore of it, half.
  assert chips.DevicePeak(v4, chips.device_share(v4, 2)).hbm_bytes == 32 * chips.GIB
  assert chips.device_share(v4, 1) == 0.5
  peak = chips.DevicePeak(v4, 1.0)
  assert peak.roofline_seconds(275e12, 0.0) == pytest.approx(1.0)
  assert peak.roofline_seconds(0.0, 2.4e12) == pytest.approx(2.0)
