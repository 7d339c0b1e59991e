"""Scores a trained run on its eval split, from a fresh model state.

Beyond the trainer's evaluation (perplexity over all tokens), this reports, on the
synthetic recall task (`data/synthetic.py`), accuracy on each kind of value token
(definitions, uses whose source is inside the XL window, uses whose source is
beyond it) and, for models with memory, how often the kNN layer's retrieval lands
on the source: the share of far uses for which some head's highest-weighted
retrieved entry lies in the name's previous statement.

Given `position_edges`, it also splits perplexity by a target's position in its
document (how many of the document's tokens precede it), so a memory of M tokens
can be judged on the tokens where it can hold more than a smaller one.

    result = evaluate_run(workdir, model_cfg, data_cfg, optimizer_cfg, mesh_cfg,
                          trainer_cfg, max_batches=None, position_edges=(1536, 8192))
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable, Dict, List, Optional, Sequence

import flax.linen as nn
import flax.traverse_util
from etils import epath
import jax
import jax.numpy as jnp
import numpy as np

from memorizing_jax.data import repeats
from memorizing_jax.data import synthetic

KINDS = (synthetic.DEFINITION, synthetic.NEAR, synthetic.FAR)


@dataclasses.dataclass
class RecallCounts:
  """Running counts over value tokens of the synthetic task.

  Attributes:
    total, correct: {kind: count} for kinds DEFINITION, NEAR, FAR.
    far_retrieval_hits: far uses whose source statement held the top retrieved
      entry of some head (counted only when retrievals are given).
    far_with_retrieval: far uses counted for retrieval hits.
  """

  total: Dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(KINDS, 0))
  correct: Dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(KINDS, 0))
  far_retrieval_hits: int = 0
  far_with_retrieval: int = 0

  def accuracy(self, kind: str) -> Optional[float]:
    return self.correct[kind] / self.total[kind] if self.total[kind] else None

  def retrieval_hit_rate(self) -> Optional[float]:
    return (self.far_retrieval_hits / self.far_with_retrieval
            if self.far_with_retrieval else None)


def count_recalls(counts: RecallCounts, predictions: np.ndarray, document_id: np.ndarray,
                  token_offset: np.ndarray, recalls: Sequence[Sequence[synthetic.Recall]],
                  segment_length: int, statement_length: int, value_index: int,
                  top_positions: Optional[np.ndarray] = None) -> None:
  """Adds one batch's value tokens to `counts`.

  Args:
    predictions: [batch, length] the model's argmax next-token ids.
    document_id: [batch] the document each row reads (-1: padding row).
    token_offset: [batch] document index of each row's first target.
    recalls: per document id, its `synthetic.annotate` list (character = token).
    segment_length: L of the stream (decides near / far).
    statement_length, value_index: characters per statement, and the value's index
      in it (the extent of a source statement).
    top_positions: [batch, heads, length] memory position (input index) of each
      head's highest-weighted retrieved entry, -1 where none; None without memory.
  Predictions are compared with the document's own characters, through the byte
  vocabulary's id offset of 3 (`seqio.ByteVocabulary`).
  """
  length = predictions.shape[1]
  for row, doc in enumerate(np.asarray(document_id).tolist()):
    if doc < 0:
      continue
    start = int(token_offset[row])
    for recall in recalls[doc]:
      j = recall.position - start
      if not 0 <= j < length:
        continue
      kind = synthetic.classify(recall, segment_length)
      counts.total[kind] += 1
      counts.correct[kind] += int(predictions[row, j] == _BYTE_IDS[recall.value])
      if kind == synthetic.FAR and top_positions is not None:
        # The source statement's characters, as input indices (character + 1).
        first = recall.source + 1 - value_index
        last = first + statement_length - 1
        tops = top_positions[row, :, j]
        counts.far_with_retrieval += 1
        counts.far_retrieval_hits += int(np.any((tops >= first) & (tops <= last)))


# Byte-vocabulary ids of the value letters (seqio.ByteVocabulary: byte + 3).
_BYTE_IDS = {c: ord(c) + 3 for c in synthetic.VALUES}


def _top_retrieved(diagnostics: Any) -> Optional[jax.Array]:
  """[batch, heads, length] position of each head's top-weighted retrieval (-1: none),
  from the first kNN layer's sown diagnostics; None for a model without memory."""
  flat = flax.traverse_util.flatten_dict(nn.unbox(diagnostics), sep="/")
  layers = sorted(k[:-len("/retrieved_positions")] for k in flat
                  if k.endswith("/retrieved_positions"))
  if not layers:
    return None
  positions = flat[layers[0] + "/retrieved_positions"]
  weights = flat[layers[0] + "/retrieved_weights"]
  valid = flat[layers[0] + "/retrieved_valid"]
  best = jnp.argmax(jnp.where(valid, weights, -1.0), axis=-1)
  top = jnp.take_along_axis(positions, best[..., None], axis=-1)[..., 0]
  return jnp.where(jnp.any(valid, axis=-1), top, -1)


