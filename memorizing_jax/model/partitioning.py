"""Logical axis names -> mesh axes, and the shardings of params, state and inputs.

Parameters carry logical names through `nn.with_logical_partitioning`; the state's
names come from `state.state_logical_axes`. The rule list that maps them onto a
mesh with axes `data` and `model` lives in `axes`.
"""
from __future__ import annotations

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


def abstract_init(config: ModelConfig, batch_size: int) -> Any:
  """Shapes and logical names of the variables, without computing anything.

  Returns the (boxed, `nn.LogicallyPartitioned`) variables of `model.init` as
  `jax.ShapeDtypeStruct`s.
  """
  model = MemorizingTransformer(config)
  tokens = jax.ShapeDtypeStruct((batch_size, config.segment_length), jnp.int32)
  sos = jax.ShapeDtypeStruct((batch_size,), bool)
  state = jax.eval_shape(lambda: init_state(config, batch_size))
  return jax.eval_shape(lambda t, s, f: model.init(jax.random.PRNGKey(0), t, s, f), tokens,
                        state, sos)


def param_logical_axes(config: ModelConfig) -> Any:
  """`PartitionSpec`s of logical names for every parameter (same tree as params)."""
  return nn.get_partition_spec(abstract_init(config, 1))["params"]


def param_shardings(config: ModelConfig, mesh: Mesh,
                    rules: Rules = DEFAULT_LOGICAL_AXIS_RULES) -> Any:
  """`NamedSharding`s of the params on `mesh` (tree of the unboxed params)."""
  return logical_to_shardings(param_logical_axes(config), mesh, rules)


def state_shardings(config: ModelConfig, mesh: Mesh,
                    rules: Rules = DEFAULT_LOGICAL_AXIS_RULES,
                    batch_size: Optional[int] = None) -> ModelState:
  """`NamedSharding`s of every `ModelState` leaf on `mesh`.

  Given `batch_size`, a mesh axis that does not divide a leaf's dimension for a state
  of that many rows is dropped there (`axes.fit_spec`), as the model does.
  """
  shardings = logical_to_shardings(state_logical_axes(config), mesh, rules)
  if batch_size is None:
    return shardings
  abstract = jax.eval_shape(lambda: init_state(config, batch_size))
  return jax.tree.map(
      lambda s, leaf: NamedSharding(mesh, fit_spec(s.spec, leaf.shape, dict(mesh.shape))[0]),
      shardings, abstract)


def batch_sharding(mesh: Mesh, ndim: int,
                   rules: Rules = DEFAULT_LOGICAL_AXIS_RULES) -> NamedSharding:
  """Sharding of an input whose first axis is the batch (tokens, flags, masks)."""
  spec = PartitionSpec("batch", *([None] * (ndim - 1)))
  return logical_to_shardings(spec, mesh, rules)


def init_params(config: ModelConfig, rng: jax.Array, batch_size: int = 1,
                mesh: Optional[Mesh] = None,
                rules: Rules = DEFAULT_LOGICAL_AXIS_RULES) -> Any:
  """Initialised, unboxed params; created already sharded when `mesh` is given."""
  model = MemorizingTransformer(config)

  def init(key):
    tokens = jnp.zeros((batch_size, config.segment_length), jnp.int32)
    variables = model.init(key, tokens, init_state(config, batch_size),
                           jnp.ones((batch_size,), bool))
    return nn.meta.unbox(variables["params"])

  if mesh is None:
    return jax.jit(init)(rng)
  return jax.jit(init, out_shardings=param_shardings(config, mesh, rules))(rng)
