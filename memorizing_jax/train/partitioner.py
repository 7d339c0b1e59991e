"""The device mesh and the shardings of everything the trainer touches.

One `Partitioner` owns the mesh (axes `data`, `model` and `memory`, Auto axis types,
as pjit-style code expects; `memory` splits the memory's slots and is 1 unless a
memory is too large for one device) and the logical-axis rules that map the model's logical
names (`batch`, `embed`, `heads`, `mlp`, `vocab`, `memory_slots`, ...) to mesh
axes, as in t5x and MaxText. The parameters' and the ModelState's layouts on it come
from `model/partitioning.py`; this module adds the batches' and the optimizer
state's.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Optional, Sequence, Tuple

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import optax

from memorizing_jax.model import axes, partitioning

MESH_AXES = ("data", "model", "memory")
LogicalRules = Tuple[Tuple[str, Any], ...]


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Mesh shape and logical-axis rules.

  Attributes:
    data: devices along the data-parallel axis; -1 takes all that `model` leaves.
    model: devices along the model-parallel axis; -1 takes all that `data` leaves.
    memory: devices along the memory axis, over which every memory's slots are split
      (the logical axis `memory_slots`): each holds 1/memory of every row's slots and
      looks them up, and the shards exchange only their candidates' scores and ids
      (`memory/retrieval.py`). The rest of the model is replicated along it. Use it
      for a memory larger than one device holds next to the model.
    logical_axis_rules: (logical name, mesh axis or None) pairs; None uses the
      model's `DEFAULT_LOGICAL_AXIS_RULES`.
  """

  data: int = -1
  model: int = 1
  memory: int = 1
  logical_axis_rules: Optional[Sequence[Tuple[str, Any]]] = None

  def __post_init__(self):
    if self.memory < 1:
      raise ValueError(f"MeshConfig.memory must be a positive device count, got {self.memory}")
    for name in ("data", "model"):
      value = getattr(self, name)
      if value != -1 and value < 1:
        raise ValueError(f"MeshConfig.{name} must be a positive device count or -1 "
                         f"(all remaining devices), got {value}")
    if self.data == -1 and self.model == -1:
      raise ValueError("MeshConfig: at most one of data and model may be -1")
    if self.logical_axis_rules is not None:
      rules = tuple((str(name), axis) for name, axis in self.logical_axis_rules)
      unknown = sorted({a for _, axis in rules for a in axes.mesh_axes_of(axis)}
                       - set(MESH_AXES))
      if unknown:
        raise ValueError(f"MeshConfig.logical_axis_rules name mesh axes {unknown}; the "
                         f"mesh's axes are {MESH_AXES}")
      object.__setattr__(self, "logical_axis_rules", rules)

  def shape(self, num_devices: int) -> Tuple[int, int, int]:
    """(data, model, memory) for `num_devices` devices, resolving -1."""
    data, model, memory = self.data, self.model, self.memory
    if data == -1:
      data, rem = divmod(num_devices, model * memory)
    elif model == -1:
      model, rem = divmod(num_devices, data * memory)
    else:
      rem = 0
    if rem or data * model * memory > num_devices or data < 1 or model < 1:
      raise ValueError(
          f"MeshConfig(data={self.data}, model={self.model}, memory={self.memory}) does not "
          f"fit {num_devices} devices: the product must divide the device count (use -1 "
          "for one axis)")
    return data, model, memory


def _default_logical_axis_rules() -> LogicalRules:
  return tuple(axes.DEFAULT_LOGICAL_AXIS_RULES)


