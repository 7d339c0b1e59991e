"""Per-token evaluation of segment batches: each target's loss, with and without memory.

The batches are those of an eval stream (`data/streams.py`): [rows, length] `inputs`,
`targets`, `loss_mask` and [rows] `start_of_sequence`, `document_id`, `token_offset`,
each row reading its documents in order. `score_batches` reads them from a fresh
model state, as training does (XL cache and memory carried from segment to
segment), and yields every target's loss; with `memory_gain` it reads them a
second time with the memory ablated (`ablation.py`), so each target's gain from
memory is its loss without memory minus its loss with it (exactly 0 where the
memory is empty anyway: a document's first segment). Each loss is
`model.scoring.score_segment`'s, the same per-token core as the trainer's steps.

`Tally` adds scored batches up into perplexity, bits per token and accuracy, and
into `Split`s of the targets: by position in the document, by memory gain, or by
any bucket a caller computes (e.g. where copying would find a target).

    tally = Tally([Split.by_position((1536, 8192))])
    for scored in score_batches(config, params, batches, mesh=mesh):
      tally.add(scored)
    tally.result()   # {"loss", "perplexity", "bits_per_token", "accuracy", "tokens", ...}

Nothing here depends on training: the parameters come from `inference.load` (on
any mesh), the batches from any stream. One process: outputs are fetched whole.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional,
                    Sequence, Tuple)

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding

from memorizing_jax.inference import ablation
from memorizing_jax.data.streams import MODEL_INPUTS
from memorizing_jax.model import MemorizingTransformer, ModelConfig, axes, sown_by_layer
from memorizing_jax.model import partitioning, scoring
from memorizing_jax.model.state import init_state

LN2 = math.log(2.0)


@dataclasses.dataclass
class ScoredBatch:
  """One batch of an eval stream and what the model made of it.

  Attributes:
    batch: the host batch as the stream gave it ([rows, length] `targets`,
      `loss_mask`, ...; [rows] `document_id`, `token_offset`, ...).
    nll: [rows, length] float32 each target's loss in nats; 0 where `loss_mask` is 0.
    predictions: [rows, length] int32 the most likely next token.
    nll_without_memory: [rows, length] float32, the same with the memory ablated;
      None unless asked for.
    top_positions: [rows, heads, length] int32 document position (input index) of
      each head's highest-weighted retrieved entry in the first kNN layer, -1 where
      none; None unless asked for, or for a model without memory.
  """

  batch: Mapping[str, np.ndarray]
  nll: np.ndarray
  predictions: np.ndarray
  nll_without_memory: Optional[np.ndarray] = None
  top_positions: Optional[np.ndarray] = None

  @property
  def gain(self) -> Optional[np.ndarray]:
    """[rows, length] loss without memory minus loss with it (0 where masked)."""
    return None if self.nll_without_memory is None else self.nll_without_memory - self.nll


def _top_retrieved(diagnostics: Any) -> Optional[jax.Array]:
  """[batch, heads, length] position of each head's top-weighted retrieval (-1: none),
  from the first kNN layer's sown diagnostics; None for a model without memory."""
  layers = sown_by_layer(diagnostics)
  if not layers:
    return None
  first = next(iter(layers.values()))
  positions, weights, valid = (first[name] for name in ("retrieved_positions",
                                                        "retrieved_weights",
                                                        "retrieved_valid"))
  best = jnp.argmax(jnp.where(valid, weights, -1.0), axis=-1)
  top = jnp.take_along_axis(positions, best[..., None], axis=-1)[..., 0]
  return jnp.where(jnp.any(valid, axis=-1), top, -1)