def bucket_sums(nll: np.ndarray, loss_mask: np.ndarray, bucket: np.ndarray,
                num_buckets: int) -> tuple[np.ndarray, np.ndarray]:
  """Loss and target counts of one batch per bucket.

  Args:
    nll: [batch, length] each target's negative log-likelihood.
    loss_mask: [batch, length] 1 on real targets.
    bucket: [batch, length] int in [0, num_buckets), each target's bucket.
  Returns:
    (loss sums [num_buckets], target counts [num_buckets]), both float64.
  """
  mask = np.asarray(loss_mask, np.float64).ravel()
  weighted = np.asarray(nll, np.float64).ravel() * mask
  bucket = np.asarray(bucket).ravel()
  return (np.bincount(bucket, weights=weighted, minlength=num_buckets),
          np.bincount(bucket, weights=mask, minlength=num_buckets))


def position_sums(nll: np.ndarray, loss_mask: np.ndarray, token_offset: np.ndarray,
                  edges: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
  """`bucket_sums` by position in the document: bucket 0 is [0, e_1), bucket i is
  [e_i, e_{i+1}), bucket k is [e_k, inf), for increasing `edges` e_1 < ... < e_k and
  `token_offset` [batch], the position in its document of each row's first target."""
  length = nll.shape[1]
  positions = np.asarray(token_offset, np.int64)[:, None] + np.arange(length)[None, :]
  bucket = np.searchsorted(np.asarray(edges, np.int64), positions, side="right")
  return bucket_sums(nll, loss_mask, bucket, len(edges) + 1)


def copy_source_sums(nll: np.ndarray, loss_mask: np.ndarray, document_id: np.ndarray,
                     token_offset: np.ndarray, bands: Callable[[int], np.ndarray],
                     num_bands: int) -> tuple[np.ndarray, np.ndarray]:
  """`bucket_sums` by where copying would find each target (`repeats.copy_bands`):
  bucket 0 where it would not find it, bucket k where it would, in distance band k.

  Args:
    document_id, token_offset: [batch] each row's document (-1: padding row) and the
      position in it of the row's first target.
    bands: document id -> [document length] its `repeats.copy_bands`. Targets past
      the document's tokens (its end-of-document token) fall in bucket 0.
    num_bands: len(edges) + 1 of those bands.
  """
  length = nll.shape[1]
  bucket = np.zeros(nll.shape, np.int64)
  for row, doc in enumerate(np.asarray(document_id).tolist()):
    if doc < 0:
      continue
    doc_bands = bands(doc)
    positions = int(token_offset[row]) + np.arange(length)
    inside = positions < len(doc_bands)
    bucket[row, inside] = doc_bands[positions[inside]]
  return bucket_sums(nll, loss_mask, bucket, num_bands + 1)


def position_buckets(loss_sums: np.ndarray, counts: np.ndarray, edges: Sequence[int]
                     ) -> List[Dict[str, Any]]:
  """[{"start", "end" (None: no end), "tokens", "perplexity" (None: no tokens)}]."""
  bounds = [0, *edges, None]
  return [{"start": int(bounds[i]), "end": None if bounds[i + 1] is None else int(bounds[i + 1]),
           "tokens": int(counts[i]), "perplexity": _perplexity(loss_sums[i], counts[i])}
          for i in range(len(edges) + 1)]


def copy_source_buckets(loss_sums: np.ndarray, counts: np.ndarray, edges: Sequence[int]
                        ) -> List[Dict[str, Any]]:
  """Like `position_buckets` for `copy_source_sums`: first {"start": None, "end": None}
  for targets copying would not find, then the distance bands (0, e_1], ..., (e_k, inf)
  (as "start", "end")."""
  none = {"start": None, "end": None, "tokens": int(counts[0]),
          "perplexity": _perplexity(loss_sums[0], counts[0])}
  return [none] + position_buckets(loss_sums[1:], counts[1:], edges)


def _perplexity(loss_sum: float, count: float) -> Optional[float]:
  return math.exp(loss_sum / count) if count else None


def make_eval_apply(model: nn.Module):
  """jitted (params, state, inputs, targets, loss_mask, sos) -> (state, sums, argmax, top);
  sums holds the batch's totals and "nll", each target's masked loss [batch, length]."""

  def apply(params, state, inputs, targets, loss_mask, start_of_sequence):
    (logits, new_state), variables = model.apply(
        {"params": params}, inputs, state, start_of_sequence, deterministic=True,
        mutable=["diagnostics"])
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    predictions = jnp.argmax(logits, axis=-1)
    sums = {"loss_sum": jnp.sum(nll * loss_mask), "tokens": jnp.sum(loss_mask),
            "correct": jnp.sum((predictions == targets) * loss_mask),
            "nll": nll * loss_mask}
    return new_state, sums, predictions, _top_retrieved(variables.get("diagnostics", {}))

  return jax.jit(apply, donate_argnums=(1,))


def evaluate_run(workdir: str, model_config, data_config, optimizer_config, mesh_config,
                 trainer_config, max_batches: Optional[int] = None,
                 position_edges: Sequence[int] = (), step: Optional[int] = None,
                 copy_edges: Sequence[int] = (), copy_context: int = repeats.COPY_CONTEXT
                 ) -> Dict[str, Any]:
  """Scores the checkpoint of `workdir` at `step` (default: the latest) on the eval split.

  Args:
    position_edges: increasing positions in the document (tokens before a target);
      when given, the result also splits perplexity by them (see `position_sums`).
    copy_edges: increasing distances; when given, the result also splits perplexity
      by how far back copying after the most recent occurrence of the target's
      `copy_context` preceding tokens would find it (see `copy_source_sums`).
  Returns:
    {"step", "perplexity", "loss", "accuracy", "tokens"}; with position_edges,
    "by_position" (see `position_buckets`); with copy_edges, "by_copy_source" (see
    `copy_source_buckets`) and "copy_context"; on the synthetic
    task, "accuracy_<kind>" and "count_<kind>" per kind, "chance", and for models
    with memory "far_retrieval_hit_rate".
  """
  edges = list(position_edges)
  for name, values in (("position_edges", edges), ("copy_edges", list(copy_edges))):
    if values != sorted(set(values)) or any(e <= 0 for e in values):
      raise ValueError(f"{name} must be increasing and positive, got {tuple(values)}")
  from memorizing_jax.train import checkpoints as checkpoints_lib  # pylint: disable=g-import-not-at-top
  from memorizing_jax.train import inputs as inputs_lib  # pylint: disable=g-import-not-at-top
  from memorizing_jax.train import loop  # pylint: disable=g-import-not-at-top
  from memorizing_jax.train import train_state as train_state_lib  # pylint: disable=g-import-not-at-top

  folder = os.path.join(workdir, "checkpoints")
  steps = []
  if epath.Path(folder).is_dir():  # (opening a Checkpointer would create the folder)
    checkpointer = checkpoints_lib.Checkpointer(folder, asynchronous=False)
    steps = checkpointer.all_steps()
    checkpointer.close()
  if not steps:
    raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints")
  if step is None:
    step = max(steps)
  elif step not in steps:
    raise FileNotFoundError(f"no checkpoint at step {step} in {workdir}/checkpoints; it "
                            f"has steps {sorted(steps)}")
  vocabulary = inputs_lib.load_vocabulary(data_config)
  run = loop.build_run(model_config, data_config, optimizer_config, mesh_config,
                       trainer_config)
  # Only the parameters: the optimizer state is not needed (nor its layout).
  params, loaded = checkpoints_lib.load_matching_params(
      os.path.join(workdir, "checkpoints", str(step)), run.layout.abstract.params,
      run.layout.shardings.params)
  if loaded["initialized"] or loaded["mismatched"]:
    raise ValueError(f"the checkpoint {workdir}/{step} lacks parameters of the configured "
                     f"model: {loaded['initialized'] + loaded['mismatched']}")

  reader = _synthetic_reader(data_config.task)
  recalls: List[List[synthetic.Recall]] = []
  if reader is not None:
    recalls = [synthetic.annotate(d.text)
               for d in reader.documents(data_config.eval_split)]
  counts = RecallCounts()
  apply = make_eval_apply(run.model)
  model_state = train_state_lib.fresh_model_state(model_config, data_config.eval_batch_size,
                                                  run.eval_state_shardings)
  stream = inputs_lib.make_stream(data_config, model_config.segment_length, vocabulary,
                                  mode="eval")
  loss_sum = tokens = correct = 0.0
  bucket_loss = np.zeros(len(edges) + 1)
  bucket_tokens = np.zeros(len(edges) + 1)
  copy_loss = np.zeros(len(copy_edges) + 2)
  copy_tokens = np.zeros(len(copy_edges) + 2)
  bands = _copy_bands_of_split(data_config, vocabulary, copy_context, copy_edges)
  for i, batch in enumerate(stream):
    if max_batches is not None and i >= max_batches:
      break
    device = run.partitioner.global_batch(inputs_lib.model_inputs(batch))
    model_state, sums, predictions, top = apply(
        params, model_state, device["inputs"], device["targets"], device["loss_mask"],
        device["start_of_sequence"])
    sums = jax.device_get(sums)
    loss_sum += float(sums["loss_sum"])
    tokens += float(sums["tokens"])
    correct += float(sums["correct"])
    if edges:
      batch_loss, batch_tokens = position_sums(sums["nll"], batch["loss_mask"],
                                               batch["token_offset"], edges)
      bucket_loss += batch_loss
      bucket_tokens += batch_tokens
    if copy_edges:
      batch_loss, batch_tokens = copy_source_sums(
          sums["nll"], batch["loss_mask"], batch["document_id"], batch["token_offset"],
          bands, len(copy_edges) + 1)
      copy_loss += batch_loss
      copy_tokens += batch_tokens
    if reader is not None:
      count_recalls(counts, np.asarray(predictions), batch["document_id"],
                    batch["token_offset"], recalls, model_config.segment_length,
                    reader.config.statement_length, reader.config.value_index,
                    None if top is None else np.asarray(top))
  loss = loss_sum / max(tokens, 1.0)
  result = {"step": step, "loss": loss, "perplexity": math.exp(loss),
            "accuracy": correct / max(tokens, 1.0), "tokens": int(tokens)}
  if edges:
    result["by_position"] = position_buckets(bucket_loss, bucket_tokens, edges)
  if copy_edges:
    result["by_copy_source"] = copy_source_buckets(copy_loss, copy_tokens, copy_edges)
    result["copy_context"] = copy_context
  if reader is not None:
    for kind in KINDS:
      result[f"accuracy_{kind}"] = counts.accuracy(kind)
      result[f"count_{kind}"] = counts.total[kind]
    result["chance"] = synthetic.CHANCE
    result["far_retrieval_hit_rate"] = counts.retrieval_hit_rate()
  return result


def _copy_bands_of_split(data_config, vocabulary, context: int, edges: Sequence[int]
                         ) -> Callable[[int], np.ndarray]:
  """document id of the eval split -> its `repeats.copy_bands` (computed once each)."""
  from memorizing_jax.data import token_cache  # pylint: disable=g-import-not-at-top
  cache = None
  computed: Dict[int, np.ndarray] = {}

  def bands(document_id: int) -> np.ndarray:
    nonlocal cache
    if cache is None:
      cache = token_cache.load_or_build(data_config.task, data_config.eval_split,
                                        vocabulary, data_config.data_dir, progress=False)
    if document_id not in computed:
      computed[document_id] = repeats.copy_bands(cache.document(document_id), context,
                                                 vocabulary.vocab_size, edges)
    return computed[document_id]

  return bands


def _synthetic_reader(task: str) -> Optional[synthetic.SyntheticReader]:
  from memorizing_jax.data import tasks  # pylint: disable=g-import-not-at-top
  reader = tasks.get_reader(task)
  return reader if isinstance(reader, synthetic.SyntheticReader) else None
