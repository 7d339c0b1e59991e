"""The pure training and evaluation steps, and their jit wiring.

`train_step(state, batch) -> (state, metrics)` and
`eval_step(params, model_state, batch) -> (model_state, metrics)` are pure; the
ModelState (XL caches and memories) is an input and an output, donated so that it
stays on device and is updated in place. Metrics are small device arrays: sums
(of losses, correct predictions, tokens) so that they add up across steps, plus
the learning rate, the gradient norm and the memory diagnostics. Each target's
loss is `model.scoring.score_segment`'s, the per-token core evaluation and the
notebook API read too.

A batch is a dict of [batch, length] arrays `inputs`, `targets` (int32) and
`loss_mask` (float32), and [batch] `start_of_sequence` (bool).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, NamedTuple, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from memorizing_jax.model import scoring, sown_by_layer
from memorizing_jax.train.partitioner import Partitioner
from memorizing_jax.train.train_state import TrainState

Metrics = Dict[str, jax.Array]


def token_sums(nll: jax.Array, predictions: jax.Array, targets: jax.Array,
               loss_mask: jax.Array) -> Metrics:
  """Summed loss, correct predictions and tokens over the masked positions.

  Args:
    nll: [batch, length] float32 each target's loss (`scoring.SegmentScores.nll`).
    predictions: [batch, length] int32 the most likely next tokens.
    targets: [batch, length] int32.
    loss_mask: [batch, length] float32, 1 where the token counts.
  Returns:
    {"loss_sum", "correct", "tokens"}, each [] float32.
  """
  correct = (predictions == targets).astype(jnp.float32)
  return {"loss_sum": jnp.sum(nll * loss_mask),
          "correct": jnp.sum(correct * loss_mask),
          "tokens": jnp.sum(loss_mask)}


def summarize_diagnostics(diagnostics: Any) -> Metrics:
  """Scalars from the kNN layers' sown diagnostics (see model/knn_attention.py).

  Per kNN layer i (as `memory/layer_<i>/...`): the gate per head, the mean share of
  the output that comes from memory, the memory fill, and the mean distance in
  tokens from a query to what it retrieved (over queries that found anything).
  """
  out = {}
  for index, sown in sown_by_layer(diagnostics).items():
    name = f"memory/layer_{index}"
    for head in range(sown["gate"].shape[0]):
      out[f"{name}/gate_head{head}"] = sown["gate"][head]
    out[f"{name}/memory_share"] = jnp.mean(sown["memory_share"])
    out[f"{name}/memory_fill"] = jnp.mean(sown["memory_fill"])
    distance = sown["mean_distance"]
    found = (distance > 0).astype(jnp.float32)
    out[f"{name}/mean_distance"] = jnp.sum(distance) / jnp.maximum(jnp.sum(found), 1.0)
  return out


def train_step(state: TrainState, batch: Dict[str, jax.Array], *, model: nn.Module,
               tx: optax.GradientTransformation, schedule: Callable[[Any], jax.Array],
               dropout_seed: int, use_dropout: bool) -> Tuple[TrainState, Metrics]:
  """One update on one segment per row. Pure: the same inputs give the same outputs.

  The dropout key is derived from (dropout_seed, step), so a resumed run draws
  the same masks as an uninterrupted one.
  """
  dropout_rng = (jax.random.fold_in(jax.random.key(dropout_seed), state.step)
                 if use_dropout else None)

  def loss_fn(params):
    scores = scoring.score_segment(model, params, state.model_state, batch["inputs"],
                                   batch["targets"], batch["start_of_sequence"],
                                   diagnostics=True, dropout_rng=dropout_rng)
    sums = token_sums(scores.nll, scores.predictions, batch["targets"], batch["loss_mask"])
    loss = sums["loss_sum"] / jnp.maximum(sums["tokens"], 1.0)
    return loss, (scores.state, sums, scores.diagnostics)

  grads, (new_model_state, sums, diagnostics) = jax.grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(sums, grad_norm=optax.tree.norm(grads), learning_rate=schedule(state.step),
                 **summarize_diagnostics(diagnostics))
  new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state,
                         model_state=new_model_state)
  return new_state, metrics


def eval_step(params: Any, model_state: Any, batch: Dict[str, jax.Array], *,
              model: nn.Module) -> Tuple[Any, Metrics]:
  """Scores one segment per row without dropout; returns (new model state, sums)."""
  scores = scoring.score_segment(model, params, model_state, batch["inputs"], batch["targets"],
                                 batch["start_of_sequence"], diagnostics=True)
  sums = token_sums(scores.nll, scores.predictions, batch["targets"], batch["loss_mask"])
  return scores.state, dict(sums, **summarize_diagnostics(scores.diagnostics))


class CompiledSteps(NamedTuple):
  """The jitted steps. `train(state, batch)`, `evaluate(params, model_state, batch)`."""

  train: Callable[..., Tuple[TrainState, Metrics]]
  evaluate: Callable[..., Tuple[Any, Metrics]]


def batch_shardings(partitioner: Partitioner) -> Dict[str, Any]:
  rows = partitioner.sharding(jax.sharding.PartitionSpec("batch"))
  tokens = partitioner.sharding(jax.sharding.PartitionSpec("batch", None))
  return {"inputs": tokens, "targets": tokens, "loss_mask": tokens, "start_of_sequence": rows}


def abstract_batch(partitioner: Partitioner, batch_size: int, segment_length: int
                   ) -> Dict[str, jax.ShapeDtypeStruct]:
  """The shapes, dtypes and shardings of a batch, to lower a step without data."""
  shardings = batch_shardings(partitioner)
  tokens = (batch_size, segment_length)
  shapes = {"inputs": (tokens, jnp.int32), "targets": (tokens, jnp.int32),
            "loss_mask": (tokens, jnp.float32), "start_of_sequence": ((batch_size,), bool)}
  return {name: jax.ShapeDtypeStruct(shape, dtype, sharding=shardings[name])
          for name, (shape, dtype) in shapes.items()}


def jit_steps(model: nn.Module, tx: optax.GradientTransformation,
              schedule: Callable[[Any], jax.Array], partitioner: Partitioner,
              state_shardings: TrainState, eval_state_shardings: Any, *, dropout_seed: int,
              use_dropout: bool) -> CompiledSteps:
  """jax.jit with explicit shardings; the train state and eval ModelState are donated."""
  replicated = partitioner.replicated()
  batch_sh = batch_shardings(partitioner)
  train = jax.jit(
      partitioner.in_mesh(functools.partial(train_step, model=model, tx=tx, schedule=schedule,
                                            dropout_seed=dropout_seed, use_dropout=use_dropout)),
      in_shardings=(state_shardings, batch_sh),
      out_shardings=(state_shardings, replicated),
      donate_argnums=(0,))
  evaluate = jax.jit(
      partitioner.in_mesh(functools.partial(eval_step, model=model)),
      in_shardings=(state_shardings.params, eval_state_shardings, batch_sh),
      out_shardings=(eval_state_shardings, replicated),
      donate_argnums=(1,))
  return CompiledSteps(train=train, evaluate=evaluate)
