"""Training-step time of the PyTorch peer, at step_time.py's shape, variants side by side.

The peer is `memorizing-transformers-pytorch==0.4.1` (lucidrains), run in its own venv
(`make bench-peer` builds `.venv-peer/`); nothing in the package or the tests imports
this file. It times a full training step (forward, backward, `torch.optim.Adafactor`
update, eager mode) of the peer configured as close to `benchmarks/step_time.py`'s CPU
model as it allows, and prints one JSON object per variant that joins with
step_time.py's lines on ("bench", "variant"):

  {"bench": "step_time", "impl": "pytorch_peer", "variant", "tokens_per_s", "step_s",
   "ratio_to_xl", "ratio_to_xl_of_best", "ratio_to_xl_paired", "ratio_to_xl_paired_ci95",
   "memory_slots",
   "lookup_method", "batch", "segment_length", "layers", "d_model", "step_times_s",
   "index_entries_searched", ...}

Variants: `xl` (XL memory of one segment in every layer, no kNN layer), `xl_mem8k` and
`xl_mem65k` (plus one kNN layer with `max_knn_memories` 8192 / 65536), and `none` (no XL
memory, no kNN layer) on request. Steps of the variants are interleaved round-robin, as
in step_time.py, so the shared machine's load spreads evenly over them.

With `--lockstep PYTHON` (what `make bench-peer` runs) it also times ours in the same
run: a child process under PYTHON (the project's venv) builds step_time.py's variants
with step_time.py's own code (`build_variant`, `run_step`: the same model, step and
full memories), once per `--lookup_methods`, and runs one step of each whenever told;
the two processes take turns, one round of steps each (alternating who goes first), so
neither runs while the other does and the machine's changing load falls on both
alike. Ours then print step_time.py's lines with "impl": "memorizing_jax", and one
{"bench": "peer_side_by_side", "variant", "peer_tokens_per_s", "ours_<method>_tokens_per_s",
"speedup_<method>", "speedup_<method>_of_best", "speedup_<method>_paired",
"speedup_<method>_paired_ci95"} line per variant, speedup being the peer's step time
over ours (medians; `_of_best`: fastest steps; `_paired`: the median over rounds of the
two steps of one round, `_paired_ci95` a 95% interval for it; see step_ratios.py).

The same shape: 4 layers, d_model 512, 8 query heads x 64, MLP 2048 (`ff_mult=4`, GELU),
vocab 8192, segments of 512, batch 4, k = 32 retrieved memories
(`num_retrieved_memories=32`), XL memory of one segment (`xl_max_memories=512`), the kNN
layer at the second to last layer (`memorizing_layers=(3,)`: the peer numbers layers from
1 and silently drops numbers outside 1..depth, so `(-2,)` would give no kNN layer at
all), `max_knn_memories` = our `memory_slots`.

Differences that remain (the peer offers no switch for them):
- Multi-query attention: each layer projects one key/value head of 64 (`to_kv`,
  512 -> 128) shared by the 8 query heads; ours has 8 key/value heads. So the peer's
  memory holds M keys per batch row, one faiss index per row, searched by all 8 heads'
  queries, where ours holds M keys per (row, head): the same number of tokens, 1/8 of
  the keys and values. Its parameters: 19.2M, ours 16.8M (untied output layer with
  bias, LayerNorm with biases, biases on the MLP and attention output, its own
  relative-position tables for the kNN layer).
- Retrieval is faiss `IndexHNSWFlat` (M=15, inner product, faiss's default efSearch
  16, below k = 32) on the host: approximate, with a recall@32 of 0.39 at 8K entries
  and 0.15 at 65K on random unit keys (`--check_quirks`), where ours is an exact top-k
  (recall 1) or a binned approximate one (0.97) inside the compiled step. The retrieved
  keys and values are read back from a `numpy.memmap` file (in a temporary directory
  here) that is flushed after every write.
- The kNN layer has one joint softmax over [32 retrieved; local window], no learned
  gate, with the relative-position bias on the local part; ours mixes the two
  softmaxes with a learned per-head gate. Only the kNN layer L2-normalises queries and
  keys (ours normalises in every layer).
- It writes the segment leaving the XL memory (the previous one) at the end of the kNN
  layer; ours writes the current segment after its lookup. Both add 512 tokens per
  row per step.
- The memory is a sawtooth, not a FIFO: see the quirks below. Before every timed step
  (untimed) each row's faiss index is restored to its fullest state that the next add
  does not reset, holding exactly `max_knn_memories` entries, so every timed step
  searches a full index of M entries and adds 512, as our FIFO does in steady state
  (`--free_running` instead lets the timed steps walk down the sawtooth from there).
  That state is reached by the peer's own `KNNMemory.add` with random unit keys (2 M /
  512 adds per row; a reset falls in between), as step_time.py fills ours with random
  unit keys.
- torch.optim.Adafactor (lr 1e-3, factored second moments, no momentum) against
  optax.adafactor (lr 1e-3, also scales updates by the parameter's RMS).
- Eager PyTorch (the faiss calls inside the forward break any torch.compile graph);
  `knn_memory_multiprocessing=False` (the peer's default: joblib runs the per-row faiss
  calls one after another, each multi-threaded by faiss's OpenMP).

Quirks of the peer that shape the figures (file:line in the installed 0.4.1 package):
- A sawtooth, not a FIFO. `KNN.add` resets the whole faiss index once its id list would
  exceed `max_num_entries` (knn_memory.py:100-101), and that reset also empties the id
  list after the new ids went in (knn_memory.py:93, 75), so from the first reset on the
  index grows to M + 512 entries before the next one: each row's memory swings between
  512 and M + 512 entries with a period of M / 512 + 1 segments (17 for 8K, 129 for
  65K), holding M / 2 on average instead of the last M tokens.
- The reset also marks the index untrained (knn_memory.py:83) and nothing retrains it
  until the next add (knn_memory.py:90-91), so the search right after a reset returns
  no entry at all (knn_memory.py:114-115): one step per period runs without memory.
- faiss numbers entries 0..ntotal-1 from the last reset, while the memmap rows go on
  from `db_offsets`, which only `clear()` rewinds (knn_memory.py:210-214); a search reads
  row `faiss_id % M` (knn_memory.py:252). That holds through the first reset, until the
  index passes M entries and its newest segment overwrites the rows of its oldest; from
  the second reset on, the rows are one segment off per period, so the retrieved keys
  and values belong to other tokens than the ones faiss found (aligned again for one
  period in M / 512).
  `--check_quirks` shows the three on the peer's own `KNNMemory`, add by add.
- `MemorizingTransformer.clear_memory` (memorizing_transformers_pytorch.py:429-440)
  compares the embedded inputs (line 451 then 460-461), not the token ids, with the token
  id, and names an undefined `knn_memories`: start-of-document resets do not work, so,
  as in step_time.py, every row continues its document.

    make bench-peer            # builds .venv-peer, then the peer and ours in lockstep
    .venv-peer/bin/python benchmarks/peer_pytorch.py       # the peer alone
    .venv-peer/bin/python benchmarks/peer_pytorch.py --lockstep .venv/bin/python
    .venv-peer/bin/python benchmarks/peer_pytorch.py --check_quirks
    python3 benchmarks/peer_pytorch.py --device cuda --lockstep python3  # one Python with both
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, List, Optional

import numpy as np

from step_ratios import ratio_fields  # this directory: the script's own

try:
  import faiss
  import torch
  from memorizing_transformers_pytorch import MemorizingTransformer
  from memorizing_transformers_pytorch.knn_memory import KNN, KNNMemory
except ModuleNotFoundError:  # the project's venv, running this file as --jax_worker
  if "--jax_worker" not in sys.argv:
    raise

# step_time.py's CPU_CONFIG in the peer's terms.
SHAPE = dict(num_tokens=8192, depth=4, dim=512, heads=8, dim_head=64, ff_mult=4,
             num_retrieved_memories=32)
SEGMENT = 512
KNN_LAYER = 3  # 1-based: the second to last of 4, our knn_layers=(-2,)
VARIANTS = {
    "none": dict(xl_max_memories=0, memorizing_layers=()),
    "xl": dict(xl_max_memories=SEGMENT, memorizing_layers=()),
    "xl_mem8k": dict(xl_max_memories=SEGMENT, memorizing_layers=(KNN_LAYER,),
                     max_knn_memories=8192),
    "xl_mem65k": dict(xl_max_memories=SEGMENT, memorizing_layers=(KNN_LAYER,),
                      max_knn_memories=65536),
}


def unit_rows(rng: np.random.Generator, *shape: int) -> np.ndarray:
  """Random float32 vectors of unit norm along the last axis."""
  x = rng.standard_normal(shape, dtype=np.float32)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def fill_memory(memory: KNNMemory, batch: int, rng: np.random.Generator) -> None:
  """Adds segments until every row's index holds max_memories entries and the next
  segment's add does not reset it (the top of the peer's steady-state sawtooth)."""
  slots = memory.max_memories
  while True:
    knn = memory.knns[0]
    if knn.index.ntotal == slots and len(knn.ids) + SEGMENT <= slots:
      return
    kv = rng.standard_normal((batch, SEGMENT, 2, memory.dim), dtype=np.float32)
    kv[..., 0, :] = unit_rows(rng, batch, SEGMENT, memory.dim)
    memory.add(torch.from_numpy(kv))


@dataclasses.dataclass
class MemorySnapshot:
  """Each row's faiss index (serialised) and id list, and the memmap write offsets."""
  indices: List[Any]
  ids: List[np.ndarray]
  db_offsets: np.ndarray

  @classmethod
  def take(cls, memory: KNNMemory) -> "MemorySnapshot":
    return cls([faiss.serialize_index(k.index) for k in memory.knns],
               [k.ids.copy() for k in memory.knns], memory.db_offsets.copy())

  def restore(self, memory: KNNMemory) -> None:
    for knn, blob, ids in zip(memory.knns, self.indices, self.ids):
      knn.index = faiss.deserialize_index(blob)
      knn.ids = ids.copy()
      knn.is_trained = True
    memory.db_offsets[:] = self.db_offsets