def _make_eval_apply(model: MemorizingTransformer, mesh: Optional[Mesh] = None,
                     rules: axes.Rules = axes.DEFAULT_LOGICAL_AXIS_RULES,
                     retrievals: bool = False, state_sharding: Any = None) -> Callable:
  """A jitted (params, state, inputs, targets, loss_mask, start_of_sequence) ->
  (state, nll [batch, length] (0 where masked), predictions [batch, length],
  top [batch, heads, length] or None) step; `state` is donated.

  Args:
    mesh: trace with it as the ambient mesh (the memory is looked up where it
      lives); None: no mesh.
    retrievals: also return `_top_retrieved` (otherwise None).
    state_sharding: where the returned state goes (`partitioning.state_shardings`), so
      that the next call finds it where the first one did; None: where jit puts it.
  """

  def apply(params, state, inputs, targets, loss_mask, start_of_sequence):
    scores = scoring.score_segment(model, params, state, inputs, targets, start_of_sequence,
                                   diagnostics=retrievals)
    top = _top_retrieved(scores.diagnostics) if retrievals else None
    new_state = scores.state
    if state_sharding is not None:
      new_state = jax.lax.with_sharding_constraint(new_state, state_sharding)
    return new_state, scores.nll * loss_mask, scores.predictions, top

  if mesh is not None:
    apply = axes.in_mesh(apply, mesh, rules)
  return jax.jit(apply, donate_argnums=(1,))


def _placer(mesh: Optional[Mesh], rules: axes.Rules) -> Callable[[np.ndarray], jax.Array]:
  """Host array [batch, ...] -> device array, its batch axis over `mesh` per `rules`."""
  if mesh is None:
    return jnp.asarray

  def place(x):
    x = np.asarray(x)
    spec = nn.logical_to_mesh_axes(("batch",) + (None,) * (x.ndim - 1), rules)
    spec = axes.fit_spec(spec, x.shape, dict(mesh.shape))[0]
    return jax.make_array_from_process_local_data(NamedSharding(mesh, spec), x)

  return place


def _compile_steps(config: ModelConfig, rows: int, mesh: Optional[Mesh], rules: axes.Rules,
                   retrievals: bool) -> Tuple[Callable, Callable, Callable]:
  """(`_make_eval_apply`'s step, () -> a fresh state, state -> its memories emptied) for
  batches of `rows` rows, the states placed on `mesh`."""
  sharding = None if mesh is None else partitioning.state_shardings(config, mesh, rules,
                                                                      batch_size=rows)
  apply = _make_eval_apply(MemorizingTransformer(config), mesh, rules, retrievals, sharding)
  fresh = jax.jit(lambda: init_state(config, rows), out_shardings=sharding)
  empty = jax.jit(ablation.empty_memories, out_shardings=sharding, donate_argnums=(0,))
  return apply, fresh, empty


def score_batches(config: ModelConfig, params: Any, batches: Iterable[Mapping[str, Any]], *,
                  mesh: Optional[Mesh] = None,
                  rules: axes.Rules = axes.DEFAULT_LOGICAL_AXIS_RULES,
                  memory_gain: bool = False, retrievals: bool = False,
                  max_batches: Optional[int] = None) -> Iterator[ScoredBatch]:
  """Scores `batches` in order from a fresh model state; yields a `ScoredBatch` each.

  Args:
    config: the model's config (its `memory_slots` sizes the memory read with).
    params: its parameters (e.g. `inference.load(workdir, mesh=mesh).params`).
    batches: host batches of an eval stream, all with the same number of rows.
    mesh: where the model state and batches live (axes `data`, `model`); the batch
      size must divide over its `data` axis. None: the default device.
    memory_gain: also read every batch with the memory ablated (twice the work for
      a model with memory).
    retrievals: also give each head's top retrieved position (`ScoredBatch`).
    max_batches: stop after this many batches (None: the whole stream).
  """
  place = _placer(mesh, rules)
  steps = None
  for batch in itertools.islice(batches, max_batches):
    if steps is None:  # sized by the first batch
      apply, fresh, empty = steps = _compile_steps(
          config, int(np.shape(batch["inputs"])[0]), mesh, rules, retrievals)
      state = fresh()
      ablated = fresh() if memory_gain and config.knn_layers else None
    inputs = [place(batch[k]) for k in MODEL_INPUTS]
    state, nll, predictions, top = apply(params, state, *inputs)
    nll = np.asarray(nll)
    without = nll if memory_gain else None  # (without memory layers, nothing to ablate)
    if ablated is not None:
      # The same compiled step on an emptied memory: where the memory is empty in both
      # readings (a document's first segment) the losses agree bit for bit.
      ablated, without, _, _ = apply(params, empty(ablated), *inputs)
      without = np.asarray(without)
    yield ScoredBatch(batch=batch, nll=nll, predictions=np.asarray(predictions),
                      nll_without_memory=without,
                      top_positions=None if top is None else np.asarray(top))


