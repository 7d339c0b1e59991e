"""Where the training step's time goes: a jax.profiler trace of step_time.py's step, read back.

Builds one variant of benchmarks/step_time.py (the same model, step and steady state;
`xl` by default: XL cache, no memory), runs `--warmup` steps, traces `--steps` more with
`jax.profiler.trace`, and reads the trace's XLA op events (`*.trace.json.gz`: one event
per executed HLO instruction, its `hlo_op` name and thread) together with the compiled
step's optimised HLO (each instruction's shape, `op_name` and source line). An op's time
is its summed event time within one step (the median over the traced steps); its share
is that over the sum of all ops' times (CPU time: XLA's CPU runtime can run independent
ops on both cores at once, so the sum can exceed the wall-clock step).

Prints JSON lines:
  {"bench": "profile_step", "kind": "summary", "variant", "wall_step_s", "op_time_s", ...}
  {"bench": "profile_step", "kind": "op", "rank", "hlo_op", "ms", "share", "shape",
   "pass", "op_name", "source", "code", ...}               # the --top ops
  {"bench": "profile_step", "kind": "group", "group", "ms", "share", "ops"}
                                                    # by pass and module, layers merged
  {"bench": "profile_step", "kind": "candidate", "candidate", "ms", "share", "rule", "ops"}
                                                    # the issue's candidate speed-ups

`pass` is forward, backward (`transpose(jvp(...))`), or update (the optimizer,
outside the model's autodiff). The candidates group ops by rules stated in their lines
(source file, op_name, shapes), so what a number covers can be checked; a fused op can
count for two candidates. The profiler's own instrumentation slows the traced steps
(compare wall_step_s with step_time.py): read the shares, not the absolute times.

`--ab_steps N --xla_option KEY=VALUE` instead times the step compiled with and without
an XLA option, steps interleaved, e.g. YNNPACK library fusions for dots only:
    .venv/bin/python benchmarks/profile_step.py --ab_steps 6 \
        --xla_option xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT

    .venv/bin/python benchmarks/profile_step.py                  # xl, 3 traced steps
    .venv/bin/python benchmarks/profile_step.py --variant xl_mem8k --top 20
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import glob
import gzip
import json
import linecache
import os
import re
import statistics
import sys
import tempfile
from typing import Dict, List, Optional, Tuple, Union

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import step_time  # noqa: E402  (puts the repository on the path)
from memorizing_jax import host_memory  # noqa: E402

_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (.+?) ([a-z][\w\-]*)\(")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) \(.*\{\s*$")


@dataclasses.dataclass
class Instruction:
  name: str
  shape: str
  opcode: str
  op_name: str
  frame: int
  calls: Optional[str]
  computation: str


class Hlo:
  """The optimised HLO text: instructions, computations and the source of each."""

  def __init__(self, text: str):
    self.instructions: Dict[str, Instruction] = {}
    self.computations: Dict[str, List[str]] = collections.defaultdict(list)
    tables = self._tables(text)
    self.files = tables.get("FileNames", {})
    self.functions = tables.get("FunctionNames", {})
    self.locations = {k: dict(re.findall(r"(\w+)=(\d+)", v))
                      for k, v in tables.get("FileLocations", {}).items()}
    self.frames = {k: dict(re.findall(r"(\w+)=(\d+)", v))
                   for k, v in tables.get("StackFrames", {}).items()}
    computation = ""
    for line in text.splitlines():
      header = _COMPUTATION.match(line)
      if header and "=" not in line.split("(")[0]:
        computation = header.group(1)
        continue
      match = _INSTRUCTION.match(line)
      if not match:
        continue
      name, shape, opcode = match.groups()
      shape = re.sub(r"\{[^}]*\}", "", shape)  # layouts
      op_name = re.search(r'op_name="([^"]*)"', line)
      frame = re.search(r"stack_frame_id=(\d+)", line)
      calls = re.search(r"calls=%([\w.\-]+)", line)
      self.instructions[name] = Instruction(
          name, shape, opcode, op_name.group(1) if op_name else "",
          int(frame.group(1)) if frame else 0, calls.group(1) if calls else None, computation)
      self.computations[computation].append(name)

  @staticmethod
  def _tables(text: str) -> Dict[str, Dict[int, str]]:
    tables, current = {}, None
    for line in text.splitlines():
      if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
        current = tables.setdefault(line, {})
      elif current is not None and re.match(r"^\d+ ", line):
        key, value = line.split(" ", 1)
        current[int(key)] = value.strip().strip('"')
      elif line.strip() == "" or line.startswith("HloModule"):
        continue
      else:
        current = None
    return tables

  def stack(self, frame: int) -> List[tuple]:
    """(file, line, function) from the innermost frame outwards."""
    out, seen = [], set()
    while frame and frame not in seen and frame in self.frames:
      seen.add(frame)
      location = self.locations.get(int(self.frames[frame]["file_location_id"]), {})
      out.append((self.files.get(int(location.get("file_name_id", 0)), "?"),
                  int(location.get("line", 0)),
                  self.functions.get(int(location.get("function_name_id", 0)), "?")))
      # The text prints each frame's parent as its index + 1 (0: none).
      frame = int(self.frames[frame].get("parent_frame_id", 0)) - 1
    return out

  def inner(self, name: str) -> List[Instruction]:
    """The instruction and, for a fusion, every instruction it fuses (recursively)."""
    out, todo = [], [name]
    while todo:
      inst = self.instructions.get(todo.pop())
      if inst is None:
        continue
      out.append(inst)
      if inst.calls:
        todo.extend(self.computations.get(inst.calls, []))
    return out


def _pass(op_name: str) -> str:
  if "transpose(jvp(" in op_name:
    return "backward"
  if "jvp(" in op_name:
    return "forward"
  return "update"


def _module(op_name: str) -> str:
  """The model part an op_name names, layers merged: layer_N/attention, embed, ..."""
  body = re.sub(r"^jit\(step\)/", "", op_name)
  match = re.search(r"MemorizingTransformer\)+/(.*)", body)
  if not match:
    return "optimizer and loss" if body else "?"
  parts = re.sub(r"layer_\d+", "layer_N", match.group(1)).split("/")
  return "/".join(parts[:2]) if parts[0] == "layer_N" else parts[0]


def _source(hlo: Hlo, inst: Instruction) -> tuple:
  """The innermost frame in this project (or optax), with its line of code."""
  frames = hlo.stack(inst.frame)
  for file, line, function in frames:
    if "memorizing_jax" in file or "optax" in file:
      code = linecache.getline(file, line).strip()
      short = file.split("site-packages/")[-1].split("/work/main/")[-1]
      return f"{short}:{line} {function}", code
  return ("", "")


def _files(hlo: Hlo, name: str) -> set:
  return {file for inst in hlo.inner(name) for file, _, _ in hlo.stack(inst.frame)}


def _dims(shape: str) -> List[int]:
  match = re.search(r"\[([\d,]*)\]", shape)
  return [int(d) for d in match.group(1).split(",") if d] if match else []


def candidates(hlo: Hlo, config, batch: int) -> Dict[str, tuple]:
  """The issue's candidate speed-ups: (rule, predicate on an hlo_op name)."""
  length = config.segment_length
  keys = length * (2 if config.use_xl_cache else 1)
  window = [batch, config.num_heads, length, keys]

  def position_bias(name):
    inst = hlo.instructions[name]
    if any("position_bias.py" in f for f in _files(hlo, name)):
      return True
    # The bias is [1, heads, L, keys], broadcast over the batch: its gradient is a sum of
    # the score gradients over the batch.
    return (_pass(inst.op_name) == "backward" and _dims(inst.shape) == [1] + window[1:]
            and any(i.opcode == "reduce" for i in hlo.inner(name)))

  def mask(name):
    return any(i.opcode == "select" and _dims(i.shape) == window and "attention" in i.op_name
               for i in hlo.inner(name))

  def cross_entropy(name):
    inst = hlo.instructions[name]
    return (any("losses" in f for f in _files(hlo, name))
            or "embed.attend" in inst.op_name or "/logits/" in inst.op_name
            or (_pass(inst.op_name) != "update" and config.vocab_size in _dims(inst.shape)))

  def optimizer(name):
    inst = hlo.instructions[name]
    files = _files(hlo, name)
    return (_pass(inst.op_name) == "update" and any("optax" in f for f in files)
            and not any("losses" in f for f in files))

  return {
      "relative-position bias per layer": (
          "ops with an instruction from position_bias.py (buckets, table gather and its "
          "scatter-add gradient), and the backward's sum over the batch into the "
          f"[1, heads, {length}, {keys}] bias", position_bias),
      f"full [{length}, {keys}] mask applied to the scores": (
          f"ops that contain a select over the [{', '.join(map(str, window))}] scores "
          "(the whole fused op is counted: the select is fused into the softmax and its "
          "gradient)", mask),
      "cross-entropy over the vocabulary": (
          "the logits matmul and its two gradients (op_name embed.attend or logits), "
          "ops of the model's forward or backward whose result has a vocabulary-sized "
          "dimension (the logits' scaling and its transposed gradient) and the ops from "
          "optax.losses (log-softmax, its gradient)", cross_entropy),
      "optimizer update": ("ops outside the model's autodiff from optax (Adafactor, "
                           "factored second moments, clipping, apply_updates)", optimizer),
  }


