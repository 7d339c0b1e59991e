"""SegmentStream on synthetic token arrays: coverage, order, resume, process shards."""
import hashlib
import json

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest

from memorizing_jax.data import streams

PAD, EOS = 0, 1


def make_documents(lengths, seed=0):
  """Documents of the given lengths with distinct token values (>= 3)."""
  rng = np.random.default_rng(seed)
  return [rng.integers(3, 1000, size=n).astype(np.int32) for n in lengths]


def make_stream(docs, batch_size, segment_length, **kwargs):
  offsets = np.cumsum([0] + [len(d) for d in docs])
  tokens = np.concatenate(docs + [np.zeros(0, np.int32)]).astype(np.uint16)
  return streams.SegmentStream(tokens, offsets, batch_size, segment_length,
                               pad_id=PAD, eos_id=EOS, **kwargs)


def reads_per_row(batches):
  """[(row, document, [segments])] in the order rows started documents.

  Checks on the way that a row's segments of one document come at consecutive
  steps with offsets 0, L, 2L, ..., and that start_of_sequence is raised exactly
  on the first one.
  """
  reads, current = [], {}
  for batch in batches:
    length = batch["inputs"].shape[1]
    for row, document in enumerate(batch["document_id"].tolist()):
      mask = batch["loss_mask"][row] > 0
      if document < 0:
        assert not mask.any() and not batch["start_of_sequence"][row]
        current.pop(row, None)
        continue
      offset = int(batch["token_offset"][row])
      segment = (batch["inputs"][row][mask], batch["targets"][row][mask], offset)
      assert (batch["inputs"][row][~mask] == PAD).all()
      assert (batch["targets"][row][~mask] == PAD).all()
      if batch["start_of_sequence"][row]:
        assert offset == 0
        current[row] = (row, document, [segment])
        reads.append(current[row])
      else:
        assert row in current and current[row][1] == document
        assert offset == current[row][2][-1][2] + length
        current[row][2].append(segment)
  return reads


def check_read(document_tokens, segments, complete=True):
  """The targets are the document then EOS; the inputs are start token then document."""
  inputs = np.concatenate([s[0] for s in segments])
  targets = np.concatenate([s[1] for s in segments])
  expected_targets = np.append(document_tokens, EOS)
  expected_inputs = np.insert(document_tokens, 0, PAD)
  if complete:
    np.testing.assert_array_equal(targets, expected_targets)
  else:
    np.testing.assert_array_equal(targets, expected_targets[:len(targets)])
  np.testing.assert_array_equal(inputs, expected_inputs[:len(inputs)])


def test_hand_computed_batches():
  docs = [np.array([10, 11, 12], np.int32), np.array([20], np.int32)]
  batches = list(make_stream(docs, 1, 2, mode="eval"))
  assert len(batches) == 3
  expected = [([0, 10], [10, 11], True, 0, 0), ([11, 12], [12, 1], False, 0, 2),
              ([0, 20], [20, 1], True, 1, 0)]
  for batch, (inputs, targets, sos, document, offset) in zip(batches, expected):
    assert batch["inputs"].tolist() == [inputs] and batch["targets"].tolist() == [targets]
    assert batch["start_of_sequence"].tolist() == [sos]
    assert batch["document_id"].tolist() == [document]
    assert batch["token_offset"].tolist() == [offset]
    assert batch["loss_mask"].tolist() == [[1.0, 1.0]]
  assert batches[0]["inputs"].dtype == np.int32 and batches[0]["targets"].dtype == np.int32
  assert batches[0]["loss_mask"].dtype == np.float32
  assert batches[0]["start_of_sequence"].dtype == bool
  assert batches[0]["document_id"].dtype == np.int64
  assert batches[0]["token_offset"].dtype == np.int32


def test_last_segment_of_a_document_is_padded():
  batch = next(make_stream([np.array([5, 6, 7], np.int32)], 1, 8, mode="eval"))
  assert batch["inputs"].tolist() == [[0, 5, 6, 7, 0, 0, 0, 0]]
  assert batch["targets"].tolist() == [[5, 6, 7, 1, 0, 0, 0, 0]]
  assert batch["loss_mask"].tolist() == [[1, 1, 1, 1, 0, 0, 0, 0]]


def test_steps_to_read_hand_computed():
  # Segments: ceil((n + 1) / 4) = 1, 1, 3. Rows 0 and 1 take documents 0 and 1 at
  # step 0, row 0 takes document 2 at step 1 and needs steps 1, 2, 3.
  assert streams.steps_to_read(np.array([3, 0, 10]), 2, 4) == 4


