"""`Explanation` (`inference/explanation.py`) on hand-made retrievals, and `assemble` from
the readings' segments, against answers worked out by hand or by explicit loops."""
import numpy as np
import pytest

from memorizing_jax.inference import explanation
from memorizing_jax.inference.explanation import Explanation
from memorizing_jax.inference.reading import SegmentOutput


def _explanation():
  """4 tokens "abcd", one kNN layer of 2 heads, k = 2. Tokens 0 and 1 retrieve nothing;
  token 2: head 0 positions (0, 1) weights (.375, .625), head 1 position 1 (weight 1)
  and an invalid slot; token 3: head 0 positions (1, 2) weights (.75, .25), head 1
  positions (0, 2) weights (.875, .125). (Weights exact in float32.)"""
  n, layers, heads, k = 4, 1, 2, 2
  positions = np.zeros((n, layers, heads, k), np.int32)
  weights = np.zeros((n, layers, heads, k), np.float32)
  valid = np.zeros((n, layers, heads, k), bool)
  positions[2, 0] = [[0, 1], [1, 0]]
  weights[2, 0] = [[0.375, 0.625], [1.0, 0.0]]
  valid[2, 0] = [[True, True], [True, False]]
  positions[3, 0] = [[1, 2], [0, 2]]
  weights[3, 0] = [[0.75, 0.25], [0.875, 0.125]]
  valid[3, 0] = True
  return Explanation(
      tokens=np.array([100, 101, 102, 103], np.int32), pieces=["a", "b", "c", "d"],
      loss=np.array([1.0, 2.0, 0.5, 3.0]), loss_without_memory=np.array([1.0, 2.5, 0.25, 4.0]),
      gate=np.full((layers, heads), 0.5, np.float32),
      memory_share=np.zeros((n, layers, heads), np.float32), retrieved_positions=positions,
      retrieved_weights=weights, retrieved_valid=valid)


def test_gain_pieces_and_context():
  e = _explanation()
  np.testing.assert_array_equal(e.gain, [0.0, 0.5, -0.25, 1.0])
  # Memory position q holds the key of input q: the start token, then token q - 1.
  assert [e.piece_at(q) for q in range(4)] == [explanation.START, "a", "b", "c"]
  assert e.context(3) == "abc[d]"
  assert e.context(1, before=8, after=2) == "a[b]cd"
  assert e.context(2, before=1, after=5) == "b[c]d"
  assert e.context(0, before=1, after=1) == "[a]b"


def test_top_gains_are_the_largest_gains_best_first():
  e = _explanation()
  assert e.top_gains(2) == [
      dict(index=3, token="d", gain=1.0, loss=3.0, loss_without_memory=4.0, context="abc[d]"),
      dict(index=1, token="b", gain=0.5, loss=2.0, loss_without_memory=2.5, context="a[b]")]
  assert [g["index"] for g in e.top_gains()] == [3, 1, 0, 2]  # all 4, ties in text order


def test_retrievals_are_the_highest_weighted_valid_entries_over_heads():
  e = _explanation()
  assert e.retrievals(3, n=3) == [
      dict(layer=0, head=1, weight=0.875, position=0, distance=3, token="<start>",
           context="<start>"),
      dict(layer=0, head=0, weight=0.75, position=1, distance=2, token="a", context="[a]bcd"),
      dict(layer=0, head=0, weight=0.25, position=2, distance=1, token="b", context="a[b]cd")]
  # Token 2 has 3 valid entries: n = 5 gives those 3 (the invalid slot is left out).
  assert [(r["head"], r["weight"], r["position"]) for r in e.retrievals(2, n=5)] == [
      (1, 1.0, 1), (0, 0.625, 1), (0, 0.375, 0)]
  assert e.retrievals(0) == []