# -- adding up ---------------------------------------------------------------------

Bound = Optional[float]


@dataclasses.dataclass
class Split:
  """Sums of the targets in each bucket of one split.

  Attributes:
    name: the result key ("by_position", ...).
    bounds: [(start, end)] per bucket, as reported (None: open).
    bucket_of: ScoredBatch -> [rows, length] int bucket of each target, in
      [0, len(bounds)).
  """

  name: str
  bounds: List[tuple]
  bucket_of: Callable[[ScoredBatch], np.ndarray]
  sums: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

  @classmethod
  def by_position(cls, edges: Sequence[int]) -> "Split":
    """By a target's position in its document (tokens before it, the end-of-document
    target included): [0, e_1), [e_1, e_2), ..., [e_k, None)."""
    edges = tuple(int(e) for e in edges)
    return cls("by_position", _intervals(0, edges), lambda s: _position_buckets(
        s.batch["token_offset"], s.nll.shape[1], edges))

  @classmethod
  def by_memory_gain(cls, edges: Sequence[float]) -> "Split":
    """By a target's gain from memory, nats: (None, g_1), [g_1, g_2), ..., [g_k, None)."""
    edges = tuple(float(e) for e in edges)
    return cls("by_memory_gain", _intervals(None, edges),
               lambda s: np.searchsorted(np.asarray(edges), s.gain, side="right"))

  @classmethod
  def by_copy_source(cls, edges: Sequence[int], bands: Callable[[int], np.ndarray]
                     ) -> "Split":
    """By where copying would find a target (`copy_source_buckets`): first (None, None)
    for targets it would not find, then the distance bands (0, e_1], ..., (e_k, None)
    as (start, end)."""
    edges = tuple(int(e) for e in edges)
    return cls("by_copy_source", [(None, None)] + _intervals(0, edges),
               lambda s: copy_source_buckets(s.batch["document_id"], s.batch["token_offset"],
                                             s.nll.shape[1], bands))

  def add(self, scored: ScoredBatch) -> None:
    batch_sums = _bucket_sums(scored, self.bucket_of(scored), len(self.bounds))
    for key, value in batch_sums.items():
      self.sums[key] = self.sums.get(key, 0.0) + value

  def rows(self) -> List[Dict[str, Any]]:
    """[{"start", "end", "tokens", "perplexity"}] per bucket (perplexity None without
    tokens); with the memory ablated also "perplexity_without_memory" and
    "gain_share" (the share of its tokens whose loss the memory lowers)."""
    sums = self.sums or _bucket_sums(None, None, len(self.bounds))
    rows = []
    for i, (start, end) in enumerate(self.bounds):
      tokens = float(sums["tokens"][i])
      row = {"start": start, "end": end, "tokens": int(tokens),
             "perplexity": _perplexity(sums["loss"][i], tokens)}
      if "loss_without_memory" in sums:
        row["perplexity_without_memory"] = _perplexity(sums["loss_without_memory"][i], tokens)
        row["gain_share"] = float(sums["gaining"][i]) / tokens if tokens else None
      rows.append(row)
    return rows


def _intervals(first: Bound, edges: Sequence[Any]) -> List[tuple]:
  bounds = [first, *edges, None]
  return [(bounds[i], bounds[i + 1]) for i in range(len(edges) + 1)]


def _perplexity(loss_sum: float, count: float) -> Optional[float]:
  if not count:
    return None
  try:
    return math.exp(loss_sum / count)
  except OverflowError:
    return math.inf


def _position_buckets(token_offset: np.ndarray, length: int, edges: Sequence[int]
                      ) -> np.ndarray:
  """[rows, length] bucket of each target by its position in its document.

  Args:
    token_offset: [rows] the position in its document of each row's first target.
    edges: increasing positions e_1 < ... < e_k; bucket 0 is [0, e_1), bucket i is
      [e_i, e_{i+1}), bucket k is [e_k, inf).
  """
  positions = np.asarray(token_offset, np.int64)[:, None] + np.arange(length)[None, :]
  return np.searchsorted(np.asarray(edges, np.int64), positions, side="right")


