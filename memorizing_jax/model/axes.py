"""Logical axis names -> mesh axes: the rule list, and the fit of a spec to a shape.

Parameters and state carry logical names (`batch`, `heads`, `memory_slots`, ...).
One rule list (t5x / MaxText style) maps them onto a mesh with axes `data` and
`model` (and the memory's slots onto `memory`); a mesh axis that does not divide an array's dimension is dropped for that
array (the dimension is replicated). The trainer and the model's kNN layer both
place the memory with `fit_spec`, so the shards the model works on inside
`jax.shard_map` are the ones the state already lives in.
"""
from __future__ import annotations

import contextvars
import functools
import math
from typing import Callable, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax
from jax.sharding import Mesh, PartitionSpec

Rules = Sequence[Tuple[str, Optional[str]]]

# Batch rows over `data`; heads, MLP and vocabulary over `model` (Megatron-style);
# the memory follows its rows and heads, so each device looks up in its own heads'
# memories, and its slots go over `memory` (size 1 unless a memory is split).
DEFAULT_LOGICAL_AXIS_RULES: Rules = (
    ("batch", "data"),
    ("length", None),
    ("embed", None),
    ("heads", "model"),
    ("kv", None),
    ("mlp", "model"),
    ("vocab", "model"),
    ("memory_slots", "memory"),
    ("relpos_buckets", None),
)

# The logical names of a memory's keys and values: [batch, heads, slots, head_dim].
MEMORY_AXES = ("batch", "heads", "memory_slots", "kv")


def mesh_axes_of(entry) -> Tuple[str, ...]:
  """The mesh axes of one PartitionSpec entry (None, a name, or a tuple of names)."""
  if entry is None:
    return ()
  return tuple(entry) if isinstance(entry, (tuple, list)) else (entry,)


def fit_spec(spec: PartitionSpec, shape: Sequence[int], axis_sizes: Mapping[str, int]
             ) -> Tuple[PartitionSpec, list]:
  """`spec` without the mesh axes that do not divide their dimension of `shape`.

  Args:
    spec: a PartitionSpec of mesh axis names (shorter than `shape` is allowed).
    shape: the array's shape.
    axis_sizes: {mesh axis: devices}; axes missing here are dropped too.
  Returns:
    (the fitted PartitionSpec, [(dimension size, dropped axes), ...] for logging).
  """
  entries = tuple(spec) + (None,) * (len(shape) - len(spec))
  fitted, dropped = [], []
  for size, entry in zip(shape, entries):
    axes = mesh_axes_of(entry)
    devices = math.prod(axis_sizes.get(a, 0) for a in axes)
    if axes and (devices == 0 or size % devices):
      dropped.append((size, axes))
      entry = None
    fitted.append(entry)
  return PartitionSpec(*fitted), dropped


# The rules `in_mesh` traces with. Kept apart from flax's own rules context, which
# would also constrain every parameter's sharding inside the model.
_RULES: contextvars.ContextVar[Rules] = contextvars.ContextVar(
    "logical_axis_rules", default=DEFAULT_LOGICAL_AXIS_RULES)


def _current_rules() -> Rules:
  """The rules of the enclosing `in_mesh`, else the defaults."""
  return _RULES.get()


def ambient_spec(logical_names: Sequence[str], shape: Sequence[int]) -> Optional[PartitionSpec]:
  """Where an array with these logical axis names lives on the ambient mesh.

  The ambient mesh is the one set by `jax.set_mesh` (or, while tracing,
  `jax.sharding.use_abstract_mesh`); the rules are the current ones. Returns None
  when there is no mesh.
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return None
  spec = nn.logical_to_mesh_axes(tuple(logical_names), _current_rules())
  return fit_spec(spec, shape, dict(mesh.shape))[0]


def in_mesh(fn: Callable, mesh: Mesh, rules: Rules = DEFAULT_LOGICAL_AXIS_RULES) -> Callable:
  """`fn`, run with `mesh` as the ambient mesh and `rules` as the logical-axis rules.

  Meant for a function that `jax.jit` traces (a training or evaluation step): the
  kNN layer then finds the mesh while tracing (`ambient_spec`) and keeps the
  memory on its shards, whatever mesh, if any, the caller has set.
  """
  @functools.wraps(fn)
  def traced(*args, **kwargs):
    token = _RULES.set(tuple(rules))
    try:
      with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
        return fn(*args, **kwargs)
    finally:
      _RULES.reset(token)
  # jit names the program after the function: keep the step's own name.
  traced.__name__ = getattr(fn, "__name__", None) or getattr(fn, "func", fn).__name__
  return traced