def test_top_distances_are_each_heads_best_entry():
  # token 2: head 0's best is position 1 (.625), head 1's position 1; token 3: head 0's
  # best is position 1 (.75), head 1's position 0 (.875). Tokens 0, 1: nothing.
  np.testing.assert_array_equal(_explanation().top_distances(), [1, 1, 2, 3])


def test_summary_and_repr():
  e = _explanation()
  summary = ("4 tokens: loss 1.6250 with memory, 1.9375 without (gain +0.3125 nats/token; "
             "2 tokens gained, 1 lost)")
  assert e.summary() == summary
  assert repr(e) == f"Explanation({summary})"


def _segment(rng, start, count, layers, heads, k):
  """A `SegmentOutput` of random losses and diagnostics (shapes as `reading` gives them)."""
  diagnostics = [dict(gate=rng.random(heads).astype(np.float32),
                      memory_share=rng.random((heads, count)).astype(np.float32),
                      retrieved_positions=rng.integers(0, 9, (heads, count, k)),
                      retrieved_weights=rng.random((heads, count, k)),
                      retrieved_valid=rng.random((heads, count, k)) > 0.5)
                 for _ in range(layers)]
  return SegmentOutput(start=start, count=count, loss=rng.random(count).astype(np.float32),
                       predictions=np.zeros(count, np.int32), diagnostics=diagnostics)


def test_assemble_puts_tokens_first_then_layers_then_heads():
  """Two segments (3 and 2 tokens) of 2 kNN layers of 2 heads, k = 2: each per-token
  field at [i, layer, head] is the segment's [head, i - start] of that layer."""
  rng = np.random.default_rng(0)
  layers, heads, k = 2, 2, 2
  with_memory = [_segment(rng, 0, 3, layers, heads, k), _segment(rng, 3, 2, layers, heads, k)]
  without = [_segment(rng, 0, 3, layers, heads, k), _segment(rng, 3, 2, layers, heads, k)]
  e = explanation.assemble([5, 6, 7, 8, 9], list("vwxyz"), with_memory, without, True,
                           heads, k)
  assert e.tokens.dtype == np.int32 and e.tokens.tolist() == [5, 6, 7, 8, 9]
  assert e.pieces == list("vwxyz") and e.memory
  np.testing.assert_array_equal(e.loss, np.concatenate([s.loss for s in with_memory]))
  np.testing.assert_array_equal(e.loss_without_memory,
                                np.concatenate([s.loss for s in without]))
  np.testing.assert_array_equal(e.gate, [d["gate"] for d in with_memory[0].diagnostics])
  assert e.retrieved_positions.dtype == np.int32 and e.retrieved_valid.dtype == bool
  assert e.retrieved_weights.dtype == np.float32 and e.memory_share.shape == (5, 2, 2)
  for i in range(5):
    segment = with_memory[0] if i < 3 else with_memory[1]
    for layer in range(layers):
      d = segment.diagnostics[layer]
      for head in range(heads):
        at = (i, layer, head)
        assert e.memory_share[at] == d["memory_share"][head, i - segment.start]
        for name in ("retrieved_positions", "retrieved_weights", "retrieved_valid"):
          np.testing.assert_array_equal(getattr(e, name)[at], d[name][head, i - segment.start]
                                        .astype(getattr(e, name).dtype), err_msg=name)


def test_assemble_without_knn_layers_gives_empty_layer_axes():
  rng = np.random.default_rng(1)
  segments = [_segment(rng, 0, 3, 0, 2, 4)]
  e = explanation.assemble([1, 2, 3], list("abc"), segments, segments, False, 2, 4)
  assert e.gate.shape == (0, 2) and e.memory_share.shape == (3, 0, 2)
  assert e.retrieved_positions.shape == e.retrieved_valid.shape == (3, 0, 2, 4)
  assert not e.memory
  np.testing.assert_array_equal(e.gain, 0.0)
  assert e.top_distances().size == 0 and e.retrievals(1) == []
  assert e.top_gains(1)[0]["gain"] == pytest.approx(0.0)
