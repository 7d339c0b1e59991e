"""The train state, its layout, and its creation already sharded.

Creation follows big_vision: shapes and shardings first (the parameters' and the
ModelState's from `model/partitioning.py`, the optimizer state's from the
parameters'), then `jax.jit(init, out_shardings=...)`, so no parameter is ever
materialised on one device first.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from memorizing_jax.model import partitioning
from memorizing_jax.model import state as model_state_lib
from memorizing_jax.model.config import ModelConfig
from memorizing_jax.train.partitioner import Partitioner, param_shardings_for_optimizer


@flax.struct.dataclass
class TrainState:
  """Everything a training step reads and writes; all of it is checkpointed.

  Attributes:
    step: [] int32, updates done so far.
    params: the model's parameters (plain arrays, float32).
    opt_state: the optimizer's state.
    model_state: the `ModelState` (XL caches and memories) of the training rows,
      carried from one step to the next.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  model_state: Any


class StateLayout(NamedTuple):
  """The abstract train state (ShapeDtypeStructs carrying shardings) and its shardings."""

  abstract: TrainState
  shardings: TrainState


def _fresh_train_state(params: Any, tx: optax.GradientTransformation,
                       model_state: Any) -> TrainState:
  """Step 0 around `params` and `model_state`: the optimizer's state initialised."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    model_state=model_state)


def train_state_layout(config: ModelConfig, tx: optax.GradientTransformation,
                       batch_size: int, partitioner: Partitioner) -> StateLayout:
  """The abstract train state and the sharding of every leaf.

  Args:
    batch_size: the global number of rows; sizes the ModelState
      ([batch_size, heads, memory_slots, head_dim] memories).
  """
  mesh, rules = partitioner.mesh, partitioner.rules
  params = partitioning.param_layout(config, mesh, rules)
  model_state = partitioning.state_layout(config, batch_size, mesh, rules)
  abstract = jax.eval_shape(lambda p, m: _fresh_train_state(p, tx, m), params, model_state)
  params_sh = partitioning.shardings_of(params)
  replicated = partitioner.replicated()
  shardings = TrainState(
      step=replicated,
      params=params_sh,
      opt_state=param_shardings_for_optimizer(tx, abstract.opt_state, abstract.params,
                                              params_sh, replicated),
      model_state=partitioning.shardings_of(model_state))
  return StateLayout(abstract=partitioning.with_shardings(abstract, shardings),
                     shardings=shardings)


def create_train_state(config: ModelConfig, tx: optax.GradientTransformation,
                       batch_size: int, layout: StateLayout, seed: int) -> TrainState:
  """A fresh train state, created directly in its shardings."""
  def init(rng):
    params = nn.unbox(partitioning.init_boxed_params(config, rng))
    return _fresh_train_state(params, tx, model_state_lib.init_state(config, batch_size))

  return jax.jit(init, out_shardings=layout.shardings)(jax.random.key(seed))


def fresh_model_state(config: ModelConfig, batch_size: int, shardings: Any) -> Any:
  """An empty ModelState (new documents everywhere), created in its shardings."""
  return jax.jit(lambda: model_state_lib.init_state(config, batch_size),
                 out_shardings=shardings)()
