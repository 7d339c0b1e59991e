"""Golden check of the sharded training step: the memory never travels between devices.

The training step is compiled for 8 CPU devices and every collective of the
optimised per-device program is summed (`train.compiled`). Against the same step
without memory (XL cache only), the memory's step may add collectives worth less
than 1% of the memory's bytes: the gradients' all-reduce is the same in both, and
the lookup and write must run where the memory lives.
"""
import dataclasses
import functools

import numpy as np
import pytest

from memorizing_jax.data.config import DataConfig
from memorizing_jax.model.config import ModelConfig
from memorizing_jax.train import compiled, loop, optimizer, partitioner, steps
from memorizing_jax.train.trainer_config import TrainerConfig

BATCH = 16
# 2 layers, 8 heads, 8K slots: the memory (8 MiB per row) dwarfs the parameters.
MODEL = ModelConfig(vocab_size=256, num_layers=2, d_model=64, num_heads=8, head_dim=16,
                    mlp_dim=128, segment_length=32, use_xl_cache=True, knn_layers=(-1,),
                    knn_k=4, memory_slots=8192)
XL_ONLY = dataclasses.replace(MODEL, knn_layers=())

# The tests share their compiled steps (`compile_train_step` is cached per process).
pytestmark = pytest.mark.keep_together


def memory_bytes(config: ModelConfig) -> int:
  """Keys and values of every row's memory, all kNN layers: the whole batch's."""
  itemsize = np.dtype(config.memory_jnp_dtype).itemsize
  per_layer = 2 * BATCH * config.num_heads * config.memory_slots * config.head_dim * itemsize
  return per_layer * len(config.knn_layers)


@functools.lru_cache(maxsize=None)
def compile_train_step(config: ModelConfig, data: int, model: int, memory: int = 1):
  run = loop.build_run(
      config, DataConfig(task="github", vocabulary="byte", batch_size=BATCH,
                         eval_batch_size=BATCH),
      optimizer.OptimizerConfig(),
      partitioner.MeshConfig(data=data, model=model, memory=memory), TrainerConfig())
  batch = steps.abstract_batch(run.partitioner, BATCH, config.segment_length)
  return run.steps.train.lower(run.layout.abstract, batch).compile()


# (data, model[, memory]): the memory axis splits every memory's slots.
@pytest.mark.parametrize("mesh,method", [((8, 1), "exact"), ((2, 4), "exact"),
                                         ((2, 4), "approx"), ((2, 1, 4), "exact"),
                                         ((1, 2, 4), "approx")])
def test_memory_adds_no_memory_sized_collective(mesh, method):
  config = dataclasses.replace(MODEL, lookup_method=method)
  step = compile_train_step(config, *mesh)
  xl_only = compiled.collective_bytes(compile_train_step(XL_ONLY, *mesh).as_text())["total"]
  added = compiled.collective_bytes(step.as_text())["total"] - xl_only
  assert added < 0.01 * memory_bytes(config), (
      f"{mesh} mesh, {method}: the memory adds {added / 2**20:.1f} MiB of collectives per "
      f"device per step; the memory holds {memory_bytes(config) / 2**20:.0f} MiB. Largest: "
      + str(sorted(compiled.collectives(step.as_text()), key=lambda c: -c.total_bytes)[:3]))


@pytest.mark.parametrize("mesh", [(2, 1), (8, 1), (2, 1, 4)])
def test_memory_per_device_shrinks_with_the_device_count(mesh):
  """The memory's share of each device's arguments is the memory / devices, whether
  the devices split its rows or (the memory axis) its slots."""
  devices = int(np.prod(mesh))
  # The arguments do not depend on the lookup method; the exact lookup's steps on the
  # (8, 1) and (2, 1, 4) meshes are compiled for the test above as well.
  config = dataclasses.replace(MODEL, lookup_method="exact")
  with_memory = compile_train_step(config, *mesh).memory_analysis()
  without = compile_train_step(XL_ONLY, *mesh).memory_analysis()
  per_device = with_memory.argument_size_in_bytes - without.argument_size_in_bytes
  # count and positions ride along ([batch] and [batch, slots] int32): 0.4% here.
  assert memory_bytes(config) / devices <= per_device <= 1.01 * memory_bytes(config) / devices