document_lengths = st.lists(st.integers(0, 40), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(lengths=document_lengths, batch_size=st.integers(1, 4),
       segment_length=st.integers(1, 9), process_count=st.integers(1, 3))
def test_eval_reads_every_token_once_in_order_across_disjoint_processes(
    lengths, batch_size, segment_length, process_count):
  docs = make_documents(lengths)
  seen, step_counts = [], []
  for process in range(process_count):
    stream = make_stream(docs, batch_size, segment_length, mode="eval",
                         process_index=process, process_count=process_count)
    batches = list(stream)
    step_counts.append(len(batches))
    assert len(batches) == stream.num_steps
    for _, document, segments in reads_per_row(batches):
      assert document % process_count == process
      check_read(docs[document], segments)
      seen.append(document)
  assert sorted(seen) == list(range(len(docs)))  # each document once, all of them
  assert len(set(step_counts)) == 1  # every process yields the same number of batches
  assert step_counts[0] == max(
      streams.steps_to_read(np.array(lengths[p::process_count], np.int64), batch_size,
                            segment_length) for p in range(process_count))


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(0, 30), min_size=1, max_size=10),
       batch_size=st.integers(1, 4), segment_length=st.integers(1, 8),
       seed=st.integers(0, 3))
def test_train_reads_every_document_once_per_epoch_in_order(lengths, batch_size,
                                                            segment_length, seed):
  docs = make_documents(lengths)
  stream = make_stream(docs, batch_size, segment_length, mode="train", seed=seed)
  total_segments = int(streams.segments_per_document(np.array(lengths), segment_length).sum())
  batches = [next(stream) for _ in range(3 * total_segments + 3)]
  assert all(b["loss_mask"][:, 0].all() for b in batches)  # train rows are never idle
  reads = reads_per_row(batches)
  started = [document for _, document, _ in reads]
  # The first epoch starts every document once, and so does the second.
  assert sorted(started[:len(docs)]) == list(range(len(docs)))
  assert sorted(started[len(docs):2 * len(docs)]) == list(range(len(docs)))
  last_read_of_row = {row: i for i, (row, _, _) in enumerate(reads)}
  for i, (row, document, segments) in enumerate(reads):
    # A row's last read may be cut off by the end of the batches; the others are whole.
    check_read(docs[document], segments, complete=i != last_read_of_row[row])


def test_train_order_is_deterministic_given_the_seed():
  docs = make_documents([5] * 20)

  def first_documents(seed):
    stream = make_stream(docs, 4, 8, mode="train", seed=seed)
    return [next(stream)["document_id"].tolist() for _ in range(10)]

  assert first_documents(0) == first_documents(0)
  assert first_documents(0) != first_documents(1)


@settings(max_examples=30, deadline=None)
@given(lengths=document_lengths, batch_size=st.integers(1, 3),
       segment_length=st.integers(1, 6), mode=st.sampled_from(["train", "eval"]),
       stop_at=st.integers(0, 25), process_index=st.integers(0, 1))
def test_resume_equals_the_uninterrupted_stream(lengths, batch_size, segment_length, mode,
                                                stop_at, process_index):
  docs = make_documents(lengths + [7, 3])
  kwargs = dict(mode=mode, seed=5, process_index=process_index, process_count=2)
  reference = list(_take(make_stream(docs, batch_size, segment_length, **kwargs), 60))
  first = make_stream(docs, batch_size, segment_length, **kwargs)
  head = list(_take(first, stop_at))
  saved = json.loads(json.dumps(first.state()))
  resumed = make_stream(docs, batch_size, segment_length, **kwargs)
  resumed.restore(saved)
  rest = list(_take(resumed, 60 - len(head)))
  assert len(head) + len(rest) == len(reference)
  for got, want in zip(head + rest, reference):
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])


def _take(stream, n):
  for _ in range(n):
    try:
      yield next(stream)
    except StopIteration:
      return


def test_restore_rejects_a_state_of_another_stream():
  docs = make_documents([4, 5, 6])
  state = make_stream(docs, 2, 4, identity={"task": "a"}).state()
  with pytest.raises(ValueError, match=r"batch_size: saved 2 != this stream's 3"):
    make_stream(docs, 3, 4, identity={"task": "a"}).restore(state)
  with pytest.raises(ValueError, match=r"task: saved 'a' != this stream's 'b'"):
    make_stream(docs, 2, 4, identity={"task": "b"}).restore(state)


