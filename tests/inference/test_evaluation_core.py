"""The per-token evaluation core (`memorizing_jax.inference.evaluation`): scored batches
against the notebook API's per-document scores, and the splits against walks over the
documents."""
import math

import numpy as np
import pytest

import memorizing_jax as mj
from memorizing_jax.data.streams import SegmentStream
from memorizing_jax.inference import evaluation
from meshes import cpu_mesh  # pylint: disable=g-bad-import-order

# Short documents (3 definitions, 6 uses: 27 characters + EOS = 2 segments of 16), 11 of
# them for 8 rows: rows take new documents mid-stream and the last batches have padding rows.
TASK = "evaluation_core_recall"


@pytest.fixture(scope="module")
def short_documents(tmp_path_factory):
  """(task, data_dir): a synthetic recall task of short documents."""
  from memorizing_jax.data import synthetic, synthetic_task  # pylint: disable=g-import-not-at-top
  synthetic_task.register(TASK, synthetic.SyntheticConfig(
      num_names=3, num_uses=6, recent_names=2, eval_documents=11))
  return TASK, str(tmp_path_factory.mktemp("evaluation_core_data"))


def _stream(task, data_dir, vocabulary, rows=8, length=16):
  from memorizing_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.make_stream(task, "validation", rows, length, vocabulary=vocabulary,
                              mode="eval", data_dir=data_dir, progress=False)


def _per_document(scored_batches, field):
  """{document id: [targets] the field's value of each target, in document order}."""
  out = {}
  for scored in scored_batches:
    values = getattr(scored, field)
    b = scored.batch
    for row, doc in enumerate(b["document_id"].tolist()):
      if doc < 0:
        continue
      real = np.flatnonzero(b["loss_mask"][row])
      positions = int(b["token_offset"][row]) + real
      target = out.setdefault(doc, {})
      target.update(zip(positions.tolist(), values[row, real].tolist()))
  return {doc: np.array([v[p] for p in sorted(v)]) for doc, v in out.items()}


@pytest.fixture(scope="module")
def scored_on_mesh(trained_workdir, short_documents):
  """The whole split of `short_documents`, read 8 rows at a time on a 4 x 2 mesh, with
  and without memory."""
  task, data_dir = short_documents
  mesh = cpu_mesh(4, 2)
  on_mesh = mj.load(trained_workdir, mesh=mesh)
  return list(evaluation.score_batches(
      on_mesh.config, on_mesh.params, _stream(task, data_dir, on_mesh.vocabulary), mesh=mesh,
      memory_gain=True))


def test_scores_on_a_mesh_equal_the_notebook_scores_of_each_document(
    scored_on_mesh, trained_workdir, short_documents):
  """Every target of the split has the loss `mj.load(...).score` gives it reading its
  document alone, with and without memory."""
  task, data_dir = short_documents
  scored = scored_on_mesh
  assert len(scored) == 4 and (scored[-1].batch["document_id"] < 0).any()
  with_memory = _per_document(scored, "nll")
  without = _per_document(scored, "nll_without_memory")
  m = mj.load(trained_workdir)
  from memorizing_jax.data import tasks  # pylint: disable=g-import-not-at-top
  texts = [d.text for d in tasks.get_reader(task).documents("validation")]
  assert sorted(with_memory) == list(range(len(texts)))
  length = m.config.segment_length
  for doc, text in enumerate(texts):
    ids = np.append(m.encode(text), m.eos_id)  # the stream's targets end with EOS
    assert len(ids) > length  # the second segment reads the memory
    np.testing.assert_allclose(with_memory[doc], m.score(ids).loss, atol=2e-5)
    np.testing.assert_allclose(without[doc], m.score(ids, memory=False).loss, atol=2e-5)
    # The first segment has nothing in memory: both readings agree bit for bit.
    np.testing.assert_array_equal(with_memory[doc][:length], without[doc][:length])
  assert any(np.any(with_memory[d][length:] != without[d][length:]) for d in with_memory)
  # Without a mesh (the default device), the same; max_batches stops the stream.
  alone = list(evaluation.score_batches(m.config, m.params,
                                        _stream(task, data_dir, m.vocabulary), max_batches=2))
  assert len(alone) == 2 and alone[0].nll_without_memory is None
  for a, b in zip(alone, scored):
    np.testing.assert_allclose(a.nll, b.nll, atol=2e-5)