def copy_source_buckets(document_id: np.ndarray, token_offset: np.ndarray, length: int,
                        bands: Callable[[int], np.ndarray]) -> np.ndarray:
  """[rows, length] where copying would find each target: 0 where it would not find it,
  k where it would, in distance band k (`data.repeats.copy_bands`).

  Args:
    document_id, token_offset: [rows] each row's document (-1: padding row) and the
      position in it of the row's first target.
    bands: document id -> [document length] its `repeats.copy_bands`. Targets past
      the document's tokens (its end-of-document token) fall in bucket 0.
  """
  bucket = np.zeros((len(document_id), length), np.int64)
  for row, doc in enumerate(np.asarray(document_id).tolist()):
    if doc < 0:
      continue
    doc_bands = bands(doc)
    positions = int(token_offset[row]) + np.arange(length)
    inside = positions < len(doc_bands)
    bucket[row, inside] = doc_bands[positions[inside]]
  return bucket


def _bucket_sums(scored: Optional[ScoredBatch], bucket: Optional[np.ndarray],
                 num_buckets: int) -> Dict[str, np.ndarray]:
  """One batch's sums per bucket, each [num_buckets] float64: "loss", "tokens" and,
  when the batch was also read without memory, "loss_without_memory" and "gaining"
  (tokens whose loss the memory lowers). `scored` None: zeros, without the latter."""
  if scored is None:
    return {"loss": np.zeros(num_buckets), "tokens": np.zeros(num_buckets)}
  mask = np.asarray(scored.batch["loss_mask"], np.float64).ravel()
  bucket = np.asarray(bucket).ravel()

  def total(values):
    return np.bincount(bucket, weights=np.asarray(values, np.float64).ravel() * mask,
                       minlength=num_buckets)

  sums = {"loss": total(scored.nll), "tokens": total(np.ones_like(mask))}
  if scored.nll_without_memory is not None:
    sums["loss_without_memory"] = total(scored.nll_without_memory)
    sums["gaining"] = total(scored.gain > 0)
  return sums


class Tally:
  """Running totals over scored batches, and the splits asked for.

  `result()`: "loss" (nats per token), "perplexity", "bits_per_token", "accuracy",
  "tokens"; for batches read without memory too, "loss_without_memory",
  "perplexity_without_memory" and "gain_share"; and each split's rows under its name.
  """

  def __init__(self, splits: Sequence[Split] = ()):
    self.splits = list(splits)
    self.whole = Split("whole", [(None, None)], lambda s: np.zeros(s.nll.shape, np.int64))
    self.correct = 0.0

  def add(self, scored: ScoredBatch) -> None:
    self.whole.add(scored)
    mask = np.asarray(scored.batch["loss_mask"], np.float64)
    hits = np.asarray(scored.predictions) == np.asarray(scored.batch["targets"])
    self.correct += float(np.sum(hits * mask))
    for split in self.splits:
      split.add(scored)

  def result(self) -> Dict[str, Any]:
    """The figures so far (NaN, or None for the per-bucket figures, without tokens)."""
    whole = self.whole.sums or _bucket_sums(None, None, 1)
    sums = {k: float(v[0]) for k, v in whole.items()}
    tokens = sums["tokens"]
    mean = lambda total: total / tokens if tokens else math.nan
    result = {"loss": mean(sums["loss"]), "perplexity": _perplexity(sums["loss"], tokens) or math.nan,
              "bits_per_token": mean(sums["loss"]) / LN2, "accuracy": mean(self.correct),
              "tokens": int(tokens)}
    if "loss_without_memory" in sums:
      result.update(loss_without_memory=mean(sums["loss_without_memory"]),
                    perplexity_without_memory=_perplexity(sums["loss_without_memory"], tokens),
                    gain_share=sums["gaining"] / tokens if tokens else None)
    for split in self.splits:
      result[split.name] = split.rows()
    return result