@dataclasses.dataclass
class Variant:
  name: str
  model: MemorizingTransformer
  optimizer: torch.optim.Optimizer
  memories: Any  # KNNMemoryList (empty without a kNN layer)
  slots: int
  snapshots: List[MemorySnapshot]
  xl: Optional[list] = None
  times: List[float] = dataclasses.field(default_factory=list)
  searched: List[int] = dataclasses.field(default_factory=list)


def build_variant(name: str, batch: int, memory_dir: str, rng: np.random.Generator,
                  device: "torch.device") -> Variant:
  torch.manual_seed(0)
  options = dict(VARIANTS[name])
  slots = options.pop("max_knn_memories", 0)
  model = MemorizingTransformer(**SHAPE, **options, max_knn_memories=max(slots, 1),
                                knn_memories_directory=f"{memory_dir}/{name}").to(device)
  optimizer = torch.optim.Adafactor(model.parameters(), lr=1e-3)
  memories = model.create_knn_memories(batch_size=batch)
  for memory in memories:
    fill_memory(memory, batch, rng)
  return Variant(name, model, optimizer, memories, slots,
                 [MemorySnapshot.take(m) for m in memories])


def run_step(variant: Variant, tokens: torch.Tensor, labels: torch.Tensor,
             restore: bool) -> float:
  """One training step; the memories are first restored to the full state (untimed)."""
  if restore:
    for memory, snapshot in zip(variant.memories, variant.snapshots):
      snapshot.restore(memory)
  searched = variant.memories[0].knns[0].index.ntotal if variant.memories else 0
  start = time.perf_counter()
  out = variant.model(tokens, knn_memories=variant.memories, xl_memories=variant.xl,
                      labels=labels)
  loss, variant.xl = out if isinstance(out, tuple) else (out, None)
  loss.backward()
  variant.optimizer.step()
  variant.optimizer.zero_grad(set_to_none=True)
  if tokens.device.type == "cuda":  # the step's kernels run asynchronously
    torch.cuda.synchronize(tokens.device)
  elapsed = time.perf_counter() - start
  variant.searched.append(searched)
  return elapsed