def test_tally_adds_up_what_a_numpy_reference_computes(scored_on_mesh):
  scored = scored_on_mesh
  edges, gain_edges = (5, 16, 20), (-0.05, 0.0, 0.05)
  tally = evaluation.Tally([evaluation.Split.by_position(edges),
                            evaluation.Split.by_memory_gain(gain_edges)])
  for s in scored:
    tally.add(s)
  result = tally.result()
  mask = np.concatenate([s.batch["loss_mask"] for s in scored]).astype(bool)
  nll = np.concatenate([s.nll for s in scored])[mask].astype(np.float64)
  off = np.concatenate([s.nll_without_memory for s in scored])[mask].astype(np.float64)
  hits = np.concatenate([s.predictions == s.batch["targets"] for s in scored])[mask]
  position = np.concatenate([s.batch["token_offset"][:, None] + np.arange(16)[None]
                             for s in scored])[mask]
  assert result["tokens"] == mask.sum()
  assert result["loss"] == pytest.approx(nll.mean())
  assert result["perplexity"] == pytest.approx(math.exp(nll.mean()))
  assert result["bits_per_token"] == pytest.approx(nll.mean() / math.log(2))
  assert result["accuracy"] == pytest.approx(hits.mean())
  assert result["perplexity_without_memory"] == pytest.approx(math.exp(off.mean()))
  assert result["gain_share"] == pytest.approx(np.mean(off - nll > 0))
  for split, key, bounds in (("by_position", position, (0, *edges, None)),
                             ("by_memory_gain", off - nll, (None, *gain_edges, None))):
    rows = result[split]
    assert [(r["start"], r["end"]) for r in rows] == list(zip(bounds[:-1], bounds[1:]))
    for r in rows:
      inside = np.ones(len(nll), bool)
      if r["start"] is not None:
        inside &= key >= r["start"]
      if r["end"] is not None:
        inside &= key < r["end"]
      assert r["tokens"] == inside.sum(), (split, r)
      if not inside.any():
        assert r["perplexity"] is None and r["gain_share"] is None
        continue
      assert r["perplexity"] == pytest.approx(math.exp(nll[inside].mean()))
      assert r["perplexity_without_memory"] == pytest.approx(math.exp(off[inside].mean()))
      assert r["gain_share"] == pytest.approx(np.mean(off[inside] - nll[inside] > 0))
  assert result["by_position"][0]["gain_share"] == 0.0  # positions 0-4: the first segment


def _fake_scored(stream):
  """Scored batches whose 'loss' of each target is its token id (no model)."""
  for b in stream:
    yield evaluation.ScoredBatch(batch=b, nll=b["targets"] * b["loss_mask"],
                                 predictions=b["targets"])


@pytest.mark.parametrize("edges", [(5,), (16, 40), (1, 2, 3, 100)])
def test_position_split_matches_a_walk_over_the_documents(edges):
  """Each target's 'loss' is its token id, so every bucket's sum and count can be
  computed from the documents alone: document d is read as d + [eos], position p."""
  rng = np.random.default_rng(0)
  docs = [rng.integers(3, 50, size=n) for n in (7, 45, 0, 31, 16)]
  eos = 1
  expected_loss, expected_count = np.zeros(len(edges) + 1), np.zeros(len(edges) + 1)
  for doc in docs:
    for p, token in enumerate([*doc.tolist(), eos]):
      bucket = sum(p >= e for e in edges)
      expected_loss[bucket] += token
      expected_count[bucket] += 1
  offsets = np.cumsum([0] + [len(d) for d in docs])
  stream = SegmentStream(np.concatenate(docs), offsets, 3, 8, mode="eval", eos_id=eos)
  split = evaluation.Split.by_position(edges)
  for scored in _fake_scored(stream):
    split.add(scored)
  np.testing.assert_array_equal(split.sums["tokens"], expected_count)
  np.testing.assert_allclose(split.sums["loss"], expected_loss)
  assert "loss_without_memory" not in split.sums


