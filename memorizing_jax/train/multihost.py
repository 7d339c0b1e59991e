"""Several processes, one training run: `jax.distributed` start-up and agreement.

Every process runs the same program on its own devices (JAX's multi-controller
model): it feeds only its own rows of each batch, and the jitted steps see
global arrays. This module starts the runtime and lets the processes agree on
host-side decisions (stop and save on SIGTERM, how many evaluation batches) so
that all of them take the same collective path.

Where the runtime's parameters come from:
  TPU pod slice   nothing to give: `jax.distributed.initialize()` reads them from
                  the TPU VM's metadata (used automatically on a TPU VM).
  elsewhere       coordinator address ("host:port" of process 0), process count and
                  this process's id, from flags or JAX_COORDINATOR_ADDRESS,
                  JAX_NUM_PROCESSES, JAX_PROCESS_ID.
"""
from __future__ import annotations

import dataclasses
import glob
import logging
import os
import socket
import sys
import time
from typing import Callable, Optional, TypeVar

import jax
from jax.experimental import multihost_utils
import numpy as np

T = TypeVar("T")

MODES = ("auto", "on", "off")


class DistributedError(RuntimeError):
  """The multi-process runtime could not start (bad settings or no coordinator)."""


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
  """How this process joins a multi-process run.

  Attributes:
    mode: "auto" initialises when a coordinator address (or process count) is
      given, or on a TPU VM; "on" always (no address: JAX detects the cluster);
      "off" never (one process).
    coordinator_address: "host:port" of process 0's coordinator service.
    num_processes: processes in the run.
    process_id: this process, in [0, num_processes).
    timeout_s: give up when the processes have not all connected after this long.
  """

  mode: str = "auto"
  coordinator_address: Optional[str] = None
  num_processes: Optional[int] = None
  process_id: Optional[int] = None
  timeout_s: int = 300

  def __post_init__(self):
    if self.mode not in MODES:
      raise DistributedError(f"--distributed must be one of {MODES}, got {self.mode!r}")
    if self.coordinator_address is not None:
      host, _, port = self.coordinator_address.rpartition(":")
      if not host or not port.isdigit():
        raise DistributedError(
            f"--coordinator_address must be host:port (e.g. 10.0.0.2:8476), got "
            f"{self.coordinator_address!r}")
    if self.num_processes is not None and self.num_processes < 1:
      raise DistributedError(f"--num_processes must be >= 1, got {self.num_processes}")
    if self.process_id is not None and self.num_processes is not None and not (
        0 <= self.process_id < self.num_processes):
      raise DistributedError(f"--process_id must be in [0, {self.num_processes}), got "
                             f"{self.process_id}")
    if self.timeout_s < 1:
      raise DistributedError(f"--distributed_timeout must be >= 1 s, got {self.timeout_s}")

  @classmethod
  def from_env(cls, mode: str = "auto", coordinator_address: Optional[str] = None,
               num_processes: Optional[int] = None, process_id: Optional[int] = None,
               timeout_s: int = 300) -> "DistributedConfig":
    """Flags first, then JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID."""
    def env_int(name):
      value = os.environ.get(name)
      if value is None or value == "":
        return None
      if not value.lstrip("-").isdigit():
        raise DistributedError(f"${name} must be an integer, got {value!r}")
      return int(value)

    return cls(mode=mode,
               coordinator_address=coordinator_address or
               os.environ.get("JAX_COORDINATOR_ADDRESS") or None,
               num_processes=num_processes if num_processes is not None
               else env_int("JAX_NUM_PROCESSES"),
               process_id=process_id if process_id is not None else env_int("JAX_PROCESS_ID"),
               timeout_s=timeout_s)

  @property
  def explicit(self) -> bool:
    return self.coordinator_address is not None or self.num_processes is not None


def _on_tpu_vm() -> bool:
  """True on a Cloud TPU VM (its TPU chips are device files; no JAX call needed)."""
  return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")) or (
      "TPU_WORKER_HOSTNAMES" in os.environ)


