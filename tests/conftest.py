"""Test-wide setup: 8 forced CPU devices, set before JAX is imported anywhere."""
import os
import sys

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests compile for TPU topologies (libtpu, no TPU) in this and other processes.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# tfds probes cloud storage when offline; nothing in the tests needs it.
os.environ.setdefault("NO_GCE_CHECK", "true")

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
