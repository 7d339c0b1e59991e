"""`TokenCache`'s views of its arrays, and the content hash of a prefix of its documents."""
import pathlib

import numpy as np
import pytest

from memorizing_jax.data import tasks, token_cache, vocab
from tests.data.corpora import write_tree

BYTES = vocab.byte_vocabulary()


def _hand_made(meta):
  # Documents "a" = [5, 6, 7], "b" = [], "c" = [8, 9, 10, 11].
  return token_cache.TokenCache(
      tokens=np.arange(5, 12, dtype=np.uint16), offsets=np.array([0, 3, 3, 7], np.int64),
      names=["a", "b", "c"], meta=meta, path=pathlib.Path("/nowhere"))


def test_token_cache_of_a_whole_split():
  cache = _hand_made(dict(key="k1", content_hash="h1"))
  assert cache.num_documents == 3
  assert cache.lengths.tolist() == [3, 0, 4]
  assert [cache.document(i).tolist() for i in range(3)] == [[5, 6, 7], [], [8, 9, 10, 11]]
  assert (cache.key, cache.content_hash) == ("k1", "h1")
  assert (cache.shard, cache.num_shards) == (0, 1)
  assert cache.document_ids.tolist() == [0, 1, 2]


def test_token_cache_of_one_shard_numbers_its_documents_in_the_split():
  cache = _hand_made(dict(key="k", content_hash="h", shard=1, num_shards=3))
  assert (cache.shard, cache.num_shards) == (1, 3)
  assert cache.document_ids.tolist() == [1, 4, 7]  # positions 1, 4, 7 of the split
  assert cache.document(2).tolist() == [8, 9, 10, 11]  # the 3rd held, not id 2


def test_prefix_content_hash_is_the_hash_of_the_cache_before_documents_were_appended(
    tmp_path):
  corpus = tmp_path / "corpus"
  write_tree(corpus / "train", {"r1": {"a.py": b"x = 1\n"}, "r2": {"b.py": b"y = 2\n"}})
  for split in ("validation", "test"):
    (corpus / split).mkdir()
  tasks.register_folder_task("prefix_hash_task", "directory", root=corpus)
  old = token_cache.load_or_build("prefix_hash_task", "train", BYTES, tmp_path / "data",
                                  progress=False)
  write_tree(corpus / "train", {"r3": {"c.py": b"z = 3\n"}})  # sorts after r1 and r2
  new = token_cache.load_or_build("prefix_hash_task", "train", BYTES, tmp_path / "data",
                                  progress=False)
  assert new.names == ["r1", "r2", "r3"] and new.content_hash != old.content_hash
  assert token_cache.prefix_content_hash(new, 2) == old.content_hash
  assert token_cache.prefix_content_hash(new, 3) == new.content_hash
  assert len({token_cache.prefix_content_hash(new, n) for n in range(4)}) == 4
  for bad in (-1, 4):
    with pytest.raises(ValueError, match=r"num_documents must be in \[0, 3\]"):
      token_cache.prefix_content_hash(new, bad)
