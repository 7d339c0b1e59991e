"""Test-wide setup: 8 forced CPU devices and one compilation cache, set before JAX is
imported anywhere."""
import atexit
import os
import shutil
import sys
import tempfile

# The tests' programs are tiny and many, so compiling them costs more than running
# them: without LLVM's optimisations (level 0) the suite spends about a fifth less CPU
# time (12.6 against 16.2 CPU minutes, one run each). Subprocesses inherit the flags.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
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
import gin  # noqa: E402
import pytest  # noqa: E402

import memorizing_jax as mj  # noqa: E402
from memorizing_jax import main  # noqa: E402
from memorizing_jax.data import tasks  # noqa: E402
from memorizing_jax.data.config import DataConfig  # noqa: E402
from memorizing_jax.model.config import ModelConfig  # noqa: E402
from memorizing_jax.train import optimizer, partitioner  # noqa: E402
from memorizing_jax.train.trainer_config import TrainerConfig  # noqa: E402
import tiny_runs  # noqa: E402

jax.config.update("jax_threefry_partitionable", True)


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "keep_together: run the module's tests in one process, one after the other "
      "(they share something costly, e.g. compiled programs cached in the module)")


def pytest_collection_modifyitems(items):
  """Modules whose tests share a module-scoped fixture, or are marked `keep_together`,
  run first, each module's tests still together.

  `make test`'s `--dist worksteal` gives each worker a contiguous half of this order
  and later moves tests from the end of a busy worker's queue to an idle one. A module
  at the front is so never split between the workers or interleaved with another
  module, either of which builds its fixtures again: in collection order the
  two-process training of test_multihost.py was built three times (104 s of setup).
  The order within a module is unchanged.
  """
  def shares_module_fixture(item):
    definitions = getattr(item, "_fixtureinfo", None)
    if definitions is None:
      return False
    return any(d.scope in ("module", "class") for defs in definitions.name2fixturedefs.values()
               for d in defs)

  first = {item.path for item in items
           if shares_module_fixture(item) or item.get_closest_marker("keep_together")}
  items[:] = sorted(items, key=lambda item: item.path not in first)


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


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
  """(task name, data_dir): a registered folder task of small code-like documents."""
  root = tmp_path_factory.mktemp("corpus")
  tiny_runs.write_code_corpus(root)
  tasks.register_folder_task(tiny_runs.TASK, "file", root=str(root))
  return tiny_runs.TASK, str(tmp_path_factory.mktemp("data_dir"))


@pytest.fixture(scope="session")
def tiny(corpus) -> tiny_runs.Configs:
  """The tiny run's configs on the `corpus` task (byte vocabulary, mesh 4 x 2, 8 steps)."""
  task, data_dir = corpus
  return tiny_runs.Configs(
      model=ModelConfig(**tiny_runs.TINY_MODEL),
      data=DataConfig(task=task, vocabulary="byte", batch_size=8, eval_batch_size=8,
                      data_dir=data_dir),
      optimizer=optimizer.OptimizerConfig(
          schedule=optimizer.ScheduleConfig(peak_learning_rate=0.01, warmup_steps=4)),
      mesh=partitioner.MeshConfig(data=4, model=2),
      trainer=TrainerConfig(total_steps=8, log_every=1, eval_every=0, eval_batches=3,
                            checkpoint_every=4, keep_checkpoints=5, progress_bar=False))


@pytest.fixture
def github_corpus(corpus, monkeypatch, tmp_path_factory):
  """The test corpus as the built-in `github` task, for this process and subprocesses."""
  root = tasks.get_reader(corpus[0]).root
  monkeypatch.setenv("MEMORIZING_JAX_GITHUB_DIR", str(root))
  monkeypatch.setenv("MEMORIZING_JAX_DATA_DIR", str(tmp_path_factory.mktemp("github_data")))


@pytest.fixture(scope="session")
def tiny_gin():
  """The gin text of the tiny run (for runs that vary it)."""
  return tiny_runs.TINY_GIN


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory):
  """The workdir of a 6-step run of a tiny byte-level model with XL cache and memory,
  trained through the entry point's own gin parsing on a 4 x 2 mesh."""
  assert jax.device_count() == 8
  root = tmp_path_factory.mktemp("inference_run")
  (root / "tiny.gin").write_text(tiny_runs.TINY_GIN)
  workdir = root / "run"
  try:
    main.run_training(str(workdir), [str(root / "tiny.gin")], [])
  finally:
    gin.clear_config()
  return str(workdir)


@pytest.fixture(scope="session")
def loaded(trained_workdir):
  """`mj.load` of the tiny run (its compiled readers and decoder are shared)."""
  return mj.load(trained_workdir)
