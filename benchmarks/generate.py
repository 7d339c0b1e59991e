"""Generation benchmark: tokens/s of decoding with no memory, 8K and 65K, batch 1 and 8.

Each variant is the same model (by default the CPU quickstart's size: 4 layers,
d_model 128, 4 heads x 32, segments of 128, kNN layer -2, k = 32) with its memory
filled to capacity with random unit keys, as after a long prompt. Decoding is greedy
and writes every completed segment to the memory, as `LoadedModel.generate` does.
All measurements run interleaved in one run (median of --repeats), one JSON object
per line:

  {"bench": "generate", "loop": "compiled" | "python", "batch", "memory_slots",
   "tokens", "seconds", "tokens_per_s", "ratio_to_no_memory", ...}
    "compiled" is `Decoder`'s one compiled loop; "python" is the per-token loop
    `LoadedModel.generate` ran before it, kept here as the baseline: per token one
    jitted step (decode and sample), the next sampling key folded in outside it, and
    the token fetched to the host to check for EOS (`stop_at_eos`, the default).
  {"bench": "generate_speedup", "batch": 1, "memory_slots": 0, "compiled_over_python"}
  {"bench": "decode_lookup_floor", "memory_slots", "lookup_s", "reduction_s",
   "ratio_to_floor", "bytes"}
    One decode step's memory lookup (one query per head over a row's whole memory)
    against a plain sum over an array of the same bytes (the keys it must read): the
    lookup's floor is memory bandwidth.

Usage: .venv/bin/python benchmarks/generate.py [--slots 0 8192 65536] [--batches 1 8]
         [--tokens 256] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import timing  # noqa: E402
from memorizing_jax import memory  # noqa: E402
from memorizing_jax.inference.generation import Decoder  # noqa: E402
from memorizing_jax.model import ModelConfig, decoding, init_params, init_state  # noqa: E402

QUICKSTART = dict(vocab_size=1024, num_layers=4, d_model=128, num_heads=4, head_dim=32,
                  mlp_dim=512, segment_length=128, use_xl_cache=True, knn_layers=(-2,),
                  knn_k=32)


def model_config(slots: int) -> ModelConfig:
  if slots:
    return ModelConfig(**QUICKSTART, memory_slots=slots)
  return ModelConfig(**{**QUICKSTART, "knn_layers": ()})


def filled_state(config: ModelConfig, batch: int, seed: int = 0):
  """A state whose memories are full of random unit keys and values."""
  state = init_state(config, batch)
  key = jax.random.PRNGKey(seed)
  memories = []
  for m in state.memories:
    key, k1, k2 = jax.random.split(key, 3)
    keys = jax.random.normal(k1, m.key_shape, m.entries.dtype)
    keys = keys / jnp.linalg.norm(keys, axis=-1, keepdims=True)
    slots = m.slots
    values = jax.random.normal(k2, m.key_shape)
    memories.append(m.replace(entries=memory.stack_entries(keys, values).astype(m.entries.dtype),
                              count=jnp.full_like(m.count, slots),
                              positions=jnp.broadcast_to(jnp.arange(slots), m.positions.shape)))
  return state.replace(memories=tuple(memories))


class Variant:
  """One memory size at one batch size: its decoder, parameters and a filled state."""

  def __init__(self, slots: int, batch: int):
    self.slots, self.batch = slots, batch
    self.config = model_config(slots)
    self.decoder = Decoder(self.config)
    self.params = init_params(self.config, jax.random.PRNGKey(0))
    state = filled_state(self.config, batch)
    # Copies of the state; the compiled loop consumes none, the python loop donates.
    self.state = state
    config, model = self.config, self.decoder.model

    def step(params, state, segments, token, key):  # greedy: the key goes unused
      del key
      logits, segments = decoding.decode(model, params, token[:, None], state, segments)
      return jnp.argmax(logits[:, 0], axis=-1).astype(jnp.int32), segments

    self.step = jax.jit(step, donate_argnums=(2,))
    self.complete = jax.jit(lambda state, segments: decoding.complete_segment(
        config, state, segments), donate_argnums=(0, 1))

  def compiled(self, tokens: int) -> float:
    """Seconds of the compiled loop decoding `tokens` tokens per row."""
    segments = decoding.init_segment_cache(self.config, self.batch)
    logits = jnp.zeros((self.batch, self.config.vocab_size), jnp.float32)
    buffer = max(16, 1 << (tokens - 1).bit_length())
    start = time.perf_counter()
    out = self.decoder._loop(  # pylint: disable=protected-access
        self.params, self.state, segments, logits, np.arange(self.batch, dtype=np.int32),
        np.float32(0), np.int32(0), np.float32(1), np.int32(tokens), np.array([-1], np.int32),
        np.int32(0), buffer=buffer, memory=True, on_token=None)
    jax.block_until_ready(out)
    return time.perf_counter() - start

  def python(self, tokens: int) -> float:
    """Seconds of the per-token python loop decoding `tokens` tokens per row."""
    state = jax.tree.map(jnp.copy, self.state)
    segments = decoding.init_segment_cache(self.config, self.batch)
    token = jnp.zeros((self.batch,), jnp.int32)
    key, stop = jax.random.PRNGKey(0), {-1}
    jax.block_until_ready((state, segments))
    start = time.perf_counter()
    position = 0
    for i in range(tokens):
      if position == self.config.segment_length:
        state, segments = self.complete(state, segments)
        position = 0
      if int(token[0]) in stop:
        break
      token, segments = self.step(self.params, state, segments, token,
                                  jax.random.fold_in(key, i + 1))
      position += 1
    jax.block_until_ready(token)
    return time.perf_counter() - start


def lookup_floor(slots: int, repeats: int) -> dict:
  """One decode step's lookup at `slots` against a sum over the same bytes."""
  config = model_config(slots)
  state = filled_state(config, 1).memories[0]
  queries = jax.random.normal(jax.random.PRNGKey(1), (1, config.num_heads, 1,
                                                      config.head_dim))
  queries = queries / jnp.linalg.norm(queries, axis=-1, keepdims=True)
  lookup = jax.jit(lambda s, q: memory.lookup(s, q, config.knn_k,
                                              method=config.lookup_method).scores)
  reduction = jax.jit(jnp.sum)
  keys = state.keys  # sliced out of the entries once, not inside the timed call
  times = timing.time_interleaved(
      {"lookup": lambda: lookup(state, queries), "reduction": lambda: reduction(keys)},
      repeats=max(repeats * 10, 20), warmup=2)
  return {"bench": "decode_lookup_floor", "memory_slots": slots,
          "method": config.lookup_method, "bytes": int(keys.nbytes),
          "lookup_s": round(times["lookup"], 6), "reduction_s": round(times["reduction"], 6),
          "ratio_to_floor": round(times["lookup"] / times["reduction"], 3),
          "backend": jax.default_backend()}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--slots", type=int, nargs="+", default=[0, 8192, 65536],
                      help="memory sizes (0: a model without memory)")
  parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
  parser.add_argument("--tokens", type=int, default=256, help="tokens per row per timing")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  variants = [Variant(s, b) for b in args.batches for s in args.slots]
  runs = {}  # (loop, batch, slots) -> list of seconds
  for v in variants:
    loops = {"compiled": v.compiled}
    if v.batch == 1:
      loops["python"] = v.python
    for name, run in loops.items():
      run(args.tokens)  # compiles (the loop, or the step and the segment write)
      runs[(name, v.batch, v.slots)] = (run, [])
  for _ in range(args.repeats):
    for run, times in runs.values():
      times.append(run(args.tokens))
  median = {key: float(np.median(times)) for key, (_, times) in runs.items()}
  for (loop, batch, slots), seconds in median.items():
    base = median.get((loop, batch, 0))
    config = model_config(slots)
    print(json.dumps({
        "bench": "generate", "loop": loop, "batch": batch, "memory_slots": slots,
        "tokens": args.tokens * batch, "seconds": round(seconds, 4),
        "tokens_per_s": round(args.tokens * batch / seconds, 1),
        "ratio_to_no_memory": None if base is None else round(seconds / base, 3),
        "layers": config.num_layers, "d_model": config.d_model,
        "segment_length": config.segment_length, "knn_k": config.knn_k,
        "backend": jax.default_backend()}), flush=True)
  if ("python", 1, 0) in median and ("compiled", 1, 0) in median:
    print(json.dumps({"bench": "generate_speedup", "batch": 1, "memory_slots": 0,
                      "compiled_over_python": round(median[("python", 1, 0)]
                                                    / median[("compiled", 1, 0)], 3)}),
          flush=True)
  for slots in args.slots:
    if slots:
      print(json.dumps(lookup_floor(slots, args.repeats)), flush=True)


if __name__ == "__main__":
  main()
