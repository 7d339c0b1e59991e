"""Retrieval benchmark: memory lookup methods against the bare score matmul.

For each memory size, times (interleaved, median of --repeats) the bare score
matmul `einsum(q, K)` and each lookup method, and prints one JSON object per line:

  {"bench": "retrieval", "method", "slots", "batch", "heads", "queries", "head_dim",
   "k", "ms", "matmul_ms", "ratio_to_matmul", "recall", "temp_bytes",
   "output_bytes", "score_matrix_bytes", "bins"}

`ratio_to_matmul` is the lookup's time (selection plus gathering keys, values and
positions) over the matmul's time in the same run. `recall` is the mean fraction of
the true top-k slots (numpy, brute force) that the method retrieves. `temp_bytes` is
the compiled executable's scratch memory (`memory_analysis().temp_size_in_bytes`;
XLA may also borrow the output buffers, `output_bytes`, as scratch).
The "bucketed" row is the reference scheme of the original code: the full score
matrix, k strided buckets, the argmax of each.

With --slot_shards N the memory's slots are split over N CPU devices (forced with
XLA_FLAGS before JAX starts) and the whole retrieval the model runs (lookup and
attention, `memory.retrieve`) is timed split and on one device, side by side:

  {"bench": "retrieval_slot_shards", "method", "slots", "shards", "memory_dtype",
   "ms", "one_device_ms", "ratio_to_one_device", "recall", "exchanged_bytes",
   "memory_bytes"}

`exchanged_bytes` is what the split program's collectives move per device (the
candidates' scores and slot ids, and the summed output), `memory_bytes` the keys and
values one device holds. The N devices share this host's cores, so the time shows the
cost of the exchange and the merge, not a speed-up.

Usage: .venv/bin/python benchmarks/retrieval.py [--slots 8192 65536 262144]
         [--head_dim 128] [--repeats 3] [--methods exact approx bucketed]
       .venv/bin/python benchmarks/retrieval.py --slots 1048576 --heads 2 --queries 16
         --slot_shards 8 --methods exact approx
"""
from __future__ import annotations

import argparse
import json
import os
import sys

if "--slot_shards" in sys.argv:  # the CPU devices to split the memory over
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import compiled_bytes, time_interleaved  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from memorizing_jax import memory  # noqa: E402
from memorizing_jax.memory import binning  # noqa: E402
from memorizing_jax.train import compiled  # noqa: E402