def test_split_rows_give_each_buckets_perplexity():
  split = evaluation.Split.by_position((10, 20))
  assert [(r["start"], r["end"], r["tokens"], r["perplexity"]) for r in split.rows()] == [
      (0, 10, 0, None), (10, 20, 0, None), (20, None, 0, None)]  # nothing added yet
  split.sums = {"loss": np.array([2.0, 0.0, 3.0]), "tokens": np.array([2.0, 0.0, 1.0])}
  rows = split.rows()
  assert [(r["start"], r["end"], r["tokens"]) for r in rows] == [
      (0, 10, 2), (10, 20, 0), (20, None, 1)]
  assert rows[0]["perplexity"] == pytest.approx(np.e)
  assert rows[1]["perplexity"] is None
  assert rows[2]["perplexity"] == pytest.approx(np.e ** 3)
  assert "perplexity_without_memory" not in rows[0]


def test_copy_source_buckets_follow_the_bands():
  """Targets take their document's band; padding rows and the EOS target bucket 0."""
  bands = {0: np.array([0, 1, 2, 1]), 1: np.array([2, 2])}
  buckets = evaluation.copy_source_buckets(np.array([0, 1, -1]), np.array([2, 0, 0]), 3,
                                           bands.__getitem__)
  np.testing.assert_array_equal(buckets, [[2, 1, 0], [2, 2, 0], [0, 0, 0]])


def test_copy_source_split_sums_each_target_in_its_documents_band():
  """Hand-worked: bands {0: [0, 1, 2, 1], 1: [2, 2]}; row 0 reads document 0 from
  position 2, row 1 document 1 from 0 (its last target masked), row 2 is padding."""
  bands = {0: np.array([0, 1, 2, 1]), 1: np.array([2, 2])}
  split = evaluation.Split.by_copy_source((8,), bands.__getitem__)
  assert split.name == "by_copy_source"
  assert split.bounds == [(None, None), (0, 8), (8, None)]
  batch = {"document_id": np.array([0, 1, -1]), "token_offset": np.array([2, 0, 0]),
           "loss_mask": np.array([[1, 1, 1], [1, 1, 0], [0, 0, 0]], np.float32),
           "targets": np.zeros((3, 3), np.int32)}
  scored = evaluation.ScoredBatch(
      batch=batch, nll=np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 0.0], [0.0, 0.0, 0.0]]),
      predictions=np.zeros((3, 3), np.int32),
      nll_without_memory=np.array([[1.5, 2.0, 2.0], [5.0, 5.0, 9.0], [7.0, 7.0, 7.0]]))
  split.add(scored)
  split.add(scored)  # sums add up over batches
  # Targets (bucket, loss, loss without memory): row 0: (2, 1, 1.5), (1, 2, 2), (0, 3, 2)
  # (position 4 is past document 0: bucket 0); row 1: (2, 4, 5), (2, 5, 5).
  np.testing.assert_array_equal(split.sums["tokens"], [2, 2, 6])
  np.testing.assert_allclose(split.sums["loss"], [6, 4, 20])
  np.testing.assert_allclose(split.sums["loss_without_memory"], [4, 4, 23])
  np.testing.assert_array_equal(split.sums["gaining"], [0, 0, 4])  # 1.5 > 1 and 5 > 4
  rows = split.rows()
  assert [(r["start"], r["end"], r["tokens"]) for r in rows] == [
      (None, None, 2), (0, 8, 2), (8, None, 6)]
  assert rows[2]["perplexity"] == pytest.approx(math.exp(20 / 6))
  assert rows[2]["perplexity_without_memory"] == pytest.approx(math.exp(23 / 6))
  assert rows[2]["gain_share"] == pytest.approx(4 / 6)
  assert rows[0]["gain_share"] == 0.0
