"""Shared fixtures of the trainer tests: a tiny corpus task and a tiny model config."""
import dataclasses
import pathlib
import random

import pytest

from memorizing_jax import main
from memorizing_jax.data.config import DataConfig
from memorizing_jax.model.config import ModelConfig
from memorizing_jax.train import loop, optimizer, partitioner

TASK = "train_tests_corpus"
# A byte vocabulary has 259 ids; 264 splits evenly over 8 devices. The exact lookup:
# runs on other meshes (a memory split over devices) then retrieve the same entries.
TINY_MODEL = dict(vocab_size=264, num_layers=2, d_model=32, num_heads=2, head_dim=16,
                  mlp_dim=64, segment_length=16, use_xl_cache=True, knn_layers=(-1,),
                  knn_k=4, memory_slots=64, lookup_method="exact",
                  relative_position_buckets=8, relative_position_max_distance=32)


def _document(rng: random.Random, index: int) -> str:
  """Code-like text that defines names and uses them again later (memory helps)."""
  names = ["".join(rng.choice("abcdefghij") for _ in range(5))
           for _ in range(rng.randint(1, 3))]
  lines = [f"# {index}"]
  lines += [f"def {n}(x):\n  return x + {rng.randint(0, 99)}" for n in names]
  lines += [f"y = {rng.choice(names)}({rng.choice(names)}(y))" for _ in range(rng.randint(1, 5))]
  return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
  """(task name, data_dir): a registered folder task of small code-like documents."""
  from memorizing_jax.data import tasks  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("corpus")
  rng = random.Random(0)
  for split, count in (("train", 24), ("validation", 4), ("test", 2)):
    (root / split).mkdir()
    for i in range(count):
      (root / split / f"doc_{i:03d}.py").write_text(_document(rng, i))
  tasks.register_folder_task(TASK, "file", root=str(root))
  return TASK, str(tmp_path_factory.mktemp("data_dir"))


@dataclasses.dataclass
class Configs:
  """Keyword arguments of `loop.train` for a tiny run."""

  model: ModelConfig
  data: DataConfig
  optimizer: optimizer.OptimizerConfig
  mesh: partitioner.MeshConfig
  trainer: loop.TrainerConfig

  def replace(self, **changes) -> "Configs":
    """Changes fields of the member configs: replace(model=dict(d_model=64), ...)."""
    return Configs(**{name: (dataclasses.replace(getattr(self, name), **changes[name])
                             if name in changes else getattr(self, name))
                      for name in ("model", "data", "optimizer", "mesh", "trainer")})

  def kwargs(self):
    return dict(model=self.model, data=self.data, optimizer=self.optimizer, mesh=self.mesh,
                trainer=self.trainer)


@pytest.fixture(scope="session")
def tiny(corpus) -> Configs:
  task, data_dir = corpus
  return Configs(
      model=ModelConfig(**TINY_MODEL),
      data=DataConfig(task=task, vocabulary="byte", batch_size=8, eval_batch_size=8,
                      data_dir=data_dir),
      optimizer=optimizer.OptimizerConfig(
          schedule=optimizer.ScheduleConfig(peak_learning_rate=0.01, warmup_steps=4)),
      mesh=partitioner.MeshConfig(data=4, model=2),
      trainer=loop.TrainerConfig(total_steps=8, log_every=1, eval_every=0, eval_batches=3,
                                 checkpoint_every=4, keep_checkpoints=5, progress_bar=False))


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


@pytest.fixture
def github_corpus(corpus, monkeypatch, tmp_path_factory):
  """The test corpus as the built-in `github` task, for this process and subprocesses."""
  from memorizing_jax.data import tasks  # pylint: disable=g-import-not-at-top
  root = tasks.get_reader(corpus[0]).root
  monkeypatch.setenv("MEMORIZING_JAX_GITHUB_DIR", str(root))
  monkeypatch.setenv("MEMORIZING_JAX_DATA_DIR", str(tmp_path_factory.mktemp("github_data")))


def run_entry_point(argv: list) -> int:
  """`memorizing_jax.main.main` with `argv` parsed as command-line flags; its exit status."""
  main.FLAGS(["main"] + argv)
  try:
    return main.main(["main"])
  finally:
    main.FLAGS.unparse_flags()
