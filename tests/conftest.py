"""Test-wide setup: 8 forced CPU devices, set before JAX is imported anywhere."""
import os

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

jax.config.update("jax_threefry_partitionable", True)
