"""What a compiled step costs on each device: memory, collectives, FLOPs and bytes.

Read off a `jax.stages.Compiled` (for this host's devices, or for a TPU topology
compiled on a CPU host, see `memorizing_jax/compile.py`):

  * `memory_analysis()`: per-device bytes of arguments, outputs, temporaries and
    the outputs aliased to (donated) arguments;
  * `cost_analysis()`: FLOPs and bytes accessed;
  * the optimised per-device HLO: every collective (all-gather, all-reduce,
    reduce-scatter, all-to-all, collective-permute, ...) with its size, counted as
    many times as the loops around it run (`known_trip_count`).

A collective's size is the larger of what it receives and what it sends, per
device (an all-gather of a [2048, 65536, 128] array is that array's bytes).
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Dict, List, Optional, Tuple

COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "ragged-all-to-all",
               "collective-permute", "collective-broadcast")

DTYPE_BYTES = {"pred": 1, "s2": 0.25, "u2": 0.25, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1,
               "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8,
               "u64": 8, "f64": 8, "c64": 8, "c128": 16, "token": 0}

_ARRAY = re.compile(r"\b([a-z]+[0-9]*(?:e[0-9]m[0-9]\w*)?)\[([0-9,]*)\]")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%([\w.\-]+) .*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (.*?) ([a-z][\w\-]*)\((.*)$")
_CALLEES = re.compile(
    r"\b(?:calls|to_apply|body|true_computation|false_computation)=%([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_TRIP_COUNT = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_CYCLES = re.compile(r'"estimated_cycles":"(\d+)"')
UNKNOWN_CYCLES = (1 << 63) - 1


def shape_bytes(shape: str) -> int:
  """Bytes of an HLO shape: `f32[16,32]{1,0}` or a tuple `(f32[2], s32[])`."""
  total = 0.0
  for dtype, dims in _ARRAY.findall(shape):
    if dtype.startswith("f8") or dtype.startswith("f4"):
      size = 1 if dtype.startswith("f8") else 0.5
    else:
      size = DTYPE_BYTES.get(dtype)
      if size is None:
        continue
    total += size * math.prod(int(d) for d in dims.split(",") if d)
  return int(math.ceil(total))


@dataclasses.dataclass(frozen=True)
class Collective:
  """One collective of a compiled program.

  Attributes:
    kind: "all-gather", "all-reduce", ... (async `-start` forms folded in).
    bytes: per-device bytes of one execution.
    executions: how often it runs per step (the trip counts of its loops).
    op_name: the JAX operation it came from (HLO metadata), "" if none.
  """

  kind: str
  bytes: int
  executions: int
  op_name: str

  @property
  def total_bytes(self) -> int:
    return self.bytes * self.executions


def _split_computations(hlo_text: str) -> Tuple[Dict[str, List[str]], Optional[str]]:
  computations, entry, current = {}, None, None
  for line in hlo_text.splitlines():
    match = _COMPUTATION.match(line)
    if match:
      current = match.group(1)
      computations[current] = []
      if line.startswith("ENTRY"):
        entry = current
    elif line.strip() == "}":
      current = None
    elif current is not None:
      computations[current].append(line)
  return computations, entry


def _executions(computations: Dict[str, List[str]], entry: str) -> Dict[str, int]:
  """How many times each computation runs per execution of the entry computation."""
  calls: Dict[str, List[Tuple[str, int]]] = {name: [] for name in computations}
  for name, lines in computations.items():
    for line in lines:
      trip = _TRIP_COUNT.search(line)
      body = re.search(r"\bbody=%([\w.\-]+)", line)
      for callee in _CALLEES.findall(line):
        factor = int(trip.group(1)) if (trip and body and callee == body.group(1)) else 1
        calls[name].append((callee, factor))
      for group in _BRANCHES.findall(line):
        calls[name].extend((b.strip().lstrip("%"), 1) for b in group.split(",") if b.strip())
  counts: Dict[str, int] = {}

  def visit(name: str, times: int):
    counts[name] = counts.get(name, 0) + times
    for callee, factor in calls.get(name, ()):
      visit(callee, times * factor)

  visit(entry, 1)
  return counts


def collectives(hlo_text: str) -> List[Collective]:
  """Every collective in an optimised HLO module's text, with its per-device size."""
  computations, entry = _split_computations(hlo_text)
  if entry is None:
    raise ValueError("no ENTRY computation in the HLO text: pass compiled.as_text()")
  shapes = {}
  for lines in computations.values():
    for line in lines:
      match = _INSTRUCTION.match(line)
      if match:
        shapes[match.group(1)] = match.group(2)
  executions = _executions(computations, entry)
  found = []
  for name, lines in computations.items():
    times = executions.get(name, 0)
    if not times:
      continue
    for line in lines:
      match = _INSTRUCTION.match(line)
      if not match:
        continue
      _, shape, opcode, rest = match.groups()
      kind = opcode[:-len("-start")] if opcode.endswith("-start") else opcode
      if kind not in COLLECTIVES:
        continue
      operand_text = rest.split(")", 1)[0]
      sent = sum(shape_bytes(shapes.get(o, "")) for o in re.findall(r"%([\w.\-]+)", operand_text))
      received = shape_bytes(shape)
      if opcode.endswith("-start") and kind != "all-reduce":
        received -= sent  # the async form's output tuple also holds its operands
      op_name = _OP_NAME.search(line)
      found.append(Collective(kind=kind, bytes=max(sent, received), executions=times,
                              op_name=op_name.group(1) if op_name else ""))
  return found


def estimated_cycles(hlo_text: str) -> Optional[int]:
  """The TPU compiler's own estimate of a step's cycles on one core, if it has one.

  The sum of the `estimated_cycles` the TPU backend writes into the optimised HLO
  of every op it scheduled, times how often the op runs: a second compiled
  estimate beside the roofline, which counts bytes the same whether the memory
  system serves them well or not. 0 for a program compiled for another backend;
  None when an op's estimate is unknown (the compiler writes INT64_MAX for it).
  """
  computations, entry = _split_computations(hlo_text)
  if entry is None:
    return 0
  executions = _executions(computations, entry)
  total = 0
  for name, lines in computations.items():
    times = executions.get(name, 0)
    for line in lines:
      match = _CYCLES.search(line) if times else None
      if match:
        if int(match.group(1)) >= UNKNOWN_CYCLES:
          return None
        total += int(match.group(1)) * times
  return total


def collective_bytes(hlo_text: str) -> Dict[str, int]:
  """{kind: per-device bytes per step} over the kinds present, plus "total"."""
  totals: Dict[str, int] = {}
  for c in collectives(hlo_text):
    totals[c.kind] = totals.get(c.kind, 0) + c.total_bytes
  totals["total"] = sum(totals.values())
  return totals


def flops_per_device(compiled) -> float:
  """FLOPs of one execution of a compiled program on one device (0 when unknown)."""
  cost = compiled.cost_analysis()
  cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}
  return float(cost.get("flops", 0.0))


def has_approx_top_k(hlo_text: str) -> bool:
  """Whether the program runs TPU's approximate top-k (lowered as `ApproxTopK`,
  compiled into a `PartialReduce` custom call fused with the score matmul)."""
  return "ApproxTopK" in hlo_text or 'custom_call_target="PartialReduce"' in hlo_text
