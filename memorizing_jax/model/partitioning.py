"""The layout of the model's arrays: abstract params and ModelState, and their shardings.

Parameters carry logical names through `nn.with_logical_partitioning`; the state's
names come from `state.state_logical_axes`. The rule list that maps them onto a
mesh with axes `data` and `model` lives in `axes`. This module is the one place
that computes the abstract parameters and state (`jax.eval_shape`) and their
shardings fitted to their shapes (`param_layout`, `state_layout`): the trainer
(`train/train_state.py`, `train/aot.py`) and the inference loader take theirs
from here.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from memorizing_jax.model.axes import DEFAULT_LOGICAL_AXIS_RULES, Rules, fit_spec, mesh_axes_of
from memorizing_jax.model.config import ModelConfig
from memorizing_jax.model.state import ModelState, init_state, state_logical_axes
from memorizing_jax.model.transformer import MemorizingTransformer


def logical_to_shardings(logical_tree: Any, mesh: Mesh,
                         rules: Rules = DEFAULT_LOGICAL_AXIS_RULES) -> Any:
  """Turns a tree of `PartitionSpec`s of logical names into `NamedSharding`s.

  A rule naming a mesh axis this mesh lacks (e.g. `memory` on a data x model mesh)
  maps its logical axis to None: that dimension is not split.
  """
  rules = tuple((name, _on_mesh(axis, mesh)) for name, axis in rules)
  return nn.logical_to_mesh_sharding(logical_tree, mesh, rules)


def _on_mesh(axis, mesh: Mesh):
  """A rule's mesh axis (None, a name or a tuple of names) without the axes `mesh`
  lacks."""
  kept = tuple(a for a in mesh_axes_of(axis) if a in mesh.axis_names)
  return None if not kept else kept[0] if len(kept) == 1 else kept


def fit_shardings(shardings: Any, abstract: Any) -> Any:
  """`shardings` without the mesh axes that do not divide their array's dimension
  (`axes.fit_spec`): that dimension is replicated instead, and a warning says so.

  A 259-entry byte vocabulary cannot be split over 2 devices; rather than fail,
  that dimension is replicated.

  Args:
    shardings: `NamedSharding`s.
    abstract: the same tree of arrays or `jax.ShapeDtypeStruct`s (their shapes).
  """
  dropped_dims = {}

  def fit_one(sharding: NamedSharding, leaf) -> NamedSharding:
    spec, dropped = fit_spec(sharding.spec, leaf.shape, dict(sharding.mesh.shape))
    for size, mesh_axes in dropped:
      dropped_dims[(size, tuple(leaf.shape), mesh_axes)] = None
    return NamedSharding(sharding.mesh, spec)

  fitted = jax.tree.map(fit_one, shardings, abstract)
  for size, shape, mesh_axes in dropped_dims:
    logging.warning("dimension of size %d of an array of shape %s does not divide over "
                    "mesh axes %s: replicated instead", size, shape, mesh_axes)
  return fitted


def with_shardings(abstract: Any, shardings: Any) -> Any:
  """`abstract`'s `jax.ShapeDtypeStruct`s, each carrying its sharding from `shardings`."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract, shardings)


def shardings_of(abstract: Any) -> Any:
  """The shardings that `abstract`'s leaves carry (same tree)."""
  return jax.tree.map(lambda a: a.sharding, abstract)


def init_boxed_params(config: ModelConfig, rng: jax.Array, batch_size: int = 1) -> Any:
  """Initialised parameters, boxed (`nn.LogicallyPartitioned`, carrying their logical
  axis names), from `model.init` on [batch_size, segment_length] tokens (the batch
  size does not change them)."""
  tokens = jnp.zeros((batch_size, config.segment_length), jnp.int32)
  return MemorizingTransformer(config).init(rng, tokens, init_state(config, batch_size),
                                            jnp.ones((batch_size,), bool))["params"]