def bucketed_lookup(state: memory.MemoryState, queries: jax.Array, k: int) -> memory.LookupResult:
  """The original code's bucketed top-k: k strided buckets over the full scores.

  Bucket j holds slots j, j + k, j + 2k, ...; each query retrieves the argmax of
  every bucket.
  """
  b, h, slots, _ = state.key_shape
  scores = jnp.einsum("bhqd,bhsd->bhqs", queries, state.keys, preferred_element_type=jnp.float32)
  valid_slots = state.valid_slots()[:, None, None, :]
  scores = jnp.where(valid_slots, scores, binning.EMPTY_SCORE)
  buckets = scores.reshape(*scores.shape[:3], slots // k, k)
  slot_ids = jnp.argmax(buckets, axis=3).astype(jnp.int32) * k + jnp.arange(k, dtype=jnp.int32)
  num_valid = state.valid_slots().sum(axis=1, dtype=jnp.int32)
  return memory.lookup_lib.gather_result(state.entries, state.positions, num_valid, queries,
                                         slot_ids, jnp.max(buckets, axis=3))


def true_top_k(queries: np.ndarray, keys: np.ndarray, k: int) -> np.ndarray:
  """[batch, heads, queries, k] slot ids of the exact top-k, by numpy, head by head."""
  b, h, nq, _ = queries.shape
  out = np.empty((b, h, nq, k), np.int64)
  for i in range(b):
    for j in range(h):
      scores = queries[i, j] @ keys[i, j].T
      out[i, j] = np.argpartition(-scores, k - 1, axis=-1)[:, :k]
  return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
  """Mean over queries of |found ∩ truth| / k; both [..., k] slot ids."""
  found = found.reshape(-1, found.shape[-1])
  truth = truth.reshape(-1, truth.shape[-1])
  hits = [len(np.intersect1d(f, t, assume_unique=False)) for f, t in zip(found, truth)]
  return float(np.mean(hits) / truth.shape[-1])


def run(slots: int, head_dim: int, args: argparse.Namespace) -> None:
  b, h, nq, k = args.batch, args.heads, args.queries, args.k
  kq, kk, kv = jax.random.split(jax.random.key(slots + head_dim), 3)
  queries = jax.random.normal(kq, (b, h, nq, head_dim), jnp.float32)
  keys = jax.random.normal(kk, (b, h, slots, head_dim), jnp.float32)
  values = jax.random.normal(kv, (b, h, slots, head_dim), jnp.float32)
  # A full memory: slot s holds document position s, so positions name the slots.
  state = memory.write(memory.init(b, h, slots, head_dim), keys, values)

  # The floor: the bare score matmul over the keys as one contiguous array.
  matmul = jax.jit(lambda q, kk: jnp.einsum("bhqd,bhsd->bhqs", q, kk))
  fns = {"matmul": lambda q, st: matmul(q, keys)}
  bins = {}
  for method in args.methods:
    if method == "bucketed":
      fns[method] = jax.jit(lambda q, st: bucketed_lookup(st, q, k))
      bins[method] = k
    else:
      fns[method] = jax.jit(
          lambda q, st, method=method: memory.lookup(st, q, k, method=method,
                                                     recall_target=args.recall_target))
      bins[method] = (binning.exact_bin_count(slots, k, head_dim) if method == "exact" else
                      binning.approx_bin_count(slots, k, args.recall_target))
  times = time_interleaved(fns, queries, state, repeats=args.repeats)
  truth = true_top_k(np.asarray(queries), np.asarray(keys), k)
  score_matrix_bytes = b * h * nq * slots * 4
  for method in args.methods:
    found = np.asarray(fns[method](queries, state).positions)
    print(json.dumps({
        "bench": "retrieval", "method": method, "slots": slots, "batch": b, "heads": h,
        "queries": nq, "head_dim": head_dim, "k": k,
        "recall_target": args.recall_target if method == "approx" else None,
        "bins": bins[method],
        "ms": round(times[method] * 1e3, 2), "matmul_ms": round(times["matmul"] * 1e3, 2),
        "ratio_to_matmul": round(times[method] / times["matmul"], 3),
        "recall": round(recall(found, truth), 4),
        **compiled_bytes(fns[method], queries, state),
        "score_matrix_bytes": score_matrix_bytes,
    }), flush=True)


def run_slot_shards(slots: int, head_dim: int, args: argparse.Namespace) -> None:
  """The retrieval with the memory's slots split over `args.slot_shards` devices
  against the same on one device (see the module docstring)."""
  b, h, nq, k, shards = args.batch, args.heads, args.queries, args.k, args.slot_shards
  if jax.device_count() < shards:
    raise SystemExit(f"--slot_shards {shards} needs {shards} devices, found "
                     f"{jax.device_count()}")
  dtype = jnp.dtype(args.memory_dtype)
  kq, kk, kv = jax.random.split(jax.random.key(slots + head_dim), 3)
  queries = jax.random.normal(kq, (b, h, nq, head_dim), jnp.float32)
  queries = queries / jnp.linalg.norm(queries, axis=-1, keepdims=True)
  write = jax.jit(lambda: memory.write(
      memory.init(b, h, slots, head_dim, dtype),
      jax.random.normal(kk, (b, h, slots, head_dim), dtype),
      jax.random.normal(kv, (b, h, slots, head_dim), dtype)))
  state = write()
  scale = jnp.full((h,), 4.0, jnp.float32)
  mesh = jax.make_mesh((1, 1, shards), ("data", "model", "memory"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)
  placement = P(None, None, "memory")
  on_shards = NamedSharding(mesh, placement)
  split_state = jax.device_put(state, memory.MemoryState(
      entries=on_shards, count=NamedSharding(mesh, P()),
      positions=NamedSharding(mesh, P(None, "memory"))))
  split_queries = jax.device_put(queries, NamedSharding(mesh, P()))
  for method in args.methods:
    if method == "bucketed":
      continue
    retrieve = lambda st, q, place=None, method=method: memory.retrieve(
        st, q, k, scale, method=method, recall_target=args.recall_target, placement=place)
    whole = jax.jit(lambda st, q: retrieve(st, q))
    split = jax.jit(lambda st, q: retrieve(st, q, placement))

    def run_split(st, q):
      with jax.set_mesh(mesh):
        return split(st, q)

    with jax.set_mesh(mesh):
      exchanged = compiled.collective_bytes(
          split.lower(split_state, split_queries).compile().as_text())["total"]
    times = time_interleaved({"whole": lambda: whole(state, queries),
                              "split": lambda: run_split(split_state, split_queries)},
                             repeats=args.repeats)
    found = run_split(split_state, split_queries)
    truth = np.asarray(whole(state, queries).slots) if method == "exact" else true_top_k(
        np.asarray(queries), np.asarray(state.keys, np.float32), k)
    print(json.dumps({
        "bench": "retrieval_slot_shards", "method": method, "slots": slots, "shards": shards,
        "batch": b, "heads": h, "queries": nq, "head_dim": head_dim, "k": k,
        "memory_dtype": str(dtype), "ms": round(times["split"] * 1e3, 2),
        "one_device_ms": round(times["whole"] * 1e3, 2),
        "ratio_to_one_device": round(times["split"] / times["whole"], 3),
        "recall": round(recall(np.asarray(found.slots), truth), 4),
        "exchanged_bytes": int(exchanged),
        "memory_bytes": int(state.entries.nbytes // shards)}), flush=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--slots", type=int, nargs="+", default=[8192, 65536, 262144])
  parser.add_argument("--head_dim", type=int, nargs="+", default=[128])
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--heads", type=int, default=8)
  parser.add_argument("--queries", type=int, default=512)
  parser.add_argument("--k", type=int, default=32)
  parser.add_argument("--recall_target", type=float, default=0.95)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--methods", nargs="+", default=["exact", "approx", "bucketed"],
                      choices=["exact", "approx", "bucketed"])
  parser.add_argument("--slot_shards", type=int, default=0,
                      help="split the memory's slots over this many CPU devices and time the "
                           "retrieval split against one device (0: the lookup table)")
  parser.add_argument("--memory_dtype", default="float32",
                      help="the memory's dtype in a --slot_shards run (XLA's CPU backend "
                           "converts a bfloat16 memory to float32 for its matmuls, a copy "
                           "of every key)")
  args = parser.parse_args()
  for head_dim in args.head_dim:
    for slots in args.slots:
      (run_slot_shards if args.slot_shards else run)(slots, head_dim, args)


if __name__ == "__main__":
  main()
