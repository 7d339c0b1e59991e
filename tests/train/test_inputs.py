"""DataConfig reaches the data pipeline: binary files of a folder corpus are skipped
unless the run asks to keep them; a process reading two shards resumes them."""
import json
import logging

import numpy as np

from memorizing_jax.data import streams, tasks, token_cache, vocab
from memorizing_jax.data.config import DataConfig
from memorizing_jax.train import inputs


def test_keep_binary_files_reaches_the_stream(tmp_path):
  root = tmp_path / "corpus"
  for split in ("train", "validation", "test"):
    (root / split).mkdir(parents=True)
  (root / "train" / "a.py").write_bytes(b"x = 1\n")
  (root / "train" / "b.so").write_bytes(bytes(range(256)) * 4)
  tasks.register_folder_task("inputs_binary", "file", root=str(root))
  byte_vocabulary = vocab.get_vocabulary("inputs_binary", kind="byte")

  def documents(keep):
    config = DataConfig(task="inputs_binary", vocabulary="byte", batch_size=1,
                        eval_batch_size=1, data_dir=str(tmp_path / f"data_{keep}"),
                        keep_binary_files=keep)
    (stream,) = inputs.make_stream(config, 8, byte_vocabulary, "train").streams.values()
    return sorted(stream.document_names)

  assert documents(False) == ["a.py"]
  assert documents(True) == ["a.py", "b.so"]


def _two_shards(corpus, data_dir):
  task, _ = corpus
  return DataConfig(task=task, vocabulary="byte", batch_size=4, eval_batch_size=4,
                    data_dir=str(data_dir), data_shards=2)


def test_a_process_of_two_shards_resumes_them_exactly(corpus, tmp_path):
  config = _two_shards(corpus, tmp_path)
  byte_vocabulary = vocab.byte_vocabulary()
  reference = inputs.make_stream(config, 16, byte_vocabulary, "train")
  want = [next(reference) for _ in range(12)]
  first = inputs.make_stream(config, 16, byte_vocabulary, "train")
  for _ in range(5):
    next(first)
  resumed = inputs.make_stream(config, 16, byte_vocabulary, "train")
  resumed.restore(json.loads(json.dumps(first.state())))
  for want_batch in want[5:]:
    got = next(resumed)
    for key in want_batch:
      np.testing.assert_array_equal(got[key], want_batch[key])


def test_a_shard_position_saved_over_the_whole_split_starts_the_stream_again(
    corpus, tmp_path, caplog):
  """Before shard caches, each shard's stream read the whole split's cache and its
  position named the whole split's tokens; such a position cannot be checked
  against a shard's cache, so the stream starts from its first document."""
  config = _two_shards(corpus, tmp_path)
  byte_vocabulary = vocab.byte_vocabulary()
  whole = token_cache.load_or_build(config.task, "train", byte_vocabulary, config.data_dir,
                                    progress=False)
  legacy = {}
  for shard in (0, 1):
    old = streams.SegmentStream(
        whole.tokens, whole.offsets, 2, 16, process_index=shard, process_count=2,
        identity=dict(task=config.task, split="train", vocabulary=whole.meta["vocabulary"],
                      tokens=whole.content_hash))
    for _ in range(3):
      next(old)
    legacy[str(shard)] = old.state()
  fresh = next(inputs.make_stream(config, 16, byte_vocabulary, "train"))
  resumed = inputs.make_stream(config, 16, byte_vocabulary, "train")
  with caplog.at_level(logging.WARNING):
    resumed.restore(json.loads(json.dumps(legacy)))
  assert "starts again from its first document" in caplog.text
  got = next(resumed)
  for key in fresh:
    np.testing.assert_array_equal(got[key], fresh[key])


class _ShardStream:
  """A stand-in for one shard's `SegmentStream`: batch n of shard s holds 100 s + n."""

  def __init__(self, shard, rows):
    self.shard, self.rows, self.position = shard, rows, 0

  def __next__(self):
    value = 100 * self.shard + self.position
    self.position += 1
    return {"inputs": np.full((self.rows, 3), value), "start_of_sequence": np.zeros(self.rows)}

  def state(self):
    return {"position": self.position}

  def restore(self, state):
    self.position = state["position"]


def test_a_process_stream_puts_its_shards_rows_side_by_side():
  alone = inputs.ProcessStream({0: _ShardStream(0, rows=2)})
  assert iter(alone) is alone
  np.testing.assert_array_equal(next(alone)["inputs"], np.zeros((2, 3)))
  stream = inputs.ProcessStream({3: _ShardStream(3, rows=2), 1: _ShardStream(1, rows=1)})
  next(stream)
  batch = next(stream)
  np.testing.assert_array_equal(batch["inputs"][:, 0], [301, 301, 101])  # shard 3, then 1
  assert batch["start_of_sequence"].shape == (3,)
  assert stream.state() == {"3": {"position": 2}, "1": {"position": 2}}


def test_a_process_stream_restores_each_shard_from_its_position(caplog):
  stream = inputs.ProcessStream({0: _ShardStream(0, rows=1), 1: _ShardStream(1, rows=1)})
  # Positions of every process's shards may come: each reads its own.
  stream.restore({"0": {"position": 5}, "1": {"position": 7}, "2": {"position": 9}})
  np.testing.assert_array_equal(next(stream)["inputs"][:, 0], [5, 107])
  # A position saved when every process tokenised the whole split: started afresh.
  fresh = inputs.ProcessStream({0: _ShardStream(0, rows=1), 1: _ShardStream(1, rows=1)})
  with caplog.at_level(logging.WARNING):
    fresh.restore({"0": {"position": 5, "process_count": 2, "tokens": 10},
                   "1": {"position": 7, "process_count": 2, "tokens": 10}})
  assert "starts again from its first document" in caplog.text
  assert fresh.state() == {"0": {"position": 0}, "1": {"position": 0}}
