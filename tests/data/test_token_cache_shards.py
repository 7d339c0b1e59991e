"""Token caches of one shard of a split: each process tokenises only its own documents.

The reference is the documents as the reader yields them, tokenised here directly:
shard s of S must hold the documents s, s + S, ... of them, with ids s + S * k.
"""
import json
import shutil

import numpy as np
import pytest

from memorizing_jax.data import data_dir as data_dir_lib
from memorizing_jax.data import tasks, token_cache, vocab
from tests.data.corpora import TINY_REPOS, write_tree

BYTES = vocab.byte_vocabulary()


def _documents(task, split="train"):
  """[(name, token ids)] of the split, in the reader's order, tokenised directly."""
  return [(d.name, BYTES.encode(d.text)) for d in tasks.get_reader(task).documents(split)]


def _contents(cache):
  """{id: (name, tokens)} of a cache."""
  return {int(i): (name, cache.document(k).tolist())
          for k, (i, name) in enumerate(zip(cache.document_ids, cache.names))}


@pytest.fixture
def five_repos(tmp_path):
  """A folder task of 5 training documents (and an empty one, skipped when read)."""
  write_tree(tmp_path / "corpus" / "train", {**TINY_REPOS, "empty": {"a.txt": b"\n"}})
  for split in ("validation", "test"):
    (tmp_path / "corpus" / split).mkdir()
  tasks.register_folder_task("shard_repos", "directory", root=tmp_path / "corpus")
  return "shard_repos"


@pytest.mark.parametrize("num_shards", [2, 3])
def test_shards_are_disjoint_and_together_the_split(five_repos, tmp_path, num_shards):
  expected = _documents(five_repos)
  assert len(expected) == 5
  caches = token_cache.load_or_build_shards(five_repos, "train", BYTES, range(num_shards),
                                            num_shards, tmp_path / "data", progress=False)
  union = {}
  for shard, cache in enumerate(caches):
    assert (cache.shard, cache.num_shards) == (shard, num_shards)
    assert cache.path.name == f"train-{cache.key}-{shard:05d}-of-{num_shards:05d}"
    assert cache.meta["split_documents"] == 5
    assert cache.meta["report"]["documents"] == cache.num_documents
    contents = _contents(cache)
    assert not set(contents) & set(union)
    union.update(contents)
  assert union == {i: (name, tokens) for i, (name, tokens) in enumerate(expected)}
  # The whole split's cache: the same ids, under today's name, without shard fields.
  whole = token_cache.load_or_build(five_repos, "train", BYTES, tmp_path / "data",
                                    progress=False)
  assert _contents(whole) == union
  assert whole.path.name == f"train-{whole.key}" and whole.key == caches[0].key
  assert "shard" not in whole.meta and (whole.shard, whole.num_shards) == (0, 1)


def test_only_the_shards_asked_for_are_tokenised_in_one_pass(five_repos, tmp_path):
  caches = token_cache.load_or_build_shards(five_repos, "train", BYTES, [0, 2], 3,
                                            tmp_path / "data", progress=False)
  folder = tmp_path / "data" / "tokens" / five_repos
  key = caches[0].key
  assert sorted(p.name for p in folder.iterdir()) == [
      f"train-{key}-00000-of-00003", f"train-{key}-00002-of-00003"]
  assert [c.document_ids.tolist() for c in caches] == [[0, 3], [2]]
  # Asked again, the caches are read back, not built again.
  mtime = (caches[1].path / "tokens.bin").stat().st_mtime_ns
  again = token_cache.load_or_build_shards(five_repos, "train", BYTES, [2], 3,
                                           tmp_path / "data", progress=False)
  assert (again[0].path / "tokens.bin").stat().st_mtime_ns == mtime
  with pytest.raises(ValueError, match=r"shards \[3\] must be in \[0, num_shards=3\)"):
    token_cache.load_or_build_shards(five_repos, "train", BYTES, [3], 3, tmp_path / "data")


def test_a_shard_drops_its_own_short_documents(tmp_path):
  """With a minimum length, documents are assigned to shards by their place among
  the documents read, and each shard drops its own short ones after tokenising."""
  texts = {"a": b"x" * 40, "b": b"tiny", "c": b"y" * 30, "d": b"z" * 50, "e": b"ok"}
  write_tree(tmp_path / "corpus" / "train", {k: {"t.txt": v} for k, v in texts.items()})
  for split in ("validation", "test"):
    (tmp_path / "corpus" / split).mkdir()
  tasks.register_folder_task("shard_short", "directory", root=tmp_path / "corpus",
                             min_tokens=6)
  caches = token_cache.load_or_build_shards("shard_short", "train", BYTES, [0, 1], 2,
                                            tmp_path / "data", progress=False)
  # Read order a b c d e: shard 0 gets a c e (drops e), shard 1 b d (drops b).
  assert [c.names for c in caches] == [["a", "c"], ["d"]]
  assert [c.meta["report"]["skipped_short"] for c in caches] == [1, 1]
  assert [c.document_ids.tolist() for c in caches] == [[0, 2], [1]]
  assert caches[1].document(0).tolist() == BYTES.encode("z" * 50)


def test_shards_on_a_gs_data_dir_are_uploaded_and_downloaded(five_repos, local_gcs, tmp_path,
                                                            monkeypatch):
  monkeypatch.setenv(data_dir_lib.LOCAL_COPIES_ENV, str(tmp_path / "local_copies"))
  (local_gcs / "bucket").mkdir()
  built = token_cache.load_or_build_shards(five_repos, "train", BYTES, [1], 2,
                                           "gs://bucket/data", progress=False)[0]
  assert str(built.path).startswith("gs://bucket/data/tokens/shard_repos/train-")
  on_bucket = local_gcs / "bucket" / "data" / "tokens" / five_repos
  assert [p.name for p in on_bucket.iterdir()] == [built.path.name]
  assert sorted(p.name for p in (on_bucket / built.path.name).iterdir()) == sorted(
      token_cache.CACHE_FILES)
  assert json.loads((on_bucket / built.path.name / "meta.json").read_text())["shard"] == 1
  # Another host, without the local copy, downloads it.
  shutil.rmtree(tmp_path / "local_copies")
  again = token_cache.load_or_build_shards(five_repos, "train", BYTES, [1], 2,
                                           "gs://bucket/data", progress=False)[0]
  assert _contents(again) == _contents(built) == {
      i: doc for i, doc in enumerate(_documents(five_repos)) if i % 2 == 1}
  np.testing.assert_array_equal(again.document_ids, [1, 3])
