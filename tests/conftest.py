"""Test-wide setup: 8 forced CPU devices and one compilation cache, set before JAX is
imported anywhere."""
import atexit
import os
import shutil
import sys
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests compile for TPU topologies (libtpu, no TPU) in this and other processes.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# tfds probes cloud storage when offline; nothing in the tests needs it.
os.environ.setdefault("NO_GCE_CHECK", "true")
# Many tests build the same tiny programs again (a new run, a new load, a training
# subprocess, the notebook's kernel): JAX's persistent cache, one per session and
# inherited by the subprocesses, compiles each of them once.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix="memorizing_jax_test_cache_")
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
# Every program, however quick to compile: tests/inference took 123 s against 134 s with
# only those of 0.5 s and more.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import jax  # noqa: E402  (must follow the XLA_FLAGS assignment)
from etils.epath import backend as epath_backend  # noqa: E402
from etils.epath import gpath  # noqa: E402
import fsspec  # noqa: E402
from fsspec.implementations.dirfs import DirFileSystem  # noqa: E402
from fsspec.implementations.local import LocalFileSystem  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_threefry_partitionable", True)


@pytest.fixture
def local_gcs(tmp_path, monkeypatch):
  """`gs://` paths opened through etils.epath land in a local folder (returned).

  A real filesystem behind the real etils/fsspec stack: fsspec's own local
  filesystem, rooted at the folder, is registered for the gs/gcs protocols, and
  etils is told to use fsspec rather than TensorFlow's gfile for them (gfile would
  go to the network). Paths that bypass etils (orbax's TensorStore) are not covered.
  etils keeps the filesystems it made: its cache is cleared, so that each test's
  bucket is its own folder.
  """
  backend = epath_backend._FileSystemSpecBackend  # pylint: disable=protected-access
  forget_filesystems = backend._get_filesystem.cache_clear  # pylint: disable=protected-access
  root = tmp_path / "gcs"
  root.mkdir()

  class LocalBucket(DirFileSystem):
    protocol = ("gs", "gcs")

    def __init__(self, *args, **kwargs):
      del args, kwargs  # e.g. etils' finalize_on_close
      super().__init__(path=str(root), fs=LocalFileSystem())

  previous = {p: fsspec.registry.get(p) for p in ("gs", "gcs")}
  for protocol in previous:
    fsspec.register_implementation(protocol, LocalBucket, clobber=True)
  monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)
  forget_filesystems()
  yield root
  forget_filesystems()
  for protocol, implementation in previous.items():
    sys.modules["fsspec.registry"]._registry.pop(protocol, None)  # pylint: disable=protected-access
    if implementation is not None:
      fsspec.register_implementation(protocol, implementation, clobber=True)


# A tiny run trained by the real trainer on 8 CPU devices (mesh 4 x 2), shared by the
# inference tests, the notebook test and the study's evaluation tests.
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
def tiny_gin():
  """The gin text of the tiny run (for runs that vary it)."""
  return TINY_GIN


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory):
  """The workdir of a 6-step run of a tiny byte-level model with XL cache and memory,
  trained through the entry point's own gin parsing on a 4 x 2 mesh."""
  import gin  # pylint: disable=g-import-not-at-top
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
