"""A tiny run trained by the real trainer on 8 CPU devices (mesh 4 x 2), shared by the
inference tests (and the notebook test)."""
import pytest

TINY_GIN = """
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
model_config.ModelConfig.num_layers = 2
model_config.ModelConfig.d_model = 32
model_config.ModelConfig.num_heads = 2
model_config.ModelConfig.head_dim = 16
model_config.ModelConfig.mlp_dim = 64
model_config.ModelConfig.use_xl_cache = True
model_config.ModelConfig.knn_layers = (-1,)
model_config.ModelConfig.knn_k = 4
model_config.ModelConfig.memory_slots = 64
# Exact: a memory split over devices then retrieves what the whole one does.
model_config.ModelConfig.lookup_method = "exact"
model_config.ModelConfig.relative_position_buckets = 8
model_config.ModelConfig.relative_position_max_distance = 32
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


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory):
  """The workdir of a 6-step run of a tiny byte-level model with XL cache and memory,
  trained through the entry point's own gin parsing on a 4 x 2 mesh."""
  import gin  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from memorizing_jax import main  # pylint: disable=g-import-not-at-top
  assert jax.device_count() == 8
  root = tmp_path_factory.mktemp("inference_run")
  (root / "tiny.gin").write_text(TINY_GIN)
  workdir = root / "run"
  try:
    main.run_training(str(workdir), [str(root / "tiny.gin")], [])
  finally:
    gin.clear_config()
  return str(workdir)


@pytest.fixture(scope="session")
def loaded(trained_workdir):
  """`mj.load` of the tiny run (its compiled readers and decoder are shared)."""
  import memorizing_jax as mj  # pylint: disable=g-import-not-at-top
  return mj.load(trained_workdir)