def _wait_for_coordinator(address: str, timeout_s: float) -> float:
  """Waits until a TCP connection to `address` ("host:port") succeeds.

  JAX aborts the whole process (no Python exception) when the coordinator cannot
  be reached, so the other processes check for it first.

  Returns:
    the seconds left of `timeout_s`.
  Raises:
    DistributedError: nothing accepted connections at `address` within `timeout_s`.
  """
  host, _, port = address.rpartition(":")
  host = host.strip("[]")
  deadline = time.monotonic() + timeout_s
  error = None
  while True:
    try:
      with socket.create_connection((host, int(port)), timeout=2.0):
        return max(deadline - time.monotonic(), 1.0)
    except OSError as e:
      error = e
    if time.monotonic() >= deadline:
      raise DistributedError(
          f"the coordinator {address} could not be reached within {timeout_s:g} s "
          f"({error.strerror or error}): start process 0 there (it serves the coordinator), "
          "check the host and port and that no firewall blocks it, or raise "
          "--distributed_timeout")
    time.sleep(0.25)


def should_initialize(config: DistributedConfig) -> bool:
  if config.mode == "off":
    return False
  return config.mode == "on" or config.explicit or _on_tpu_vm()


def initialize(config: DistributedConfig) -> bool:
  """Starts `jax.distributed` when `config` asks for it; returns whether it did.

  Must run before anything touches a JAX device.

  Raises:
    DistributedError: incomplete settings, or the processes did not all connect to
      the coordinator within `timeout_s` (the message names the address).
  """
  if not should_initialize(config):
    return False
  if config.explicit:
    missing = [flag for flag, value in (("--coordinator_address", config.coordinator_address),
                                        ("--num_processes", config.num_processes),
                                        ("--process_id", config.process_id))
               if value is None]
    if missing:
      raise DistributedError(
          f"multi-process settings are incomplete: also give {', '.join(missing)} (or "
          "$JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES, $JAX_PROCESS_ID)")
    kwargs = dict(coordinator_address=config.coordinator_address,
                  num_processes=config.num_processes, process_id=config.process_id)
  else:
    kwargs = {}  # A TPU pod (or Slurm, MPI, ...): JAX reads the cluster's settings.
  where = config.coordinator_address or "the address JAX detects for this cluster"
  timeout = config.timeout_s
  if config.explicit:
    print(f"process {config.process_id} of {config.num_processes}: joining the coordinator "
          f"at {where} (timeout {timeout} s)", file=sys.stderr, flush=True)
    if config.process_id != 0:
      timeout = int(_wait_for_coordinator(config.coordinator_address, timeout))
  try:
    jax.distributed.initialize(initialization_timeout=timeout, **kwargs)
  except Exception as e:  # pylint: disable=broad-except
    raise DistributedError(
        f"could not start the multi-process runtime with coordinator {where} "
        f"(process {config.process_id} of {config.num_processes}) within "
        f"{config.timeout_s} s: {str(e).splitlines()[0] if str(e) else type(e).__name__}. "
        "Check that process 0 runs and that its host and port are reachable from here, "
        "and that every process has the same --num_processes.") from e
  logging.info("jax.distributed: process %d of %d, %d local of %d devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  return True


def any_process(flag: bool) -> bool:
  """True when `flag` is true on any process (a collective: all processes call it)."""
  if jax.process_count() == 1:
    return bool(flag)
  flags = multihost_utils.process_allgather(np.asarray([int(bool(flag))], np.int32))
  return bool(np.asarray(flags).any())


def largest_on_any_process(value: int) -> int:
  """The largest of every process's `value` (a collective: all processes call it)."""
  if jax.process_count() == 1:
    return int(value)
  values = multihost_utils.process_allgather(np.asarray([int(value)], np.int64))
  return int(np.asarray(values).max())


def on_process_zero(fn: Callable[[], T], failed_elsewhere: Exception) -> Optional[T]:
  """Runs `fn` on process 0 only; its result there, None on the other processes.

  A collective (all processes call it): when `fn` raised on process 0, every process
  raises together, process 0 its own error and the others `failed_elsewhere`, so no
  process waits for process 0 in vain.
  """
  result, failure = None, None
  if jax.process_index() == 0:
    try:
      result = fn()
    except Exception as e:  # pylint: disable=broad-except
      failure = e
  if any_process(failure is not None):
    raise failure or failed_elsewhere
  return result
