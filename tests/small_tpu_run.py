"""A small training run compiled for a real TPU topology on this CPU host (libtpu, no
TPU): the tests of `train/aot.py` and of the compile command share it. The paper's
configs are compiled in benchmarks/tpu_compile.py."""
from typing import Any, Dict, Optional

import pytest

from memorizing_jax.data.config import DataConfig
from memorizing_jax.model.config import ModelConfig
from memorizing_jax.train import loop, optimizer, partitioner
from memorizing_jax.train.trainer_config import TrainerConfig


def needs_libtpu():
  """Skips the test where libtpu is not installed."""
  pytest.importorskip("libtpu", reason="compiling for TPU needs libtpu (pip install -e '.[tpu]')")


TOPOLOGY = "v5e:2x2"  # 4 chips of 16 GiB
BATCH = 8
# head_dim 128 fills the TPU's 128-lane tiles, so per-device bytes are not padded.
MODEL = ModelConfig(vocab_size=256, num_layers=2, d_model=128, num_heads=2, head_dim=128,
                    mlp_dim=256, segment_length=16, knn_layers=(-1,), knn_k=8,
                    memory_slots=2048, memory_dtype="bfloat16", compute_dtype="bfloat16",
                    lookup_method="approx")


def arguments(model: ModelConfig = MODEL, mesh: Optional[partitioner.MeshConfig] = None
              ) -> Dict[str, Any]:
  """The run's configs, as `compile.compile_for` takes them: `model` on `mesh` (by default
  the batch split over every device)."""
  return dict(model=model,
              data=DataConfig(task="github", vocabulary="byte", batch_size=BATCH,
                              eval_batch_size=BATCH),
              optimizer=optimizer.OptimizerConfig(),
              mesh=mesh or partitioner.MeshConfig(data=-1, model=1),
              trainer=TrainerConfig())


def build(devices, model: ModelConfig = MODEL, mesh: Optional[partitioner.MeshConfig] = None):
  """The run of `arguments(model, mesh)` on `devices`."""
  configs = arguments(model, mesh)
  return loop.build_run(configs["model"], configs["data"], configs["optimizer"],
                        configs["mesh"], configs["trainer"], devices=devices)
