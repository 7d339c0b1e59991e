"""Value-token accounting of the study's evaluation, on real stream batches (the splits by
position and copy source are tested with the evaluation core: tests/inference/test_evaluation_core.py)."""
import numpy as np
import pytest

from memorizing_jax.data import synthetic
from memorizing_jax.data.streams import SegmentStream
from experiments.paper_study import evaluate

CONFIG = synthetic.SyntheticConfig(num_names=6, num_uses=30, eval_documents=3,
                                   name_length=2, separator="=")
L = 16


def _batches():
  texts = [synthetic.generate_document(CONFIG, "validation", i) for i in range(3)]
  ids = [np.frombuffer(t.encode(), np.uint8).astype(np.int32) + 3 for t in texts]
  offsets = np.cumsum([0] + [len(x) for x in ids])
  stream = SegmentStream(np.concatenate(ids), offsets, 2, L, mode="eval")
  return texts, [synthetic.annotate(t) for t in texts], list(stream)


def _expected_totals(recalls):
  totals = dict.fromkeys(evaluate.KINDS, 0)
  for doc in recalls:
    for r in doc:
      totals[synthetic.classify(r, L)] += 1
  return totals


def test_perfect_and_wrong_predictions():
  _, recalls, batches = _batches()
  perfect, wrong = evaluate.RecallCounts(), evaluate.RecallCounts()
  for b in batches:
    evaluate.count_recalls(perfect, b["targets"], b["document_id"], b["token_offset"],
                           recalls, L, CONFIG.statement_length,
                           CONFIG.value_index)
    evaluate.count_recalls(wrong, np.zeros_like(b["targets"]), b["document_id"],
                           b["token_offset"], recalls, L, CONFIG.statement_length,
                           CONFIG.value_index)
  assert perfect.total == _expected_totals(recalls)
  assert perfect.total[synthetic.FAR] > 0 and perfect.total[synthetic.NEAR] > 0
  assert all(perfect.accuracy(k) == 1.0 for k in evaluate.KINDS)
  assert all(wrong.accuracy(k) == 0.0 for k in evaluate.KINDS)
  assert perfect.retrieval_hit_rate() is None  # no retrievals given


def test_retrieval_hits_on_the_source_statement():
  _, recalls, batches = _batches()
  # A statement spans inputs source + 3 - statement_length .. source + 2.
  n = CONFIG.statement_length
  for shift, hits in ((0, True), (2 - n, True), (1, True), (1 - n, False), (2, False)):
    counts = evaluate.RecallCounts()
    for b in batches:
      top = np.full((2, 3, L), -1, np.int64)  # [batch, heads, length]
      for row, doc in enumerate(b["document_id"].tolist()):
        for r in recalls[doc] if doc >= 0 else ():
          j = r.position - int(b["token_offset"][row])
          if 0 <= j < L and r.source >= 0:
            top[row, 1, j] = r.source + 1 + shift  # head 1 retrieves near the source
      evaluate.count_recalls(counts, b["targets"], b["document_id"], b["token_offset"],
                             recalls, L, CONFIG.statement_length,
                             CONFIG.value_index, top)
    assert counts.far_with_retrieval == counts.total[synthetic.FAR]
    assert counts.retrieval_hit_rate() == (1.0 if hits else 0.0), shift


@pytest.mark.parametrize("edges", [(8, 8), (9, 3), (0, 4)])
def test_bad_position_edges(edges):
  with pytest.raises(ValueError, match="position_edges"):
    evaluate.evaluate_run("/nonexistent", position_edges=edges)