class JaxWorker:
  """The JAX side of --lockstep: step_time.py's variants in the project's venv, in a
  child process that steps only when told, so that the two never run at once and the
  machine's changing load falls on both alike."""

  def __init__(self, python: str, args):
    command = [python, os.path.abspath(__file__), "--jax_worker", "--variants", args.variants,
               "--lookup_methods", args.lookup_methods, "--batch", str(args.batch),
               "--warmup", str(args.warmup)]
    self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    text=True, cwd=os.path.dirname(os.path.dirname(
                                        os.path.abspath(__file__))))
    self.read()  # ready: compiled and warmed up

  def read(self) -> dict:
    for line in self.process.stdout:
      if line.startswith("{"):
        return json.loads(line)
    raise RuntimeError(f"the JAX worker exited with {self.process.wait()}: see its stderr")

  def step(self) -> None:
    self.process.stdin.write("step\n")
    self.process.stdin.flush()
    self.read()

  def finish(self) -> List[dict]:
    self.process.stdin.write("done\n")
    self.process.stdin.flush()
    lines = [json.loads(line) for line in self.process.stdout if line.startswith("{")]
    if self.process.wait() != 0:
      raise RuntimeError(f"the JAX worker failed ({self.process.returncode}): see its stderr")
    return lines


def jax_worker(args) -> None:
  """Runs in the project's venv: one step of every (variant, lookup method) per "step"
  line on stdin, then step_time.py's JSON lines (with "impl": "memorizing_jax")."""
  import jax
  import jax.numpy as jnp
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import step_time
  from memorizing_jax import host_memory
  host_memory.reuse_freed_memory_on_cpu()  # as step_time.py does

  protocol, sys.stdout = sys.stdout, sys.stderr  # only protocol lines on the pipe
  base = step_time.CPU_CONFIG
  data = jax.random.randint(jax.random.PRNGKey(1), (args.batch, base.segment_length + 1), 0,
                            base.vocab_size)
  tokens, targets = data[:, :-1], data[:, 1:]
  sos = jnp.zeros((args.batch,), bool)
  variants = []
  for name in _names(args.variants):
    memory = dict(step_time.VARIANTS[name]).get("knn_layers", base.knn_layers)
    for method in (args.lookup_methods.split(",") if memory else [base.lookup_method]):
      config = dataclasses.replace(base, lookup_method=method, **step_time.VARIANTS[name])
      variants.append(step_time.build_variant(name, config, args.batch, tokens, targets, sos))
  for v in variants:
    for _ in range(args.warmup):
      step_time.run_step(v, tokens, targets, sos)

  def send(obj) -> None:
    protocol.write(json.dumps(obj) + "\n")
    protocol.flush()

  send({"ready": len(variants)})
  for line in sys.stdin:
    if line.strip() != "step":
      break
    for v in variants:
      v.times.append(step_time.run_step(v, tokens, targets, sos))
    send({"step": [round(v.times[-1], 4) for v in variants]})
  xl = next(v for v in variants if v.name == "xl")
  for v in variants:
    step_s = statistics.median(v.times)
    send({"bench": "step_time", "impl": "memorizing_jax", "variant": v.name,
          "tokens_per_s": round(args.batch * v.config.segment_length / step_s, 1),
          "step_s": round(step_s, 4), **ratio_fields("ratio_to_xl", v.times, xl.times),
          "memory_slots": v.config.memory_slots if v.config.knn_layers else 0,
          "lookup_method": v.config.lookup_method if v.config.knn_layers else "exact",
          "batch": args.batch, "segment_length": v.config.segment_length,
          "layers": v.config.num_layers, "d_model": v.config.d_model,
          "step_times_s": [round(t, 4) for t in v.times],
          "device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
          "jax": jax.__version__})


