"""How `inference/reading.py` cuts texts into segments: `read_batch` and `read_tokens` with a
recording stand-in for the model step (the segments worked out by hand), and the step
`make_segment_reader` builds, traced on the shared tiny run. (The losses the real step
gives are checked against the plain forward pass in test_inference.py.)"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memorizing_jax.inference import reading
from memorizing_jax.model import ModelConfig, init_state, sown_by_layer

CONFIG = ModelConfig(vocab_size=64, num_layers=2, d_model=8, num_heads=2, head_dim=4,
                     mlp_dim=16, segment_length=4, knn_layers=(-1,), knn_k=2, memory_slots=8)
PAD = 0


class RecordingReader:
  """Stands in for `make_segment_reader`'s step: records what it is given, writes 4
  entries to every memory (so that emptying shows), and returns nll = targets + 0.5,
  predictions = inputs and, per kNN layer 1, diagnostics made from the inputs."""

  def __init__(self):
    self.calls = []

  def __call__(self, params, state, inputs, targets, start_of_sequence):
    self.calls.append(dict(params=params, counts=[np.asarray(m.count) for m in state.memories],
                           inputs=inputs.copy(), targets=targets.copy(),
                           sos=np.asarray(start_of_sequence).copy()))
    state = state.replace(memories=tuple(m.replace(count=m.count + 4) for m in state.memories))
    batch, length = inputs.shape
    heads, k = CONFIG.num_heads, CONFIG.knn_k
    per_token = np.broadcast_to(inputs[:, None, :], (batch, heads, length))
    sown = {"layer_1": {"attention": {
        "gate": np.array([0.25, 0.75], np.float32),
        "memory_share": per_token / 100.0,
        "retrieved_positions": np.repeat(per_token[..., None], k, axis=-1),
        "retrieved_weights": np.full((batch, heads, length, k), 0.5, np.float32),
        "retrieved_valid": np.ones((batch, heads, length, k), bool),
        "memory_fill": np.zeros((batch,), np.float32)}}}  # not one of DIAGNOSTIC_NAMES
    return state, targets + 0.5, inputs, sown


def test_read_batch_cuts_each_row_into_segments_after_the_start_token():
  """Texts of 6 and 2 tokens in segments of 4: inputs `[pad] t_0 ..`, targets `t_0 ..`,
  each row padded after its end; the start of sequence is set on the first segment."""
  reader = RecordingReader()
  a, b = [11, 12, 13, 14, 15, 16], [21, 22]
  segments = list(reading.read_batch(CONFIG, reader, "params", [a, b], PAD))
  assert all(isinstance(s, reading.BatchSegment) for s in segments)
  assert [s.start for s in segments] == [0, 4]
  assert [s.counts.tolist() for s in segments] == [[4, 2], [2, 0]]
  first, second = reader.calls
  np.testing.assert_array_equal(first["inputs"], [[PAD, 11, 12, 13], [PAD, 21, PAD, PAD]])
  np.testing.assert_array_equal(first["targets"], [[11, 12, 13, 14], [21, 22, PAD, PAD]])
  np.testing.assert_array_equal(second["inputs"], [[14, 15, PAD, PAD], [PAD] * 4])
  np.testing.assert_array_equal(second["targets"], [[15, 16, PAD, PAD], [PAD] * 4])
  assert first["sos"].tolist() == [True, True] and second["sos"].tolist() == [False, False]
  assert first["params"] == "params"
  # The state goes from one segment to the next: the second call sees the first's writes.
  assert [c["counts"][0].tolist() for c in reader.calls] == [[0, 0], [4, 4]]
  # Each segment's outputs are the step's, whole ([batch, L]).
  np.testing.assert_array_equal(segments[1].loss, second["targets"] + 0.5)
  np.testing.assert_array_equal(segments[0].predictions, first["inputs"])
  assert segments[0].sown["layer_1"]["attention"]["gate"].tolist() == [0.25, 0.75]


def test_read_batch_without_memory_empties_it_before_every_segment():
  reader = RecordingReader()
  list(reading.read_batch(CONFIG, reader, None, [list(range(1, 10)), [5]], PAD,
                          memory=False))
  assert [c["counts"][0].tolist() for c in reader.calls] == [[0, 0]] * 3  # 9 tokens: 3


@pytest.mark.parametrize("texts", [[], [[1, 2], []], [[[1, 2]]]])
def test_read_batch_refuses_empty_texts(texts):
  with pytest.raises(ValueError, match="a text has no tokens"):
    next(reading.read_batch(CONFIG, RecordingReader(), None, texts, PAD))


def test_read_tokens_gives_each_segment_cut_to_its_tokens():
  """5 tokens in segments of 4: a segment of 4 and one of 1; with diagnostics, row 0 of
  each kNN layer's, cut to the segment's tokens ([heads, count(, k)])."""
  ids = [31, 32, 33, 34, 35]
  plain = list(reading.read_tokens(CONFIG, RecordingReader(), None, ids, PAD))
  assert all(isinstance(s, reading.SegmentOutput) for s in plain)
  assert [(s.start, s.count) for s in plain] == [(0, 4), (4, 1)]
  np.testing.assert_array_equal(np.concatenate([s.loss for s in plain]),
                                np.array(ids) + 0.5)  # every token is a target once
  np.testing.assert_array_equal(np.concatenate([s.predictions for s in plain]),
                                [PAD, 31, 32, 33, 34])
  assert plain[0].diagnostics == []
  segments = list(reading.read_tokens(CONFIG, RecordingReader(), None, ids, PAD,
                                      with_diagnostics=True))
  (layer,) = segments[1].diagnostics
  assert sorted(layer) == sorted(reading.DIAGNOSTIC_NAMES)
  assert layer["gate"].tolist() == [0.25, 0.75]
  np.testing.assert_allclose(layer["memory_share"], [[0.34], [0.34]])
  assert layer["retrieved_positions"].tolist() == [[[34, 34]], [[34, 34]]]
  assert segments[0].diagnostics[0]["retrieved_valid"].shape == (2, 4, 2)


def test_make_segment_reader_traces_the_documented_step(loaded):
  """Traced only (nothing compiled): outputs [batch, L], the kNN layer's diagnostics
  only when asked for, and the state donated (every leaf aliased to an output)."""
  config, batch = loaded.config, 2
  state = jax.eval_shape(lambda: init_state(config, batch))
  tokens = jax.ShapeDtypeStruct((batch, config.segment_length), jnp.int32)
  sos = jax.ShapeDtypeStruct((batch,), bool)
  for diagnostics in (True, False):
    reader = reading.make_segment_reader(loaded.module, diagnostics=diagnostics)
    lowered = reader.lower(loaded.params, state, tokens, tokens, sos)
    new_state, nll, predictions, sown = lowered.out_info
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    assert (nll.shape, nll.dtype) == ((batch, 16), jnp.float32)
    assert (predictions.shape, predictions.dtype) == ((batch, 16), jnp.int32)
    layers = sown_by_layer(sown)
    if diagnostics:
      assert list(layers) == [1] and set(reading.DIAGNOSTIC_NAMES) <= set(layers[1])
      assert layers[1]["retrieved_positions"].shape == (batch, 2, 16, config.knn_k)
    else:
      assert layers == {}
    assert lowered.as_text().count("tf.aliasing_output") == len(jax.tree.leaves(state))
