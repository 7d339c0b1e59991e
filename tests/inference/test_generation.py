"""`inference/generation.py` directly: the sampling-settings check, `Generation`, the
`Decoder`'s prompt reading against the notebook API's scores (the shared tiny run), and
`sample` against the argmax and numpy's softmax."""
import math

import jax
import numpy as np
import pytest

from memorizing_jax.inference import generation


@pytest.mark.parametrize("temperature, top_k, max_new_tokens, top_p", [
    (0, None, 0, 1.0),
    (0.7, 1, 5, 0.5),
    (np.float32(1.5), np.int64(3), np.int32(7), np.float64(1.0)),  # numpy numbers
    (2, 10**9, 10**6, 1),
])
def test_check_sampling_accepts_the_documented_ranges(temperature, top_k, max_new_tokens,
                                                      top_p):
  assert generation.check_sampling(temperature, top_k, max_new_tokens, top_p) is None


@pytest.mark.parametrize("args, error, message", [
    ((-0.1, None, 1), ValueError, r"^temperature must be a finite number >= 0 .*got -0.1$"),
    ((math.inf, None, 1), ValueError, r"^temperature .*got inf$"),
    ((True, None, 1), TypeError, r"^temperature .*got True of type bool$"),
    ((0, 0, 1), ValueError, r"^top_k must be a positive int or None .*got 0$"),
    ((0, 2.0, 1), TypeError, r"^top_k .*got 2.0 of type float$"),
    ((0, None, -1), ValueError, r"^max_new_tokens must be an int >= 0, got -1$"),
    ((0, None, 3.0), TypeError, r"^max_new_tokens .*got 3.0 of type float$"),
    ((0, None, 1, 0.0), ValueError, r"^top_p must be a number in \(0, 1\] .*got 0$"),
    ((0, None, 1, 1.01), ValueError, r"^top_p .*got 1.01$"),
    ((0, None, 1, math.nan), ValueError, r"^top_p .*got nan$"),
])
def test_check_sampling_names_the_bad_value(args, error, message):
  with pytest.raises(error, match=message):
    generation.check_sampling(*args)


def test_a_generation_prints_as_its_text():
  g = generation.Generation(prompt_tokens=np.array([5], np.int32),
                            tokens=np.array([7, 8], np.int32),
                            log_probs=np.array([-0.5, -1.0], np.float32), text="hi")
  assert str(g) == "hi" and f"{g}!" == "hi!"


def test_decoder_generate_checks_before_reading(loaded):
  decoder = loaded.decoder
  assert isinstance(decoder, generation.Decoder)
  with pytest.raises(ValueError, match="give one seed per prompt: 1 seeds for 2 prompts"):
    decoder.generate(loaded.params, [[5], [6]], loaded.pad_id, 3, seeds=[0])
  with pytest.raises(ValueError, match="temperature"):
    decoder.generate(loaded.params, [[5]], loaded.pad_id, 3, temperature=-1.0)
  tokens, log_probs, lengths = decoder.generate(loaded.params, [[5], [6, 7]], loaded.pad_id,
                                                0, seeds=[0, 1])
  assert tokens.shape == log_probs.shape == (2, 0) and lengths.tolist() == [0, 0]
  assert (tokens.dtype, log_probs.dtype, lengths.dtype) == (np.int32, np.float32, np.int32)


def test_read_prompts_gives_the_next_token_logits_the_full_pass_scores(loaded):
  """Prompts of 5 and 15 tokens (+ the start token: 6 and 16 inputs, segments of 16).
  Row 1's prompt fills its segment exactly, which is left for the first decoding step
  to end: nothing is in the XL cache or the memory yet. Each row's logits are those of
  the token after its prompt: their argmax is what `score` predicts there, and their
  log-softmax at a token is minus its loss."""
  text = "x=ab; y=cd; print(x); print(y)"
  prompts = [loaded.encode(text[:5]), loaded.encode(text[:15])]
  assert loaded.config.segment_length == 16
  state, segments, logits = loaded.decoder.read_prompts(loaded.params, prompts,
                                                        loaded.pad_id)
  assert logits.shape == (2, loaded.config.vocab_size)
  for segment in segments:
    np.testing.assert_array_equal(segment.position, [6, 16])
  np.testing.assert_array_equal(state.memories[0].count, [0, 0])
  assert not np.asarray(state.xl_caches[0].valid).any()
  logits = np.asarray(logits, np.float64)
  log_probs = logits - logits.max(axis=-1, keepdims=True)
  log_probs -= np.log(np.exp(log_probs).sum(axis=-1, keepdims=True))
  for row, prompt in enumerate(prompts):
    following = loaded.encode(text[len(prompt)])[0]
    for token in (following, loaded.eos_id):
      score = loaded.score(np.append(prompt, token))
      assert log_probs[row, token] == pytest.approx(-score.loss[-1], abs=1e-4)
      assert int(np.argmax(log_probs[row])) == score.predictions[-1]


_SAMPLE = jax.jit(generation.sample)  # the settings are traced: one program for all


@pytest.mark.parametrize("temperature, top_k, top_p", [
    (0.0, 0, 1.0),    # greedy
    (0.0, 4, 0.5),    # greedy whatever the filters
    (1.5, 1, 1.0),    # sampling from the best token alone
    (1.5, 0, 1e-6),   # a nucleus that holds the best token alone
])
def test_sample_gives_the_argmax_when_greedy_or_one_token_is_left(temperature, top_k, top_p):
  logits = np.random.default_rng(0).normal(size=(6, 11)).astype(np.float32)
  keys = jax.random.split(jax.random.key(0), 6)
  got = _SAMPLE(logits, keys, np.float32(temperature), np.int32(top_k), np.float32(top_p))
  assert got.dtype == np.int32
  np.testing.assert_array_equal(np.asarray(got), logits.argmax(axis=-1))


def test_sample_draws_each_row_from_the_filtered_softmax_at_the_temperature():
  """20000 rows of the same logits, each with its own key: the tokens' frequencies are
  numpy's softmax(logits / T) over the top 3 (at most 0.01 off; the binomial's standard
  deviation is <= 0.0036), and no other token is drawn."""
  rows, temperature = 20000, 2.0
  logits = np.array([1.0, 3.0, -1.0, 2.5, 0.0, 2.0], np.float32)
  keys = jax.random.split(jax.random.key(1), rows)
  got = np.asarray(_SAMPLE(np.tile(logits, (rows, 1)), keys, np.float32(temperature),
                           np.int32(3), np.float32(1.0)))
  top3 = np.argsort(-logits)[:3]  # tokens 1, 3, 5
  want = np.zeros(len(logits))
  want[top3] = np.exp(logits[top3] / temperature) / np.exp(logits[top3] / temperature).sum()
  frequencies = np.bincount(got, minlength=len(logits)) / rows
  np.testing.assert_allclose(frequencies, want, atol=0.01)
  assert set(np.unique(got)) == set(top3.tolist())