def _names(variants: str) -> List[str]:
  names = variants.split(",")
  return names if "xl" in names else ["xl"] + names  # xl: the ratios' reference


def side_by_side(peer: List[dict], ours: List[dict]) -> List[dict]:
  """Per variant: tokens/s of the peer and of ours (each lookup method), and ours over
  the peer's: the peer's step time over ours, of the median steps, of the fastest and
  paired by round (`step_ratios.ratios`: round i ran step i of both)."""
  lines = []
  for p in peer:
    line = {"bench": "peer_side_by_side", "variant": p["variant"],
            "peer_tokens_per_s": p["tokens_per_s"]}
    for o in ours:
      if o["variant"] == p["variant"]:
        tag = f"_{o['lookup_method']}" if o["memory_slots"] else ""
        line[f"ours{tag}_tokens_per_s"] = o["tokens_per_s"]
        line.update(ratio_fields(f"speedup{tag}", p["step_times_s"], o["step_times_s"]))
    lines.append(line)
  return lines


def benchmark(args) -> None:
  names = _names(args.variants)
  rng = np.random.default_rng(0)
  device = torch.device(args.device)
  data = torch.from_numpy(rng.integers(0, SHAPE["num_tokens"], (args.batch, SEGMENT + 1)))
  tokens, labels = data[:, :-1].to(device), data[:, 1:].to(device)
  memory_dir = tempfile.mkdtemp(prefix="peer_knn_")
  worker = None
  try:
    start = time.perf_counter()
    variants = [build_variant(n, args.batch, memory_dir, rng, device) for n in names]
    fill_s = time.perf_counter() - start
    restore = not args.free_running
    for v in variants:  # the first carries no XL memory in: nothing is written to the kNN memory
      for _ in range(args.warmup):
        run_step(v, tokens, labels, restore)
      v.searched.clear()
    if args.lockstep:
      worker = JaxWorker(args.lockstep, args)
    for round_ in range(args.repeats):
      if worker and round_ % 2 == 0:  # alternate which side goes first
        worker.step()
      for v in variants:
        v.times.append(run_step(v, tokens, labels, restore))
      if worker and round_ % 2 == 1:
        worker.step()
    ours = worker.finish() if worker else []
    worker = None
    xl = next(v for v in variants if v.name == "xl")
    peer = []
    for v in variants:
      step_s = statistics.median(v.times)
      peer.append({
          "bench": "step_time", "impl": "pytorch_peer", "variant": v.name,
          "tokens_per_s": round(args.batch * SEGMENT / step_s, 1),
          "step_s": round(step_s, 4), **ratio_fields("ratio_to_xl", v.times, xl.times),
          "memory_slots": v.slots,
          "lookup_method": "faiss_hnsw" if v.slots else "exact",
          "memory_phase": ("free_running" if args.free_running else "full") if v.slots else None,
          "index_entries_searched": sorted(set(v.searched)) if v.slots else [],
          "batch": args.batch, "segment_length": SEGMENT, "layers": SHAPE["depth"],
          "d_model": SHAPE["dim"], "params": sum(p.numel() for p in v.model.parameters()),
          "step_times_s": [round(t, 4) for t in v.times], "fill_s_all_variants": round(fill_s, 1),
          "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                     else platform.processor() or platform.machine()),
          "backend": f"torch-{device.type}-eager",
          "torch": torch.__version__, "faiss": faiss.__version__,
          "torch_threads": torch.get_num_threads(), "faiss_threads": faiss.omp_get_max_threads(),
          "lockstep": bool(args.lockstep),
      })
    for line in peer + ours + (side_by_side(peer, ours) if ours else []):
      print(json.dumps(line), flush=True)
  finally:
    if worker:
      worker.process.kill()
    shutil.rmtree(memory_dir, ignore_errors=True)


