"""Document-continuous segment batches: each batch row reads one document in order.

A document of n tokens t_0..t_{n-1} is read as the sequence

    [pad] t_0 t_1 ... t_{n-1} [eos]

(the pad id doubling as the start token, as in t5x decoders), cut into segments of
L targets: segment k has `inputs = seq[kL : kL+L]` and `targets = seq[kL+1 : kL+L+1]`,
so each target is the next token of its input and every token of the document
(and the final EOS) is a target exactly once. A row feeds a document's segments at
consecutive steps; when it has fed the last one, it takes the next document at the
next step with `start_of_sequence` raised. Documents never share a segment: the
tail of a document's last segment is padding (`loss_mask` 0).

Order of documents: each process reads the documents whose id `d` has
`d % process_count == process_index` (disjoint, together complete). A document's id
is its position in the split, unless the stream is given `document_ids`: a process
that holds only its own documents (a shard of the token cache, see
`token_cache.py`) passes their ids, and reads all of them. In "train" mode it reads
them epoch after epoch, each epoch in a fresh permutation drawn from (seed,
process_index, epoch), forever. In "eval" mode it reads them once in id order;
rows with nothing left are padding, and every process yields the same number of
batches (the most any process needs: computed here from the documents given, or
agreed between processes that hold only their own, `extend_eval`), then stops.

The position of the stream is `state()`, a small JSON-serialisable dict (rows'
documents by id; `num_documents` counts the documents the stream was given);
`restore(state)` continues exactly where that state was taken.

A corpus that grew: documents appended after the existing ones (positions N..M-1
added to 0..N-1, e.g. a new file whose name sorts after the others) keep the ids of
the old ones, so a state taken over the N documents restores into a stream over
the M when the stream can check that its first N documents are those the state
was taken over (`prefix_identity`). The epoch under way keeps its order over the
N documents (already read ones are not read again) and reads this process's new
documents after them, in id order; later epochs shuffle all M. A corpus that
changed otherwise (a document edited, removed or inserted before the end) cannot
be restored: the error says so.
"""
from __future__ import annotations

import heapq
import logging
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np

STREAM_MODES = ("train", "eval")
# The keys of a batch that the model reads (the others describe where rows come from).
MODEL_INPUTS = ("inputs", "targets", "loss_mask", "start_of_sequence")
_STATE_FORMAT = 1


def segments_per_document(lengths: np.ndarray, segment_length: int) -> np.ndarray:
  """[documents] segments a document of each length takes: ceil((n + 1) / L)."""
  return (np.asarray(lengths, np.int64) + segment_length) // segment_length


def steps_to_read(lengths: np.ndarray, batch_size: int, segment_length: int) -> int:
  """Steps for `batch_size` rows to read documents of `lengths` in order, each row
  taking the next document as soon as it is free (the stream's eval schedule)."""
  free_at = [0] * batch_size
  for segments in segments_per_document(lengths, segment_length).tolist():
    heapq.heappush(free_at, heapq.heappop(free_at) + segments)
  return max(free_at)