class Partitioner:
  """The mesh plus the rules; turns logical specs into `NamedSharding`s."""

  def __init__(self, config: MeshConfig, devices: Optional[Sequence[jax.Device]] = None):
    devices = list(jax.devices() if devices is None else devices)
    shape = config.shape(len(devices))
    if math.prod(shape) < len(devices):
      # Handy for comparing against a smaller mesh on the same host; never silent.
      logging.warning("Mesh uses %d of %d devices (data=%d, model=%d, memory=%d)",
                      math.prod(shape), len(devices), *shape)
      devices = devices[:math.prod(shape)]
    device_array = _device_array(devices, shape)
    self.mesh = Mesh(device_array, MESH_AXES)  # Auto axis types by default
    self.rules: LogicalRules = (config.logical_axis_rules
                                if config.logical_axis_rules is not None
                                else _default_logical_axis_rules())

  def in_mesh(self, fn):
    """`fn` traced with this mesh and these rules in context (see `axes.in_mesh`)."""
    return axes.in_mesh(fn, self.mesh, self.rules)

  def sharding(self, logical_spec: PartitionSpec) -> NamedSharding:
    """The sharding of one array whose axes have the given logical names (the
    parameters' and the state's come from `model/partitioning.py`)."""
    return partitioning.logical_to_shardings(logical_spec, self.mesh, self.rules)

  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, PartitionSpec())

  def batch_shardings(self, batch: Any) -> Any:
    """Shardings for a batch of [batch, ...] arrays: the leading axis is `batch`."""
    return jax.tree.map(
        lambda x: self.sharding(PartitionSpec("batch", *([None] * (np.ndim(x) - 1)))),
        batch)

  def batch_shards(self) -> int:
    """How many ways the batch axis is split over the mesh."""
    spec = self.sharding(PartitionSpec("batch")).spec
    return math.prod(self.mesh.shape[a] for a in axes.mesh_axes_of(spec[0] if spec else None))

  def check_batch_size(self, global_batch_size: int, what: str = "batch_size") -> None:
    """The global batch must split evenly over the data axis."""
    shards = self.batch_shards()
    if global_batch_size % shards:
      raise ValueError(f"{what}={global_batch_size} does not divide over the {shards} "
                       f"data-parallel devices of the mesh {dict(self.mesh.shape)}; use a "
                       f"multiple of {shards}")

  def check_processes_feed_distinct_rows(self, process_count: Optional[int] = None) -> None:
    """Each process feeds its own rows, so the batch axis must split over the processes."""
    check_data_parallelism_fits_processes(
        self.batch_shards(), jax.process_count() if process_count is None else process_count)

  def global_batch(self, local_batch: Any) -> Any:
    """Forms global `jax.Array`s from this process's rows (multi-host ready)."""
    return jax.tree.map(
        lambda x, s: jax.make_array_from_process_local_data(s, np.asarray(x)),
        local_batch, self.batch_shardings(local_batch))


def _device_array(devices: Sequence[jax.Device], shape: Tuple[int, ...]) -> np.ndarray:
  """The devices laid out as `shape`, following the TPU's physical torus when JAX can
  (all devices of a slice, e.g. a topology compiled for); else in the order given."""
  try:
    return mesh_utils.create_device_mesh(shape, devices=devices)
  except (AssertionError, ValueError, NotImplementedError):
    return np.asarray(devices).reshape(shape)


def check_data_parallelism_fits_processes(data_parallelism: int, process_count: int) -> None:
  """Raises ValueError unless the batch's `data_parallelism` shards divide over the
  processes (each process feeds only its own rows of the batch)."""
  if data_parallelism % process_count:
    raise ValueError(
        f"the batch is split {data_parallelism} ways over the mesh but the run has "
        f"{process_count} processes, and each process feeds only its own rows: make "
        f"MeshConfig.data a multiple of {process_count} (e.g. data = -1, model = the "
        "devices of one host or fewer)")


def param_shardings_for_optimizer(tx, opt_state_shape: Any, params_shape: Any,
                                  param_shardings: Any, replicated: NamedSharding) -> Any:
  """Shardings for an optimizer state.

  A state leaf shaped like its parameter (Adam moments, Adafactor's unfactored
  second moment) takes the parameter's sharding; a factored statistic (Adafactor's
  row/column means) keeps the parameter's sharding on the axes it still has;
  counters and everything else are replicated.
  """

  def for_leaf(leaf, param, sharding):
    if leaf.shape == param.shape:
      return sharding
    spec = tuple(sharding.spec) + (None,) * (len(param.shape) - len(sharding.spec))
    if len(leaf.shape) == len(param.shape) - 1:
      for dropped in range(len(param.shape)):
        kept = param.shape[:dropped] + param.shape[dropped + 1:]
        if kept == leaf.shape:
          return NamedSharding(sharding.mesh,
                               PartitionSpec(*(spec[:dropped] + spec[dropped + 1:])))
    return replicated

  return optax.tree_map_params(tx, for_leaf, opt_state_shape, params_shape, param_shardings,
                               transform_non_params=lambda _: replicated)
