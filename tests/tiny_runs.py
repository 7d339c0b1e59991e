"""The tiny training runs that the end-to-end tests share: a corpus of code-like
documents, the configs of a run on 8 CPU devices (mesh 4 x 2), and the same model as gin
bindings for the entry point. The fixtures that build them are in conftest.py."""
import dataclasses
import pathlib
import random

import gin

from memorizing_jax import main
from memorizing_jax.data.config import DataConfig
from memorizing_jax.model.config import ModelConfig
from memorizing_jax.train import optimizer, partitioner
from memorizing_jax.train.trainer_config import TrainerConfig

TASK = "train_tests_corpus"
# A byte vocabulary has 259 ids; 264 splits evenly over 8 devices. The exact lookup:
# runs on other meshes (a memory split over devices) then retrieve the same entries.
TINY_MODEL = dict(vocab_size=264, num_layers=2, d_model=32, num_heads=2, head_dim=16,
                  mlp_dim=64, segment_length=16, use_xl_cache=True, knn_layers=(-1,),
                  knn_k=4, memory_slots=64, lookup_method="exact",
                  relative_position_buckets=8, relative_position_max_distance=32)


def code_document(rng: random.Random, index: int) -> str:
  """Code-like text that defines names and uses them again later (memory helps)."""
  names = ["".join(rng.choice("abcdefghij") for _ in range(5))
           for _ in range(rng.randint(1, 3))]
  lines = [f"# {index}"]
  lines += [f"def {n}(x):\n  return x + {rng.randint(0, 99)}" for n in names]
  lines += [f"y = {rng.choice(names)}({rng.choice(names)}(y))" for _ in range(rng.randint(1, 5))]
  return "\n".join(lines) + "\n"


def write_code_corpus(root: pathlib.Path, counts=(("train", 24), ("validation", 4),
                                                  ("test", 2))) -> None:
  """`root/<split>/doc_NNN.py`: `count` code documents per split, the same on every call."""
  rng = random.Random(0)
  for split, count in counts:
    (root / split).mkdir(parents=True)
    for i in range(count):
      (root / split / f"doc_{i:03d}.py").write_text(code_document(rng, i))


@dataclasses.dataclass
class Configs:
  """Keyword arguments of `loop.train` for a tiny run."""

  model: ModelConfig
  data: DataConfig
  optimizer: optimizer.OptimizerConfig
  mesh: partitioner.MeshConfig
  trainer: TrainerConfig

  def replace(self, **changes) -> "Configs":
    """Changes fields of the member configs: replace(model=dict(d_model=64), ...)."""
    return Configs(**{name: (dataclasses.replace(getattr(self, name), **changes[name])
                             if name in changes else getattr(self, name))
                      for name in ("model", "data", "optimizer", "mesh", "trainer")})

  def kwargs(self):
    return dict(model=self.model, data=self.data, optimizer=self.optimizer, mesh=self.mesh,
                trainer=self.trainer)


def entry_point_bindings(total_steps: int, checkpoint_every: int, *, eval_batches: int,
                         keep_checkpoints: int, extra=()) -> list:
  """gin bindings (on top of train.gin) for a tiny `github` run with the byte vocabulary
  on a data 4 x model 2 mesh, run through the real entry point."""
  model = [f"model_config.ModelConfig.{k} = {v!r}" for k, v in TINY_MODEL.items()]
  return model + [
      "TASK = 'github'",
      "data_config.DataConfig.vocabulary = 'byte'",
      "BATCH_SIZE = 8",
      "optimizer.ScheduleConfig.peak_learning_rate = 0.01",
      "optimizer.ScheduleConfig.warmup_steps = 4",
      "partitioner.MeshConfig.data = 4",
      "partitioner.MeshConfig.model = 2",
      f"loop.TrainerConfig.total_steps = {total_steps}",
      "loop.TrainerConfig.log_every = 1",
      "loop.TrainerConfig.eval_every = 0",
      f"loop.TrainerConfig.eval_batches = {eval_batches}",
      f"loop.TrainerConfig.checkpoint_every = {checkpoint_every}",
      f"loop.TrainerConfig.keep_checkpoints = {keep_checkpoints}",
      "loop.TrainerConfig.progress_bar = False",
  ] + list(extra)


def run_entry_point(argv: list) -> int:
  """`memorizing_jax.main.main` with `argv` parsed as command-line flags; its exit status."""
  main.FLAGS(["main"] + argv)
  try:
    return main.main(["main"])
  finally:
    main.FLAGS.unparse_flags()
    gin.clear_config()  # main parses with finalize_config, which locks it for later parses


# The tiny model as a run file of its own (train.gin plus the synthetic recall task),
# trained by the real trainer for the inference tests, the notebook test and the study's
# evaluation tests (conftest.trained_workdir).
_GIN_MODEL = "\n".join(f"model_config.ModelConfig.{k} = {v!r}" for k, v in TINY_MODEL.items()
                       if k not in ("vocab_size", "segment_length"))
TINY_GIN = f"""
include 'train.gin'
from __gin__ import dynamic_registration
from memorizing_jax.data import config as data_config
from memorizing_jax.data import synthetic_task
from memorizing_jax.model import config as model_config
from memorizing_jax.train import loop
from memorizing_jax.train import optimizer
from memorizing_jax.train import partitioner

TASK = 'synthetic_recall'
VOCAB_SIZE = 264
SEGMENT_LENGTH = 16
{_GIN_MODEL}
data_config.DataConfig.vocabulary = 'byte'
BATCH_SIZE = 8
partitioner.MeshConfig.data = 4
partitioner.MeshConfig.model = 2
optimizer.ScheduleConfig.warmup_steps = 4
loop.TrainerConfig.total_steps = 6
loop.TrainerConfig.log_every = 3
loop.TrainerConfig.eval_every = 0
loop.TrainerConfig.eval_batches = 1
loop.TrainerConfig.checkpoint_every = 3
loop.TrainerConfig.keep_checkpoints = 2
loop.TrainerConfig.progress_bar = False
"""