def _abstract_boxed_params(config: ModelConfig) -> Any:
  """`init_boxed_params`' shapes, dtypes and logical names, computing nothing."""
  return jax.eval_shape(lambda: init_boxed_params(config, jax.random.key(0)))


def param_logical_axes(config: ModelConfig) -> Any:
  """`PartitionSpec`s of logical names for every parameter (same tree as params)."""
  return nn.get_partition_spec(_abstract_boxed_params(config))


def param_layout(config: ModelConfig, mesh: Optional[Mesh] = None,
                 rules: Rules = DEFAULT_LOGICAL_AXIS_RULES) -> Any:
  """The parameters as `jax.ShapeDtypeStruct`s (unboxed), each carrying its sharding
  on `mesh` by `rules`, fitted to its shape (`fit_shardings`); without `mesh`, no
  sharding. The one place the parameters' layout comes from (training, inference)."""
  boxed = _abstract_boxed_params(config)
  abstract = nn.unbox(boxed)
  if mesh is None:
    return abstract
  shardings = logical_to_shardings(nn.get_partition_spec(boxed), mesh, rules)
  return with_shardings(abstract, fit_shardings(shardings, abstract))


def param_shardings(config: ModelConfig, mesh: Mesh,
                    rules: Rules = DEFAULT_LOGICAL_AXIS_RULES) -> Any:
  """`NamedSharding`s of the params on `mesh`, fitted (tree of the unboxed params)."""
  return shardings_of(param_layout(config, mesh, rules))


def state_layout(config: ModelConfig, batch_size: int, mesh: Optional[Mesh] = None,
                 rules: Rules = DEFAULT_LOGICAL_AXIS_RULES) -> ModelState:
  """A `ModelState` of `batch_size` rows as `jax.ShapeDtypeStruct`s, each carrying its
  sharding on `mesh` by `rules` fitted to its shape, as the model places it
  (`axes.ambient_spec`); without `mesh`, no sharding. Memory keys and values:
  [batch_size, heads, memory_slots, head_dim]; XL cache keys and values:
  [batch_size, heads, segment_length, head_dim]."""
  abstract = jax.eval_shape(lambda: init_state(config, batch_size))
  if mesh is None:
    return abstract
  shardings = logical_to_shardings(state_logical_axes(config), mesh, rules)
  return with_shardings(abstract, fit_shardings(shardings, abstract))


def state_shardings(config: ModelConfig, mesh: Mesh,
                    rules: Rules = DEFAULT_LOGICAL_AXIS_RULES,
                    batch_size: Optional[int] = None) -> ModelState:
  """`NamedSharding`s of every `ModelState` leaf on `mesh`.

  Given `batch_size`, fitted to a state of that many rows (`state_layout`): a mesh
  axis that does not divide a leaf's dimension is dropped there, as the model does.
  Without it, the shardings of the logical names as they are.
  """
  if batch_size is None:
    return logical_to_shardings(state_logical_axes(config), mesh, rules)
  return shardings_of(state_layout(config, batch_size, mesh, rules))


def batch_sharding(mesh: Mesh, ndim: int,
                   rules: Rules = DEFAULT_LOGICAL_AXIS_RULES) -> NamedSharding:
  """Sharding of an input whose first axis is the batch (tokens, flags, masks)."""
  spec = PartitionSpec("batch", *([None] * (ndim - 1)))
  return logical_to_shardings(spec, mesh, rules)


def init_params(config: ModelConfig, rng: jax.Array, batch_size: int = 1,
                mesh: Optional[Mesh] = None,
                rules: Rules = DEFAULT_LOGICAL_AXIS_RULES) -> Any:
  """Initialised, unboxed params (`init_boxed_params`); created already sharded
  (`param_shardings`) when `mesh` is given."""
  def init(key):
    return nn.meta.unbox(init_boxed_params(config, key, batch_size))

  if mesh is None:
    return jax.jit(init)(rng)
  return jax.jit(init, out_shardings=param_shardings(config, mesh, rules))(rng)
