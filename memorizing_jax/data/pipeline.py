"""The data entry point of training and evaluation: `make_stream`.

    vocabulary = vocab.get_vocabulary("python_stdlib", size=4096)
    stream = make_stream("python_stdlib", "train", batch_size=8, segment_length=512,
                         vocabulary=vocabulary)
    batch = next(stream)        # {"inputs": [8, 512] int32, "targets", "loss_mask", ...}
    saved = stream.state()      # JSON-serialisable; checkpoint it with the model
    stream.restore(saved)       # continue exactly there

The first call for a (task, split, vocabulary) tokenises the split and caches the
tokens under the data directory (see `token_cache.py`); later calls memory-map them.
With several processes (`process_count` > 1) a process tokenises and caches only its
own shard of the documents, the documents it reads. Document ids are positions in
the split (`TokenCache.document_ids`), so a saved state restores only into a
stream over the same documents and vocabulary (`restore` checks a hash of the
cached tokens, which is the same on every host with the same files, and the
vocabulary's fingerprint, and names what differs), or over the same documents
followed by appended ones (a corpus that grew: see `streams.py`).
"""
from __future__ import annotations

from typing import Optional

import seqio

from memorizing_jax.data import token_cache
from memorizing_jax.data import vocab as vocab_lib
from memorizing_jax.data.data_dir import PathLike
from memorizing_jax.data.streams import SegmentStream

# Re-exported for gin files and the trainer: one import for the data entry points.
get_vocabulary = vocab_lib.get_vocabulary


def make_stream(task: str, split: str, batch_size: int, segment_length: int, *,
                vocabulary: seqio.Vocabulary, mode: str = "train", seed: int = 0,
                process_index: int = 0, process_count: int = 1,
                data_dir: Optional[PathLike] = None, progress: bool = True,
                keep_binary_files: bool = False, text_feature: str = "text") -> SegmentStream:
  """A stream of `[batch_size, segment_length]` segment batches of `task`/`split`.

  Args:
    task: a task of `memorizing_jax.data.tasks` (e.g. "python_stdlib", "pg19"), or
      any registered seqio task (see `tasks.SeqioTaskReader`).
    split: "train", "validation" or "test".
    batch_size: rows per batch on this process (the per-process batch).
    segment_length: L, tokens per row per batch.
    vocabulary: the task's vocabulary (`get_vocabulary(task, ...)`); one trained on
      another task is a ValueError.
    mode: "train" (endless, reshuffled each epoch) or "eval" (each token once, finite).
    seed: seed of the train-mode document order.
    process_index: this process, for multi-host runs (`jax.process_index()`), or
      the data shard it reads.
    process_count: number of processes (`jax.process_count()`), or of data
      shards. Above 1, only shard `process_index` of the split is tokenised
      (`token_cache.load_or_build_shards`); in eval mode the stream then knows
      only its own documents: its `num_steps` is what they need, and processes
      agree on the most any of them needs with `SegmentStream.extend_eval`.
    data_dir: where token caches, vocabularies and TFDS data live (see
      `data_dir.py`; also the root of `corpora/<task>` folders).
    progress: show a progress bar while tokenising a split for the first time.
    keep_binary_files: read binary and undecodable files of folder corpora too
      (decoded with U+FFFD replacements) instead of skipping them (see
      `documents.binary_kind`).
    text_feature: the feature of a seqio task's examples that holds the text (for
      tasks not of `memorizing_jax.data.tasks`; ignored for those).

  Returns:
    A `SegmentStream` (see `streams.py` for the batch layout and the state).
  """
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index must be in [0, process_count={process_count}), got "
                     f"{process_index}")
  (cache,) = token_cache.load_or_build_shards(
      task, split, vocabulary, [process_index], process_count, data_dir, progress=progress,
      keep_binary_files=keep_binary_files, text_feature=text_feature)
  if cache.num_documents == 0 and cache.meta.get("split_documents", 0) == 0:
    raise ValueError(f"task {task!r} split {split!r} has no documents "
                     f"(read report: {cache.meta['report']}); check the corpus folder")
  if cache.num_documents == 0 and mode == "train":
    raise ValueError(
        f"process {process_index} of {process_count} has no documents: the split has "
        f"only {cache.meta['split_documents']}; use fewer processes or a larger split")
  # A shard's hash covers only its documents: named apart from a whole split's, so
  # that a state of one never restores into a stream of the other.
  tokens = "tokens" if process_count == 1 else "shard_tokens"
  return SegmentStream(
      cache.tokens, cache.offsets, batch_size, segment_length, mode=mode, seed=seed,
      process_index=process_index, process_count=process_count,
      pad_id=vocabulary.pad_id, eos_id=vocabulary.eos_id,
      identity={"task": task, "split": split, "vocabulary": cache.meta["vocabulary"],
                tokens: cache.content_hash},
      document_names=cache.names, document_ids=cache.document_ids,
      prefix_identity=lambda n: {tokens: token_cache.prefix_content_hash(cache, n)})
