"""The per-token core (`memorizing_jax.model.scoring`) against numpy's log-softmax of the
model's own logits."""
import jax
import jax.numpy as jnp
import numpy as np

from memorizing_jax import model as M
from memorizing_jax.model import scoring


def _numpy_nll(logits, targets):
  """-log softmax(logits)[target] in float64."""
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(-1, keepdims=True)
  logp = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  return -np.take_along_axis(logp, np.asarray(targets)[..., None], -1)[..., 0]


def test_token_nll_is_numpy_log_softmax_nll():
  rng = np.random.default_rng(0)
  logits = (rng.normal(size=(3, 5, 11)) * 4).astype(np.float32)
  targets = rng.integers(0, 11, size=(3, 5)).astype(np.int32)
  nll = scoring.token_nll(jnp.asarray(logits), jnp.asarray(targets))
  assert nll.shape == (3, 5) and nll.dtype == jnp.float32
  np.testing.assert_allclose(nll, _numpy_nll(logits, targets), rtol=1e-6, atol=1e-6)
  # bfloat16 logits are scored in float32.
  half = jnp.asarray(logits, jnp.bfloat16)
  assert scoring.token_nll(half, jnp.asarray(targets)).dtype == jnp.float32
  np.testing.assert_allclose(scoring.token_nll(half, jnp.asarray(targets)),
                             _numpy_nll(np.asarray(half, np.float32), targets), rtol=1e-5)


def _segments(tiny, batch=2, segments=2):
  rng = np.random.default_rng(1)
  length = tiny.config.segment_length
  tokens = rng.integers(0, tiny.config.vocab_size, (batch, segments * length + 1)).astype(
      np.int32)
  return [(tokens[:, k * length:(k + 1) * length], tokens[:, k * length + 1:(k + 1) * length + 1],
           np.full((batch,), k == 0)) for k in range(segments)]


def test_scores_are_those_of_the_models_logits_over_segments(tiny):
  """Two segments (the second reads the memory the first wrote): nll, predictions and
  state against the model applied directly and numpy's log-softmax."""
  state = reference_state = M.init_state(tiny.config, 2)
  score = jax.jit(lambda p, s, i, t, f: scoring.score_segment(tiny.model, p, s, i, t, f))
  for inputs, targets, sos in _segments(tiny):
    scores = score(tiny.params, state, inputs, targets, sos)
    logits, reference_state = tiny.apply(tiny.params, inputs, reference_state, sos)
    assert scores.nll.shape == scores.predictions.shape == inputs.shape
    assert scores.predictions.dtype == jnp.int32 and scores.diagnostics == {}
    np.testing.assert_allclose(scores.nll, _numpy_nll(logits, targets), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(scores.predictions, np.argmax(logits, -1))
    jax.tree.map(np.testing.assert_array_equal, scores.state, reference_state)
    state = scores.state


def test_diagnostics_are_the_sown_collection(tiny):
  (inputs, targets, sos), = _segments(tiny, segments=1)
  state = M.init_state(tiny.config, 2)
  scores = scoring.score_segment(tiny.model, tiny.params, state, inputs, targets, sos,
                                 diagnostics=True)
  assert isinstance(scores, scoring.SegmentScores)
  _, variables = tiny.apply_with_diagnostics(tiny.params, inputs, state, sos)
  want = M.sown_by_layer(variables[M.DIAGNOSTICS])
  got = M.sown_by_layer(scores.diagnostics)
  assert list(got) == list(want) == [1]
  jax.tree.map(np.testing.assert_array_equal, got, want)


def test_gradient_is_that_of_the_log_softmax_loss(tiny):
  """Differentiable in the parameters: the masked mean loss's gradient equals that of
  the loss written with jax.nn.log_softmax on the model's logits."""
  (inputs, targets, sos), = _segments(tiny, segments=1)
  state = M.init_state(tiny.config, 2)
  mask = np.ones(inputs.shape, np.float32)
  mask[0, 3:] = 0

  def loss(params):
    nll = scoring.score_segment(tiny.model, params, state, inputs, targets, sos).nll
    return jnp.sum(nll * mask) / mask.sum()

  def reference(params):
    logits, _ = tiny.model.apply({"params": params}, inputs, state, sos)
    logp = jax.nn.log_softmax(logits, -1)
    return -jnp.sum(jnp.take_along_axis(logp, targets[..., None], -1)[..., 0] * mask) / mask.sum()

  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               jax.grad(loss)(tiny.params), jax.grad(reference)(tiny.params))


def test_dropout_applies_only_with_a_key(build_model):
  built = build_model(dropout_rate=0.5)
  (inputs, targets, sos), = _segments(built, segments=1)
  state = M.init_state(built.config, 2)
  plain = scoring.score_segment(built.model, built.params, state, inputs, targets, sos)
  logits, _ = built.apply(built.params, inputs, state, sos)
  np.testing.assert_allclose(plain.nll, _numpy_nll(logits, targets), rtol=1e-5, atol=1e-5)
  key = jax.random.key(0)
  dropped = [scoring.score_segment(built.model, built.params, state, inputs, targets, sos,
                                   dropout_rng=k).nll for k in (key, key, jax.random.key(1))]
  np.testing.assert_array_equal(dropped[0], dropped[1])  # the key decides the masks
  assert not np.allclose(dropped[0], plain.nll)
  assert not np.allclose(dropped[0], dropped[2])
