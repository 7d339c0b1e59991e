"""What the trainer reads: the vocabulary and the segment streams of a `DataConfig`
(`memorizing_jax.data.config`).

The streams come from `memorizing_jax.data.pipeline.make_stream`. The documents
are split into `data_shards` shards (by default one per process); each process
reads only its own shards, `batch_size / data_shards` rows each, side by side,
and the partitioner assembles the global batch. Because the shards, not the
processes, fix which rows read which documents, one process reading 2 shards
feeds exactly the global batch that 2 processes reading 1 shard each feed.

Each process tokenises (and caches) only its own shards, in one pass over the
split (`token_cache.load_or_build_shards`): shard s of S holds the documents s,
s + S, s + 2S, ... of the split, the same documents in the same order as when
every process tokenised the whole split and took every S-th, so the data order
is unchanged (except for tasks that drop documents below a minimum length,
`c4_4k`: see `token_cache.py`). An evaluation stream knows only its own shards'
documents, so the processes agree on how many batches all of them yield.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Iterator, Mapping

import numpy as np

# Also how the gin configs of runs trained before DataConfig moved to `data/config.py`
# name it (`inputs.DataConfig`): gin resolves that through this module.
from memorizing_jax.data.config import DataConfig
from memorizing_jax.data.streams import MODEL_INPUTS
from memorizing_jax.train import multihost


def load_vocabulary(config: DataConfig):
  """The task's vocabulary (a SentencePiece model is trained and cached the first time)."""
  # seqio (seconds) only when data is read: `compile` imports the trainer without it.
  from memorizing_jax.data import vocab  # pylint: disable=g-import-not-at-top
  return vocab.get_vocabulary(config.task, kind=config.vocabulary,
                              size=config.vocabulary_size, data_dir=config.data_dir,
                              text_feature=config.text_feature)


class ProcessStream(Iterator[Dict[str, np.ndarray]]):
  """This process's shards read side by side: the rows of its first shard, then
  those of the next. Each batch is a dict of [rows, ...] arrays as a
  `SegmentStream`'s; `state()` is {"<shard>": that shard's stream state}."""

  def __init__(self, streams: Mapping[int, Any]):
    self.streams = dict(streams)

  def __iter__(self) -> "ProcessStream":
    return self

  def __next__(self) -> Dict[str, np.ndarray]:
    batches = [next(stream) for stream in self.streams.values()]
    if len(batches) == 1:
      return batches[0]
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}

  def state(self) -> Dict[str, Any]:
    return {str(shard): stream.state() for shard, stream in self.streams.items()}

  def restore(self, positions: Mapping[str, Any]) -> None:
    """Continues every shard from `positions` ({"<shard>": state}, more allowed).

    Positions saved by versions that tokenised the whole split on every process
    (several shards, each state naming the whole split's `tokens`) cannot be
    checked against a shard's documents: the stream then starts again from its
    first document, with a warning (as for a checkpoint of another shard count).
    """
    states = {shard: positions[str(shard)] for shard in self.streams}
    if any(_whole_split_state_of_a_shard(state) for state in states.values()):
      logging.warning(
          "the checkpoint's data position was saved when every process tokenised the "
          "whole split; now each tokenises its own shard, and the position cannot be "
          "checked against it: the training stream starts again from its first document")
      return
    for shard, stream in self.streams.items():
      stream.restore(states[shard])


def _whole_split_state_of_a_shard(state: Mapping[str, Any]) -> bool:
  """Whether `state` is a shard's position saved by an older version (see
  `ProcessStream.restore`)."""
  return state.get("process_count", 1) > 1 and "tokens" in state


def make_stream(config: DataConfig, segment_length: int, vocabulary, mode: str
                ) -> ProcessStream:
  """This process's stream of training ("train") or evaluation ("eval") segments.

  Returns a `ProcessStream` over this process's shards: an iterator of dicts of
  numpy arrays ([rows, length] `inputs`, `targets`, `loss_mask`; [rows]
  `start_of_sequence`, ...), with `state()`/`restore()` for checkpointing.

  A collective in eval mode with several processes (all call it): they agree on
  the number of batches.
  """
  # seqio (seconds) only when data is read: `compile` imports the trainer without it.
  from memorizing_jax.data import pipeline, token_cache  # pylint: disable=g-import-not-at-top
  train = mode == "train"
  split = config.train_split if train else config.eval_split
  global_rows = config.batch_size if train else config.eval_batch_size
  # This process's shards, tokenised in one pass over the split where not cached yet.
  token_cache.load_or_build_shards(config.task, split, vocabulary, config.process_shards(),
                                   config.num_shards, config.data_dir,
                                   keep_binary_files=config.keep_binary_files,
                                   text_feature=config.text_feature)
  stream = ProcessStream({shard: pipeline.make_stream(
      config.task, split, global_rows // config.num_shards, segment_length,
      vocabulary=vocabulary, mode=mode, seed=config.seed, process_index=shard,
      process_count=config.num_shards, data_dir=config.data_dir,
      text_feature=config.text_feature, keep_binary_files=config.keep_binary_files)
      for shard in config.process_shards()})
  if not train:
    steps = multihost.largest_on_any_process(
        max(shard_stream.num_steps for shard_stream in stream.streams.values()))
    for shard_stream in stream.streams.values():
      shard_stream.extend_eval(steps)
  return stream


def model_inputs(batch: Dict[str, Any]) -> Dict[str, np.ndarray]:
  """The arrays the steps read (analysis fields such as document ids are dropped)."""
  missing = [k for k in MODEL_INPUTS if k not in batch]
  if missing:
    raise KeyError(f"the data stream's batch lacks {missing}; it has {sorted(batch)}")
  return {k: batch[k] for k in MODEL_INPUTS}
