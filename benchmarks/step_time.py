"""Training-step time with and without the kNN memory, variants side by side.

A full step (forward, backward, optax Adafactor update) of the same model in four
variants: `none` (no XL cache, no memory), `xl` (XL cache), `xl_mem8k` and
`xl_mem65k` (XL cache plus one kNN layer with 8192 / 65536 slots). The model state
(XL caches and memory) is donated and carried step to step, and the memories are
prefilled to capacity before timing, so every timed lookup scans a full memory as
in steady state. Steps of the variants are interleaved round-robin so the shared
machine's background load spreads evenly over them.

Prints one JSON object per variant:
  {"bench": "step_time", "variant", "tokens_per_s", "step_s", "ratio_to_xl",
   "ideal_ratio", ...}
where ratio_to_xl = step_s / step_s(xl) (medians; ratio_to_xl_of_best compares the
fastest steps, less sensitive to other processes' load; ratio_to_xl_paired is the median
over rounds of the step over the XL step of the same round, and ratio_to_xl_paired_ci95
an interval holding that median's true value with 95% probability, from 6 repeats on:
see step_ratios.py) and
ideal_ratio = 1 + (the lookup's score-matmul FLOPs, 2 * batch * heads * length * slots *
head_dim per kNN layer) / (the XL step's FLOPs, from the compiled step's cost_analysis):
what the memory would cost if the lookup ran at the speed of the model's own matmuls.
step_page_faults counts each timed step's page faults (`getrusage`): a step that faulted
in hundreds of thousands of pages paid for them in system time (see
memorizing_jax/host_memory.py), not in its own work.

    .venv/bin/python benchmarks/step_time.py               # CPU default config
    .venv/bin/python benchmarks/step_time.py --paper_200m  # the paper's 200M model
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import sys
import time
from typing import Any, Dict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from memorizing_jax import host_memory  # noqa: E402
from memorizing_jax import memory  # noqa: E402
from memorizing_jax import model as M  # noqa: E402
from step_ratios import ratio_fields  # noqa: E402

# 4 layers, d 512, 8 x 64, MLP 2048: its memory share of FLOPs resembles the 200M model's.
CPU_CONFIG = M.ModelConfig(vocab_size=8192, num_layers=4, d_model=512, num_heads=8,
                           head_dim=64, mlp_dim=2048, segment_length=512, knn_layers=(-2,),
                           knn_k=32, memory_slots=8192)
PAPER_200M = M.ModelConfig(vocab_size=32000, num_layers=12, d_model=1024, num_heads=8,
                           head_dim=128, mlp_dim=4096, segment_length=512, knn_layers=(-4,),
                           knn_k=32, memory_slots=8192, memory_dtype="bfloat16",
                           compute_dtype="bfloat16")
VARIANTS = {
    "none": dict(use_xl_cache=False, knn_layers=()),
    "xl": dict(use_xl_cache=True, knn_layers=()),
    "xl_mem8k": dict(use_xl_cache=True, memory_slots=8192),
    "xl_mem65k": dict(use_xl_cache=True, memory_slots=65536),
}


def make_train_step(model: M.MemorizingTransformer, optimizer: optax.GradientTransformation):
  """(params, opt_state, model_state, tokens, targets, sos) -> same + loss; state donated."""

  def loss_fn(params, tokens, targets, state, sos):
    logits, new_state = model.apply({"params": params}, tokens, state, sos)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()
    return loss, new_state

  def step(params, opt_state, state, tokens, targets, sos):
    (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, tokens, targets, state, sos)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, new_state, loss

  return jax.jit(step, donate_argnums=(0, 1, 2))


def full_state(config: M.ModelConfig, batch: int, key: jax.Array) -> M.ModelState:
  """A steady-state ModelState: valid XL caches, memories filled to capacity."""
  state = M.init_state(config, batch)
  caches = tuple(c.replace(valid=jnp.ones_like(c.valid)) for c in state.xl_caches)
  memories = []
  for mem in state.memories:
    key, k_key, v_key = jax.random.split(key, 3)
    keys = jax.random.normal(k_key, mem.key_shape, jnp.float32)
    keys = keys / jnp.linalg.norm(keys, axis=-1, keepdims=True)  # keys are normalised
    values = jax.random.normal(v_key, mem.key_shape, jnp.float32)
    memories.append(mem.replace(
        entries=memory.stack_entries(keys, values).astype(mem.entries.dtype),
        count=jnp.full_like(mem.count, mem.slots),
        positions=jnp.broadcast_to(jnp.arange(mem.slots, dtype=jnp.int32),
                                   mem.positions.shape)))
  return M.ModelState(xl_caches=caches, memories=tuple(memories))


def analytic_step_flops(config: M.ModelConfig, batch: int) -> float:
  """Matmul FLOPs of one training step (3x the forward), memory lookup excluded."""
  tokens = batch * config.segment_length
  inner = config.num_heads * config.head_dim
  per_layer = 2 * tokens * (4 * config.d_model * inner + 2 * config.d_model * config.mlp_dim)
  keys = config.segment_length * (2 if config.use_xl_cache else 1)
  per_layer += 2 * 2 * tokens * keys * inner  # scores and weighted values
  forward = config.num_layers * per_layer + 2 * tokens * config.d_model * config.vocab_size
  return 3.0 * forward


def lookup_flops(config: M.ModelConfig, batch: int) -> float:
  """Score-matmul FLOPs of the lookups of one step (forward only: no gradient)."""
  return float(2 * batch * config.num_heads * config.segment_length * config.memory_slots
               * config.head_dim * len(config.knn_layers))


def compiled_flops(jitted, *args) -> float:
  analysis = jitted.lower(*args).compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get("flops", 0.0))


@dataclasses.dataclass
class Variant:
  name: str
  config: M.ModelConfig
  step: Any
  carry: tuple  # (params, opt_state, model_state)
  flops: float
  times: list
  page_faults: list = dataclasses.field(default_factory=list)  # of every step run


def build_variant(name: str, config: M.ModelConfig, batch: int, tokens, targets, sos
                  ) -> Variant:
  key = jax.random.PRNGKey(0)
  params = M.init_params(config, key, batch)
  optimizer = optax.adafactor(learning_rate=1e-3)
  opt_state = optimizer.init(params)
  state = jax.jit(full_state, static_argnums=(0, 1))(config, batch, key)
  step = make_train_step(M.MemorizingTransformer(config), optimizer)
  flops = compiled_flops(step, params, opt_state, state, tokens, targets, sos)
  return Variant(name, config, step, (params, opt_state, state), flops, [])


def run_step(variant: Variant, tokens, targets, sos) -> float:
  """One step; returns its seconds and appends its page faults to variant.page_faults."""
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  start = time.perf_counter()
  params, opt_state, state, loss = variant.step(*variant.carry, tokens, targets, sos)
  jax.block_until_ready((params, opt_state, state, loss))
  elapsed = time.perf_counter() - start
  variant.page_faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
  variant.carry = (params, opt_state, state)
  return elapsed


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--paper_200m", action="store_true",
                      help="the paper's 200M model (12 x 1024, bf16) instead of the CPU config")
  parser.add_argument("--batch", type=int, default=None, help="default 4 (CPU) / 8 (200M)")
  parser.add_argument("--repeats", type=int, default=5, help="timed steps per variant")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps (compile included)")
  parser.add_argument("--variants", default=",".join(VARIANTS))
  parser.add_argument("--lookup_method", default=None, help="override: exact or approx")
  args = parser.parse_args(argv)
  host_memory.reuse_freed_memory_on_cpu()  # before JAX runs anything

  base = PAPER_200M if args.paper_200m else CPU_CONFIG
  if args.lookup_method:
    base = dataclasses.replace(base, lookup_method=args.lookup_method)
  batch = args.batch or (8 if args.paper_200m else 4)
  names = args.variants.split(",")
  if "xl" not in names:
    names.insert(0, "xl")  # the ratios' reference
  rng = jax.random.PRNGKey(1)
  data = jax.random.randint(rng, (batch, base.segment_length + 1), 0, base.vocab_size)
  tokens, targets = data[:, :-1], data[:, 1:]
  sos = jnp.zeros((batch,), bool)  # steady state: every row continues its document

  variants = [build_variant(n, dataclasses.replace(base, **VARIANTS[n]), batch, tokens,
                            targets, sos) for n in names]
  for v in variants:
    for _ in range(args.warmup):
      run_step(v, tokens, targets, sos)
  for _ in range(args.repeats):
    for v in variants:
      v.times.append(run_step(v, tokens, targets, sos))

  by_name = {v.name: v for v in variants}
  xl = by_name["xl"]
  xl_flops = xl.flops if xl.flops > 0 else analytic_step_flops(xl.config, batch)
  source = "cost_analysis" if xl.flops > 0 else "analytic"
  for v in variants:
    step_s = statistics.median(v.times)
    memory_flops = lookup_flops(v.config, batch) if v.config.knn_layers else 0.0
    print(json.dumps({
        "bench": "step_time", "variant": v.name,
        "tokens_per_s": round(batch * v.config.segment_length / step_s, 1),
        "step_s": round(step_s, 4), **ratio_fields("ratio_to_xl", v.times, xl.times),
        "ideal_ratio": round(1.0 + memory_flops / xl_flops, 3),
        "memory_slots": v.config.memory_slots if v.config.knn_layers else 0,
        "lookup_flops": memory_flops, "step_flops": v.flops, "xl_step_flops": xl_flops,
        "xl_step_flops_analytic": analytic_step_flops(xl.config, batch),
        "flops_source": source, "lookup_method": v.config.lookup_method,
        "batch": batch, "segment_length": v.config.segment_length,
        "layers": v.config.num_layers, "d_model": v.config.d_model,
        "step_times_s": [round(t, 4) for t in v.times],
        "step_page_faults": v.page_faults[-len(v.times):],
        "device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
    }), flush=True)


if __name__ == "__main__":
  main()
