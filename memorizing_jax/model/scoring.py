"""Each target's loss on one segment: the one per-token core of training's steps, the
evaluation command, the study and the notebook API.

`score_segment` runs the model over a segment of each row's document and gives every
target's negative log-likelihood `nll` [batch, length] (not masked: callers weight it
by their `loss_mask`), the most likely next tokens, the new `ModelState` and, when
asked, the kNN layers' sown diagnostics (`knn_attention.DIAGNOSTICS`). The loss is
optax's softmax cross-entropy on float32 logits, as the trainer has always computed
it, so every caller reads the same numbers for the same segment.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from memorizing_jax.model.knn_attention import DIAGNOSTICS
from memorizing_jax.model.state import ModelState


class SegmentScores(NamedTuple):
  """What reading one segment gives.

  Attributes:
    nll: [batch, length] float32 each target's loss in nats (every position, masked
      or not).
    predictions: [batch, length] int32 the most likely next token.
    state: the `ModelState` after the segment.
    diagnostics: the `DIAGNOSTICS` collection the kNN layers sowed (read it with
      `sown_by_layer`); {} unless asked for.
  """

  nll: jax.Array
  predictions: jax.Array
  state: ModelState
  diagnostics: Any


def token_nll(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """[batch, length] -log softmax(logits)[target], nats, computed in float32.

  Args:
    logits: [batch, length, vocab].
    targets: [batch, length] int32.
  """
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)


def score_segment(model: nn.Module, params: Any, state: ModelState, inputs: jax.Array,
                  targets: jax.Array, start_of_sequence: jax.Array, *,
                  diagnostics: bool = False,
                  dropout_rng: Optional[jax.Array] = None) -> SegmentScores:
  """Reads one segment per row and scores its targets. Pure and differentiable in
  `params` (the trainer's loss is `nll` weighted by its mask).

  Args:
    model: the `MemorizingTransformer`.
    params: its parameters.
    state: the `ModelState` after each row's previous segment.
    inputs, targets: [batch, length] int32.
    start_of_sequence: [batch] bool, rows that begin a new document.
    diagnostics: also collect the kNN layers' sown diagnostics.
    dropout_rng: apply dropout with this key; None: deterministic.
  """
  rngs = {"dropout": dropout_rng} if dropout_rng is not None else {}
  out = model.apply({"params": params}, inputs, state, start_of_sequence,
                    deterministic=dropout_rng is None, rngs=rngs,
                    mutable=[DIAGNOSTICS] if diagnostics else False)
  (logits, new_state), variables = out if diagnostics else (out, {})
  return SegmentScores(nll=token_nll(logits, targets),
                       predictions=jnp.argmax(logits, axis=-1).astype(jnp.int32),
                       state=new_state, diagnostics=variables.get(DIAGNOSTICS, {}))