def test_bad_arguments_are_clear_errors():
  docs = make_documents([4])
  with pytest.raises(ValueError, match="unknown stream mode 'test'"):
    make_stream(docs, 1, 4, mode="test")
  with pytest.raises(ValueError, match="must be positive"):
    make_stream(docs, 0, 4)
  with pytest.raises(ValueError, match=r"process_index must be in \[0, process_count=2\)"):
    make_stream(docs, 1, 4, process_index=2, process_count=2)
  with pytest.raises(ValueError, match="process 1 of 2 has no documents"):
    make_stream(docs, 1, 4, process_index=1, process_count=2)
  # In eval a process without documents still yields padding batches in step.
  assert [b["loss_mask"].sum() for b in make_stream(
      docs, 1, 4, mode="eval", process_index=1, process_count=2)] == [0.0, 0.0]


def content_hash(docs):
  """An identity of documents' tokens (what the token cache's content hash is to a stream)."""
  return hashlib.sha256(b"".join(len(d).to_bytes(8, "little") + d.tobytes()
                                 for d in docs)).hexdigest()[:16]


def stream_with_prefix_identity(docs, batch_size, segment_length, **kwargs):
  return make_stream(docs, batch_size, segment_length,
                     identity={"tokens": content_hash(docs)},
                     prefix_identity=lambda n: {"tokens": content_hash(docs[:n])}, **kwargs)


def segments_in_order(docs, order, segment_length, first_offset=0):
  """[(document id, token offset, targets)] of one row reading `order`'s documents
  one after the other, each cut into segments (the first from `first_offset`)."""
  expected = []
  for i, document in enumerate(order):
    targets = np.append(docs[document], EOS)
    start = first_offset if i == 0 else 0
    for offset in range(start, len(targets), segment_length):
      expected.append((int(document), offset, targets[offset:offset + segment_length].tolist()))
  return expected


def row_reads(stream, steps):
  """[(document id, token offset, targets)] of row 0 over `steps` batches."""
  got = []
  for batch in _take(stream, steps):
    mask = batch["loss_mask"][0] > 0
    got.append((int(batch["document_id"][0]), int(batch["token_offset"][0]),
                batch["targets"][0][mask].tolist()))
  return got


def test_a_state_restores_into_a_corpus_that_grew():
  """Saved in epoch 0 over 6 documents, restored over 7: epoch 0 keeps its order over
  the 6 (none is read twice), the appended document 6 follows them, and epoch 1
  shuffles all 7."""
  seed, length = 3, 4
  old = make_documents([5, 9, 3, 6, 2, 7])
  new = old + make_documents([8], seed=1)
  first = stream_with_prefix_identity(old, 1, length, seed=seed)
  epoch0 = np.random.default_rng([seed, 0, 0]).permutation(6)
  # Read two whole documents of epoch 0 and the first segment of the third.
  segments = (len(old[epoch0[0]]) + length) // length + (len(old[epoch0[1]]) + length) // length
  next_steps = list(_take(first, segments + 1))
  assert [int(b["document_id"][0]) for b in next_steps[-1:]] == [epoch0[2]]
  saved = json.loads(json.dumps(first.state()))

  grown = stream_with_prefix_identity(new, 1, length, seed=seed)
  grown.restore(saved)
  epoch1 = np.random.default_rng([seed, 0, 1]).permutation(7)
  want = (segments_in_order(new, epoch0[2:], length, first_offset=length)
          + segments_in_order(new, [6], length) + segments_in_order(new, epoch1, length))
  assert row_reads(grown, len(want)) == want

  # The grown stream's own state (mid-way through the old epoch) restores exactly too.
  again = stream_with_prefix_identity(new, 1, length, seed=seed)
  again.restore(saved)
  list(_take(again, 3))
  later = stream_with_prefix_identity(new, 1, length, seed=seed)
  later.restore(json.loads(json.dumps(again.state())))
  assert row_reads(later, len(want) - 3) == want[3:]


