"""Host memory of CPU runs: freed buffers stay in the process for the next step.

XLA's CPU runtime allocates each step's temporaries with `malloc` from its worker
threads (about 0.9 GB for `benchmarks/step_time.py`'s XL step). glibc serves a request
that large from a fresh `mmap` (threads other than the main one always do) and unmaps
it when it is freed, so every step touches its temporaries' pages anew: the kernel
faults in and zeroes each 4 KiB page. Measured on the 2-core CPU host, one process,
steps of `step_time.py` (script not kept; `resource.getrusage` around each step):

  variant    default glibc                        reuse_freed_memory()
  xl         2.52-2.87 s, 340-370K faults, 0.7-0.85 s system time   2.27-2.30 s, 0 faults
  xl_mem8k   3.00-3.76 s, 390-433K faults, 0.8-0.97 s system time   2.72-3.00 s, 0 faults

(A step now and then still faults once more, about 217K, while the heap finds its size.)
With one arena, no `mmap` and no trimming, the next step's `malloc` gets the same,
already mapped pages. The heap is never trimmed: with trimming only above 2 GiB (as
first written), glibc still gave the heap's top back whenever more than 2 GiB of it lay
free, and the next step faulted it all in again. Running the XL and 8K steps by turns in
one process (`getrusage` and `mallinfo2` around each step; scratch script), 8 of 20 steps
faulted, 6 of them 245-387K pages (0.6-1.0 s of system time each), and in another such
run the heap fell from 2.96 to 2.05 GiB during an 8K step that faulted 385K pages. Never
trimmed, three such runs of 16-20 steps had 1, 2 and 0 steps that faulted. The price:
memory the process frees stays with it (its heap keeps its peak size), and all threads
share one arena. Accelerator runs allocate their step's buffers on the device, so this
is for CPU runs only.
"""
from __future__ import annotations

import ctypes
import glob
import logging
import os
import sys

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

# Device files of accelerators JAX can use (TPU VMs: accel or vfio; NVIDIA; AMD).
ACCELERATOR_DEVICE_FILES = ("/dev/accel*", "/dev/vfio/[0-9]*", "/dev/nvidia[0-9]*", "/dev/kfd")


def cpu_only() -> bool:
  """Whether JAX will run on its CPU backend alone, decided without starting a backend:
  JAX_PLATFORMS (environment or `jax.config`) names only "cpu", or it is unset and the
  machine has no accelerator device file."""
  platforms = os.environ.get("JAX_PLATFORMS", "")
  if not platforms and "jax" in sys.modules:
    platforms = sys.modules["jax"].config.jax_platforms or ""
  if platforms:
    return {p.strip() for p in platforms.split(",") if p.strip()} == {"cpu"}
  return not any(glob.glob(pattern) for pattern in ACCELERATOR_DEVICE_FILES)


def reuse_freed_memory() -> bool:
  """Tells glibc to keep freed memory for reuse (see the module docstring).

  Call it before JAX runs anything: a thread keeps the arena it was given at its first
  allocation. Returns whether the settings took effect (False off Linux or glibc).
  """
  if not sys.platform.startswith("linux"):
    return False
  try:
    mallopt = ctypes.CDLL("libc.so.6").mallopt
  except (OSError, AttributeError):  # not glibc (musl has no mallopt)
    return False
  # mallopt reads the trim threshold as a size_t: -1 is the largest, so never trimmed.
  done = all(mallopt(option, value) == 1 for option, value in (
      (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))
  if done:
    logging.info("host memory: freed buffers are kept for reuse (one malloc arena, no mmap)")
  return done


def reuse_freed_memory_on_cpu() -> bool:
  """`reuse_freed_memory()` when JAX will run on the CPU alone (`cpu_only`); what the
  entry points and the CPU benchmarks call first."""
  return cpu_only() and reuse_freed_memory()