class SegmentStream(Iterator[dict[str, np.ndarray]]):
  """An iterator of `[B, L]` segment batches over tokenised documents.

  Each batch is a dict of numpy arrays:
    inputs: [B, L] int32, the tokens fed to the model (pad where `loss_mask` is 0).
    targets: [B, L] int32, the next token of each input.
    loss_mask: [B, L] float32, 1 on real targets, 0 on padding.
    start_of_sequence: [B] bool, true exactly on the first segment of a document.
    document_id: [B] int64, the document each row reads (-1 on a padding row).
    token_offset: [B] int32, index in the document (with EOS appended) of the
      row's first target: `targets[b, j] == (doc + [eos])[token_offset[b] + j]`.
  """

  def __init__(self, tokens: np.ndarray, offsets: np.ndarray, batch_size: int,
               segment_length: int, *, mode: str = "train", seed: int = 0,
               process_index: int = 0, process_count: int = 1, pad_id: int = 0,
               eos_id: int = 1, identity: Optional[Mapping[str, Any]] = None,
               document_names: Optional[Sequence[str]] = None,
               prefix_identity: Optional[Callable[[int], Mapping[str, Any]]] = None,
               document_ids: Optional[np.ndarray] = None):
    """Args:
      tokens: [total_tokens] every document's tokens back to back.
      offsets: [num_documents + 1] document i is tokens[offsets[i]:offsets[i + 1]].
      batch_size: B, rows per batch on this process.
      segment_length: L, targets per row per batch.
      mode: "train" (endless, shuffled per epoch) or "eval" (every document once).
      seed: seed of the train-mode document order.
      process_index: this process, in [0, process_count).
      process_count: processes sharing the documents.
      pad_id: id of padding, also the start token before each document.
      eos_id: id appended after each document.
      identity: what the stream reads (task, split, vocabulary, ...): stored in
        `state()` and checked by `restore()`.
      document_names: names of the documents in the order given (the document
        with id `document_ids[i]` is `document_names[i]`), kept as `document_names`
        for analysis (e.g. which file a row reads).
      prefix_identity: `prefix_identity(n)` is what `identity` would be for a
        stream over only the first n documents given (e.g. the content hash of
        those documents): lets `restore` take a state of a stream over fewer
        documents, taken before documents were appended. None: such states are
        refused.
      document_ids: [num_documents] ascending ids of the documents given (default:
        their positions, 0..num_documents-1). Batches and states name documents by
        id, and the process reads those with `id % process_count == process_index`.
    """
    if mode not in STREAM_MODES:
      raise ValueError(f"unknown stream mode {mode!r}; expected one of {STREAM_MODES}")
    if batch_size <= 0 or segment_length <= 0:
      raise ValueError(f"batch_size and segment_length must be positive, got "
                       f"{batch_size} and {segment_length}")
    if not 0 <= process_index < process_count:
      raise ValueError(f"process_index must be in [0, process_count={process_count}), "
                       f"got {process_index}")
    self._tokens = tokens
    self._offsets = np.asarray(offsets, np.int64)
    self._lengths = np.diff(self._offsets)
    num_documents = len(self._lengths)
    self._num_documents = num_documents
    self._prefix_identity = prefix_identity
    self.document_names = None if document_names is None else list(document_names)
    self.batch_size, self.segment_length = batch_size, segment_length
    self.mode, self.seed = mode, seed
    self.process_index, self.process_count = process_index, process_count
    self.pad_id, self.eos_id = pad_id, eos_id
    self._ids = (np.arange(num_documents, dtype=np.int64) if document_ids is None
                 else np.asarray(document_ids, np.int64))
    if self._ids.shape != (num_documents,) or (np.diff(self._ids) <= 0).any():
      raise ValueError(f"document_ids must be {num_documents} ascending ids, one per "
                       f"document, got {self._ids.tolist()[:10]}...")
    # Positions of this process's documents, in id order.
    self._shard = np.flatnonzero(self._ids % process_count == process_index)
    if mode == "train" and len(self._shard) == 0:
      raise ValueError(
          f"process {process_index} of {process_count} has no documents: the split "
          f"has only {num_documents}; use fewer processes or a larger split")
    self._config = dict(
        format=_STATE_FORMAT, mode=mode, seed=seed, batch_size=batch_size,
        segment_length=segment_length, process_index=process_index,
        process_count=process_count, num_documents=num_documents,
        **dict(identity or {}))
    self.num_steps: Optional[int] = None
    if mode == "eval":
      self.num_steps = max(
          steps_to_read(self._lengths[self._ids % process_count == p], batch_size,
                        segment_length) for p in range(process_count))
    self._reset()

  def name_of(self, document_id: int) -> str:
    """The name of the document with id `document_id` (needs `document_names`)."""
    if self.document_names is None:
      raise ValueError("this stream was built without document_names")
    positions, known = self._positions(np.asarray([document_id], np.int64))
    if document_id < 0 or not known.all():
      raise KeyError(f"this stream has no document with id {document_id}")
    return self.document_names[int(positions[0])]

  def extend_eval(self, num_steps: int) -> None:
    """Eval mode: yields `num_steps` batches, rows past the end of the documents
    being padding.

    Processes that each hold only their own documents know only their own need;
    every process must yield the same number of batches, so they agree on the most
    any of them needs (`train/inputs.py`) and each extends its stream to that.

    Raises:
      ValueError: not an eval stream, or fewer steps than its documents need.
    """
    if self.mode != "eval" or num_steps < self.num_steps:
      raise ValueError(f"extend_eval({num_steps}) needs an eval stream of at most that "
                       f"many steps; this one is a {self.mode} stream of {self.num_steps}")
    self.num_steps = num_steps

  def _reset(self) -> None:
    self._step = 0
    self._epoch = 0
    self._next_position = 0
    self._epoch_documents = self._num_documents
    self._order = self._epoch_order(0, self._epoch_documents)
    self._row_document = np.full((self.batch_size,), -1, np.int64)
    self._row_offset = np.zeros((self.batch_size,), np.int64)

  def _epoch_order(self, epoch: int, drawn_over: int) -> np.ndarray:
    """This process's document ids in the order epoch `epoch` reads them.

    Args:
      epoch: the epoch.
      drawn_over: the documents (positions below it) the epoch's permutation was
        drawn over: the number of documents when the epoch began. Documents appended
        since (positions from `drawn_over` on) follow them, in id order.
    Returns:
      positions of the documents (not ids).
    """
    if self.mode == "eval":
      return self._shard
    drawn = self._shard[self._shard < drawn_over]
    appended = self._shard[self._shard >= drawn_over]
    rng = np.random.default_rng([self.seed, self.process_index, epoch])
    return np.concatenate([drawn[rng.permutation(len(drawn))], appended])

  def _take_next_document(self) -> int:
    """The position of the next document of this process's order, or -1 when eval
    has none left."""
    if self._next_position >= len(self._order):
      if self.mode == "eval":
        return -1
      self._epoch += 1
      self._next_position = 0
      self._epoch_documents = self._num_documents
      self._order = self._epoch_order(self._epoch, self._epoch_documents)
    document = int(self._order[self._next_position])
    self._next_position += 1
    return document

  def __iter__(self) -> "SegmentStream":
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self.num_steps is not None and self._step >= self.num_steps:
      raise StopIteration
    batch, length = self.batch_size, self.segment_length
    window = np.full((batch, length + 1), self.pad_id, np.int32)
    counts = np.zeros((batch,), np.int64)
    start_of_sequence = np.zeros((batch,), bool)
    document_id = np.full((batch,), -1, np.int64)
    token_offset = np.zeros((batch,), np.int32)
    for row in range(batch):
      if self._row_document[row] < 0:
        self._row_document[row] = self._take_next_document()
        self._row_offset[row] = 0
        if self._row_document[row] < 0:
          continue  # Eval: nothing left for this row.
      document = int(self._row_document[row])
      offset = int(self._row_offset[row])
      n = int(self._lengths[document])
      count = min(length, n + 1 - offset)
      # Window positions in document coordinates: offset - 1 .. offset + count - 1,
      # where -1 is the start token and n the EOS.
      first, stop = offset - 1, offset + count
      lo, hi = max(first, 0), min(stop, n)
      base = self._offsets[document]
      window[row, lo - first:hi - first] = self._tokens[base + lo:base + hi]
      if stop > n:
        window[row, n - first] = self.eos_id
      counts[row] = count
      start_of_sequence[row] = offset == 0
      document_id[row] = self._ids[document]
      token_offset[row] = offset
      if offset + length >= n + 1:
        self._row_document[row] = -1  # Done: the next step takes a new document.
      else:
        self._row_offset[row] = offset + length
    self._step += 1
    loss_mask = np.arange(length)[None, :] < counts[:, None]
    return dict(
        inputs=np.where(loss_mask, window[:, :-1], self.pad_id).astype(np.int32),
        targets=window[:, 1:],
        loss_mask=loss_mask.astype(np.float32),
        start_of_sequence=start_of_sequence,
        document_id=document_id,
        token_offset=token_offset,
    )

  def state(self) -> dict[str, Any]:
    """The stream's position and configuration, JSON-serialisable."""
    return dict(
        self._config, step=self._step, epoch=self._epoch,
        next_position=self._next_position, epoch_documents=self._epoch_documents,
        row_document=self._ids_of(self._row_document).tolist(),
        row_offset=self._row_offset.tolist())

  def restore(self, state: Mapping[str, Any]) -> None:
    """Continues from `state` (from `state()` of a stream over the same data, or over
    its first documents before more were appended: see the module docstring).

    Raises ValueError naming every setting that differs from this stream's.
    """
    saved_documents = int(state.get("num_documents", -1))
    self._check_same_stream(state)
    ids = np.asarray(state["row_document"], np.int64)
    row_document, known = self._positions(ids)
    if not known.all():
      raise ValueError(f"cannot restore a stream state whose rows read documents "
                       f"{ids[~known].tolist()}, which this stream does not have")
    if saved_documents < self._num_documents:
      logging.warning(
          "restoring a data stream over %d documents into one over %d: the corpus grew; "
          "the %d appended documents are read after the rest of epoch %d",
          saved_documents, self._num_documents, self._num_documents - saved_documents,
          int(state["epoch"]))
    self._step = int(state["step"])
    self._epoch = int(state["epoch"])
    self._next_position = int(state["next_position"])
    # States saved before appended documents were supported drew every epoch over
    # all the documents the stream had.
    self._epoch_documents = int(state.get("epoch_documents", saved_documents))
    self._order = self._epoch_order(self._epoch, self._epoch_documents)
    self._row_document = row_document
    self._row_offset = np.asarray(state["row_offset"], np.int64)

  def _ids_of(self, positions: np.ndarray) -> np.ndarray:
    """[rows] ids of the documents at `positions` (-1, no document, stays -1)."""
    ids = np.full(positions.shape, -1, np.int64)
    ids[positions >= 0] = self._ids[positions[positions >= 0]]
    return ids

  def _positions(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """([rows] positions of the documents of `ids`, -1 staying -1; [rows] bool
    whether each is -1 or the id of one of this stream's documents)."""
    found = np.searchsorted(self._ids, ids)
    known = ids < 0
    inside = ~known & (found < len(self._ids))
    known[inside] = self._ids[found[inside]] == ids[inside]
    return np.where(ids < 0, -1, found), known

  def _check_same_stream(self, state: Mapping[str, Any]) -> None:
    """Raises ValueError unless `state` is of this stream, or of this stream before
    documents were appended (checked with `prefix_identity`)."""
    saved_documents = state.get("num_documents")
    grew = (isinstance(saved_documents, int)
            and 0 < saved_documents < self._num_documents)
    expected, prefix_keys = dict(self._config), set()
    if grew and self._prefix_identity is not None:
      prefix = self._prefix_identity(saved_documents)
      prefix_keys = set(prefix)
      expected.update(prefix, num_documents=saved_documents)
    mismatched = {k: (state.get(k), v) for k, v in expected.items() if state.get(k) != v}
    if not mismatched:
      return
    details = ", ".join(f"{k}: saved {a!r} != this stream's {b!r}"
                        for k, (a, b) in sorted(mismatched.items()))
    reason = self._why_not_grown(state, grew, prefix_keys & set(mismatched))
    raise ValueError(f"cannot restore a stream state taken from a different stream "
                     f"({details}){reason}")

  def _why_not_grown(self, state: Mapping[str, Any], grew: bool,
                     changed_prefix: set) -> str:
    """What the error says about a corpus whose documents changed.

    Args:
      state: the state being restored.
      grew: whether the stream has more documents than the state.
      changed_prefix: keys of `prefix_identity` that differ (the first documents
        are not those of the state).
    """
    saved_documents = state.get("num_documents")
    if saved_documents == self._num_documents:
      return ""
    if grew and self._prefix_identity is not None and not changed_prefix:
      return ""  # The documents are fine; another setting differs.
    if not grew:
      return (f". The corpus has {self._num_documents} documents, fewer than the "
              f"{saved_documents} the state was taken over: documents were removed. Put "
              "them back to resume; only appending documents keeps a run resumable")
    if self._prefix_identity is None:
      return (". The corpus grew, but this stream cannot check that its first documents "
              "are unchanged (it was built without prefix_identity)")
    return (f". The corpus grew from {saved_documents} to {self._num_documents} "
            f"documents, but its first {saved_documents} are not those the state was "
            "taken over: a document was edited, removed, or added before the end of the "
            "document order. Only documents appended at the end (names sorting after the "
            "existing ones) keep a run resumable; restore the changed documents to resume")