def read_trace(logdir: str) -> tuple:
  """(op events of the jitted step, run_step windows) from the newest trace."""
  paths = sorted(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.trace.json.gz")))
  if not paths:
    raise SystemExit(f"no *.trace.json.gz under {logdir}")
  with gzip.open(paths[-1]) as f:
    events = json.load(f)["traceEvents"]
  ops, steps = [], []
  for e in events:
    if e.get("ph") != "X":
      continue
    args = e.get("args") or {}
    if args.get("hlo_module") == "jit_step" and args.get("hlo_op"):
      ops.append((args["hlo_op"], e["ts"], e["dur"]))
    elif e.get("name", "").endswith(" run_step"):
      steps.append((e["ts"], e["ts"] + e["dur"]))
  return ops, sorted(steps)


def xla_option(text: str) -> Tuple[str, Union[str, bool]]:
  """"KEY=VALUE" -> (KEY, VALUE); "true" and "false" become bools, which XLA's boolean
  options take (it refuses the strings)."""
  key, value = text.split("=", 1)
  return key, {"true": True, "false": False}.get(value.lower(), value)


def compile_step(variant, options: Dict[str, Union[str, bool]], *batch):
  """The variant's step compiled (with these XLA options), callable like the jitted one."""
  lowered = variant.step.lower(*variant.carry, *batch)
  return lowered.compile(compiler_options=options) if options else lowered.compile()


def compare_options(args, config, options: Dict[str, Union[str, bool]], tokens, targets,
                    sos) -> None:
  """Times the step compiled without and with `options`, steps interleaved."""
  runs = {}
  for name, opts in (("default", {}), ("with_options", options)):
    variant = step_time.build_variant(name, config, args.batch, tokens, targets, sos)
    variant.step = compile_step(variant, opts, tokens, targets, sos)
    runs[name] = variant
  for variant in runs.values():
    for _ in range(args.warmup):
      step_time.run_step(variant, tokens, targets, sos)
  for _ in range(args.ab_steps):
    for variant in runs.values():
      variant.times.append(step_time.run_step(variant, tokens, targets, sos))
  base, other = runs["default"], runs["with_options"]
  print(json.dumps({
      "bench": "profile_step", "kind": "ab", "variant": args.variant, "xla_options": options,
      "step_s_default": round(statistics.median(base.times), 3),
      "step_s_with_options": round(statistics.median(other.times), 3),
      "ratio": round(statistics.median(other.times) / statistics.median(base.times), 3),
      "ratio_of_best": round(min(other.times) / min(base.times), 3),
      "step_times_s_default": [round(t, 3) for t in base.times],
      "step_times_s_with_options": [round(t, 3) for t in other.times],
      "library_fusions": [v.step.as_text().count('"__ynn_fusion"') for v in runs.values()],
  }), flush=True)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--variant", default="xl", choices=list(step_time.VARIANTS))
  parser.add_argument("--lookup_method", default=None, help="override: exact or approx")
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps (compile included)")
  parser.add_argument("--steps", type=int, default=3, help="traced steps")
  parser.add_argument("--top", type=int, default=12)
  parser.add_argument("--logdir", default=None, help="keep the trace here (default: a temp dir)")
  parser.add_argument("--xla_option", action="append", default=[], metavar="KEY=VALUE",
                      help="an XLA compiler option for the step, e.g. xla_cpu_experimental_"
                           "ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT or xla_cpu_enable_fast_"
                           "min_max=true (repeatable)")
  parser.add_argument("--ab_steps", type=int, default=0,
                      help="instead of tracing: time this many steps compiled with and "
                           "without the --xla_option's, interleaved")
  args = parser.parse_args(argv)
  host_memory.reuse_freed_memory_on_cpu()  # as step_time.py does

  config = dataclasses.replace(step_time.CPU_CONFIG, **step_time.VARIANTS[args.variant])
  if args.lookup_method:
    config = dataclasses.replace(config, lookup_method=args.lookup_method)
  data = jax.random.randint(jax.random.PRNGKey(1), (args.batch, config.segment_length + 1), 0,
                            config.vocab_size)
  tokens, targets = data[:, :-1], data[:, 1:]
  sos = jnp.zeros((args.batch,), bool)
  options = dict(xla_option(option) for option in args.xla_option)
  if args.ab_steps:
    compare_options(args, config, options, tokens, targets, sos)
    return
  variant = step_time.build_variant(args.variant, config, args.batch, tokens, targets, sos)
  variant.step = compile_step(variant, options, tokens, targets, sos)
  hlo = Hlo(variant.step.as_text())
  for _ in range(args.warmup):
    step_time.run_step(variant, tokens, targets, sos)
  logdir = args.logdir or tempfile.mkdtemp(prefix="profile_step_")
  with jax.profiler.trace(logdir):
    for _ in range(args.steps):
      variant.times.append(step_time.run_step(variant, tokens, targets, sos))
  ops, windows = read_trace(logdir)

  # Per op, its summed time in each traced step; the op's figure is the median step.
  per_step = collections.defaultdict(lambda: [0.0] * len(windows))
  for name, ts, dur in ops:
    for i, (start, end) in enumerate(windows):
      if start <= ts <= end:
        per_step[name][i] += dur / 1e3
        break
  ms = {name: statistics.median(times) for name, times in per_step.items()}
  total = sum(ms.values())
  unknown = [n for n in ms if n not in hlo.instructions]
  print(json.dumps({
      "bench": "profile_step", "kind": "summary", "variant": args.variant,
      "lookup_method": config.lookup_method if config.knn_layers else None,
      "batch": args.batch, "segment_length": config.segment_length,
      "wall_step_s": round(statistics.median(variant.times), 3),
      "step_times_s": [round(t, 3) for t in variant.times],
      "op_time_s": round(total / 1e3, 3), "ops": len(ms), "traced_steps": len(windows),
      "ops_not_in_hlo": len(unknown), "logdir": logdir, "xla_options": options,
      "device": jax.devices()[0].device_kind, "jax": jax.__version__,
  }), flush=True)

  ranked = sorted((n for n in ms if n in hlo.instructions), key=ms.get, reverse=True)
  for rank, name in enumerate(ranked[:args.top], 1):
    inst = hlo.instructions[name]
    source, code = _source(hlo, inst)
    fused = sorted({i.opcode for i in hlo.inner(name)[1:]} - {"parameter", "constant",
                                                               "bitcast", "broadcast"})
    print(json.dumps({
        "bench": "profile_step", "kind": "op", "rank": rank, "hlo_op": name,
        "ms": round(ms[name], 1), "share": round(ms[name] / total, 3), "shape": inst.shape,
        "pass": _pass(inst.op_name), "op_name": re.sub(r"^jit\(step\)/", "", inst.op_name),
        "fused": fused, "source": source, "code": code,
    }), flush=True)

  groups = collections.defaultdict(list)
  for name in ranked:
    inst = hlo.instructions[name]
    groups[f"{_pass(inst.op_name)} {_module(inst.op_name)}"].append(name)
  for group, names in sorted(groups.items(), key=lambda g: -sum(ms[n] for n in g[1])):
    group_ms = sum(ms[n] for n in names)
    print(json.dumps({"bench": "profile_step", "kind": "group", "group": group,
                      "ms": round(group_ms, 1), "share": round(group_ms / total, 3),
                      "ops": len(names)}), flush=True)

  for candidate, (rule, predicate) in candidates(hlo, config, args.batch).items():
    names = [n for n in ranked if predicate(n)]
    cand_ms = sum(ms[n] for n in names)
    print(json.dumps({
        "bench": "profile_step", "kind": "candidate", "candidate": candidate,
        "ms": round(cand_ms, 1), "share": round(cand_ms / total, 3), "rule": rule,
        "ops": len(names), "largest": [[n, round(ms[n], 1)] for n in names[:5]],
    }), flush=True)


if __name__ == "__main__":
  main()