def test_a_corpus_changed_other_than_by_appending_is_refused_with_the_reason():
  docs = make_documents([5, 9, 3, 6])
  state = stream_with_prefix_identity(docs, 1, 4).state()
  edited = [docs[0], docs[1][:-1]] + docs[2:] + make_documents([4], seed=1)
  with pytest.raises(ValueError, match=r"grew from 4 to 5 documents, but its first 4 are not "
                                       r"those the state was taken over"):
    stream_with_prefix_identity(edited, 1, 4).restore(state)
  with pytest.raises(ValueError, match=r"fewer than the 4 the state was taken over: documents "
                                       r"were removed"):
    stream_with_prefix_identity(docs[:3], 1, 4).restore(state)
  without_check = make_stream(docs + make_documents([4], seed=1), 1, 4,
                              identity={"tokens": "x"})
  with pytest.raises(ValueError, match="built without prefix_identity"):
    without_check.restore(make_stream(docs, 1, 4, identity={"tokens": "x"}).state())


def test_a_grown_corpus_with_another_setting_changed_names_only_that_setting():
  docs = make_documents([5, 9, 3, 6])
  state = stream_with_prefix_identity(docs, 1, 4).state()
  grown = stream_with_prefix_identity(docs + make_documents([4], seed=1), 2, 4)
  with pytest.raises(ValueError, match=r"\(batch_size: saved 1 != this stream's 2\)$"):
    grown.restore(state)


def shard_of(docs, shard, num_shards, batch_size, segment_length, **kwargs):
  """A stream given only the documents of `shard` (ids shard, shard + S, ...), as a
  process that tokenised only its own shard builds it."""
  ids = np.arange(shard, len(docs), num_shards)
  return make_stream([docs[i] for i in ids], batch_size, segment_length, process_index=shard,
                     process_count=num_shards, document_ids=ids, **kwargs)


@settings(max_examples=30, deadline=None)
@given(lengths=st.lists(st.integers(0, 30), min_size=3, max_size=10),
       batch_size=st.integers(1, 3), segment_length=st.integers(1, 6),
       mode=st.sampled_from(["train", "eval"]), num_shards=st.integers(2, 3),
       stop_at=st.integers(0, 20))
def test_a_stream_over_its_shard_only_reads_as_one_over_the_whole_split(
    lengths, batch_size, segment_length, mode, num_shards, stop_at):
  """Same batches (document ids included) as a stream given every document, and it
  resumes exactly from its own states."""
  docs = make_documents(lengths)
  for shard in range(num_shards):
    kwargs = dict(mode=mode, seed=4)
    whole = make_stream(docs, batch_size, segment_length, process_index=shard,
                        process_count=num_shards, **kwargs)
    own = shard_of(docs, shard, num_shards, batch_size, segment_length, **kwargs)
    if mode == "eval":
      own.extend_eval(whole.num_steps)  # what the processes agree on
    reference = list(_take(whole, 40))
    head = list(_take(own, stop_at))
    resumed = shard_of(docs, shard, num_shards, batch_size, segment_length, **kwargs)
    if mode == "eval":
      resumed.extend_eval(whole.num_steps)
    resumed.restore(json.loads(json.dumps(own.state())))
    got = head + list(_take(resumed, 40 - len(head)))
    assert len(got) == len(reference)
    for got_batch, want in zip(got, reference):
      for key in want:
        np.testing.assert_array_equal(got_batch[key], want[key])


def test_names_and_eval_steps_of_a_stream_over_its_shard():
  docs = make_documents([3, 20, 4, 2, 5])
  own = streams.SegmentStream(
      np.concatenate([docs[1], docs[3]]).astype(np.uint16),
      np.cumsum([0, len(docs[1]), len(docs[3])]), 1, 4, mode="eval", process_index=1,
      process_count=2, document_ids=[1, 3], document_names=["b", "d"])
  assert (own.name_of(1), own.name_of(3)) == ("b", "d")
  with pytest.raises(KeyError, match="no document with id 2"):
    own.name_of(2)
  # Its own documents take ceil(21 / 4) = 6 and ceil(3 / 4) = 1 segments: 7 steps.
  assert own.num_steps == 7
  own.extend_eval(9)  # the most another process needs
  batches = list(own)
  assert [bool(b["loss_mask"].any()) for b in batches] == [True] * 7 + [False] * 2
  with pytest.raises(ValueError, match=r"extend_eval\(8\) needs an eval stream of at most"):
    own.extend_eval(8)
  with pytest.raises(ValueError, match="document_ids must be 2 ascending ids"):
    make_stream(docs[:2], 1, 4, document_ids=[3, 1])
  state = shard_of(docs, 1, 2, 1, 4).state()
  state["row_document"] = [4]
  with pytest.raises(ValueError, match=r"rows read documents \[4\], which this stream"):
    shard_of(docs, 1, 2, 1, 4).restore(state)