def check_quirks(slots: int, cycles: int, probes: int = 64) -> None:
  """The peer's memory alone (one row), segment by segment: the index size after each
  add, and, for probes of the newest and of the oldest segment in the index, the share
  of searches that return anything and the share whose top entry, read from the memmap,
  is the probe's own key (its value carries its segment's number)."""
  rng = np.random.default_rng(0)
  directory = tempfile.mkdtemp(prefix="peer_quirks_")
  try:
    memory = KNNMemory(dim=64, max_memories=slots, num_indices=1,
                       memmap_filename=f"{directory}/memory.memmap", multiprocessing=False)
    written = []  # keys of every segment, in order
    report = {"index_entries": [], "found_anything": [], "newest_own_row": [],
              "oldest_own_row": [], "oldest_value_from_its_segment": []}
    for segment in range(cycles * (slots // SEGMENT + 1) + 1):
      keys = unit_rows(rng, SEGMENT, 64)
      kv = np.zeros((1, SEGMENT, 2, 64), np.float32)
      kv[0, :, 0] = keys
      kv[0, :, 1, 0] = segment
      memory.add(torch.from_numpy(kv))
      written.append(keys)
      size = memory.knns[0].index.ntotal
      report["index_entries"].append(size)
      oldest = segment - size // SEGMENT + 1
      for name, probe in (("newest", segment), ("oldest", oldest)):
        queries = written[probe][:probes]
        found, mask = memory.search(torch.from_numpy(queries[None]), 1)
        top = found[0, :, 0].numpy()  # [probes, 2, 64]: key, value
        if name == "newest":
          report["found_anything"].append(round(float(mask.float().mean()), 2))
        own = np.all(np.isclose(top[:, 0], queries), axis=-1)
        report[f"{name}_own_row"].append(round(float(own.mean()), 2))
      report["oldest_value_from_its_segment"].append(round(float(np.mean(top[:, 1, 0] == oldest)), 2))
    print(json.dumps({"bench": "peer_quirks", "max_knn_memories": slots,
                      "segment_length": SEGMENT, **report}), flush=True)
    for size in sorted({slots, 65536}):
      print(json.dumps(hnsw_recall(size, rng)), flush=True)
  finally:
    shutil.rmtree(directory, ignore_errors=True)


def hnsw_recall(size: int, rng: np.random.Generator, k: int = 32, queries: int = 256) -> dict:
  """Recall@k of the peer's index (its own KNN class) on random unit keys and queries."""
  knn = KNN(dim=64, max_num_entries=size, cap_num_entries=True)
  keys = unit_rows(rng, size, 64)
  knn.add(keys, ids=np.arange(size))
  q = unit_rows(rng, queries, 64)
  found = knn.search(q, k)
  exact = np.argsort(-(q @ keys.T), axis=1)[:, :k]
  recall = np.mean([len(set(f) & set(e)) / k for f, e in zip(found, exact)])
  return {"bench": "peer_quirks", "hnsw_recall_at_k": round(float(recall), 3), "k": k,
          "index_entries": size, "queries": queries, "data": "random unit vectors, dim 64"}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--variants", default="xl,xl_mem8k,xl_mem65k",
                      help=f"comma-separated, of {','.join(VARIANTS)}")
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--device", default="cpu",
                      help="torch device of the peer's model, e.g. cuda (its faiss index and "
                           "memmap stay on the host, as the peer keeps them)")
  parser.add_argument("--repeats", type=int, default=5, help="timed steps per variant")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant")
  parser.add_argument("--free_running", action="store_true",
                      help="do not restore the full memory before each step: the timed "
                           "steps walk down the peer's sawtooth")
  parser.add_argument("--check_quirks", action="store_true",
                      help="show the memory's sawtooth and misread rows instead of timing")
  parser.add_argument("--quirk_slots", type=int, default=8192)
  parser.add_argument("--quirk_cycles", type=int, default=3)
  parser.add_argument("--lockstep", metavar="PYTHON", default=None,
                      help="also time ours, step_time.py's variants in a child process run "
                           "by this interpreter (the project's venv), steps alternating")
  parser.add_argument("--lookup_methods", default="exact,approx",
                      help="ours, with --lockstep")
  parser.add_argument("--jax_worker", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.jax_worker:
    jax_worker(args)
  elif args.check_quirks:
    check_quirks(args.quirk_slots, args.quirk_cycles)
  else:
    benchmark(args)


if __name__ == "__main__":
  main()
