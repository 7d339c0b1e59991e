"""Batches of texts in `score` and `generate`, and the compiled decoding loop."""
import jax
import numpy as np
import pytest

from memorizing_jax.inference import generation
from meshes import cpu_mesh  # pylint: disable=g-bad-import-order

TEXTS = ["x=ab; y=cd; print(x); print(y); z=ef; print(z); print(x)",
         "q=gh; print(q)",
         "w=ij; v=kl; u=mn; print(w); print(v); print(u); print(w); print(v); print(u); "
         "print(q)"]


def test_a_batch_scores_as_each_text_alone(loaded):
  """Three texts of 1 to 6 segments (segments of 16) read as one batch."""
  batch = loaded.score(TEXTS)
  assert len(batch) == len(TEXTS)
  for text, got in zip(TEXTS, batch):
    alone = loaded.score(text)
    np.testing.assert_array_equal(got.tokens, alone.tokens)
    np.testing.assert_allclose(got.loss, alone.loss, atol=1e-5)
    np.testing.assert_array_equal(got.predictions, alone.predictions)
  off = loaded.score(TEXTS, memory=False)
  np.testing.assert_allclose(off[2].loss, loaded.score(TEXTS[2], memory=False).loss,
                             atol=1e-5)


def test_a_2d_array_is_a_batch_of_rows(loaded):
  ids = np.stack([loaded.encode(TEXTS[0])[:20], loaded.encode(TEXTS[2])[:20]])
  rows = loaded.score(ids)
  for row, got in zip(ids, rows):
    np.testing.assert_allclose(got.loss, loaded.score(row).loss, atol=1e-5)
  with pytest.raises(ValueError, match=r"text is empty \(text 1 of the batch\)"):
    loaded.score(["abc", ""])


# Prompt lengths (in tokens, the start token excluded): empty, shorter than a segment,
# exactly filling the first segment with the start token (15), and several segments.
PROMPTS = ["", "x=ab; y", "x=ab; y=cd; pri", TEXTS[2][:70]]


@pytest.mark.parametrize("settings", [
    dict(temperature=0.0),
    dict(temperature=1.3, top_k=20, top_p=0.9, seed=3),
])
def test_a_batch_generates_as_each_prompt_alone(loaded, settings):
  """Row b of a batch gives the tokens and log-probabilities of prompt b alone with seed
  `seed + b`, over 40 tokens (the rows end segments at different steps)."""
  assert len(loaded.encode(PROMPTS[2])) + 1 == loaded.config.segment_length
  batch = loaded.generate(PROMPTS, max_new_tokens=40, stop_at_eos=False, **settings)
  for b, (prompt, got) in enumerate(zip(PROMPTS, batch)):
    alone = loaded.generate(prompt, max_new_tokens=40, stop_at_eos=False,
                            **{**settings, "seed": settings.get("seed", 0) + b})
    np.testing.assert_array_equal(got.tokens, alone.tokens)
    np.testing.assert_allclose(got.log_probs, alone.log_probs, atol=1e-5)
    assert len(got.tokens) == 40


def test_log_probs_are_the_scored_losses_of_the_generated_tokens(loaded):
  prompt = PROMPTS[3]
  got = loaded.generate(prompt, max_new_tokens=30, temperature=1.0, seed=5,
                        stop_at_eos=False)
  ids = np.concatenate([got.prompt_tokens, got.tokens])
  losses = loaded.score(ids).loss[len(got.prompt_tokens):]
  np.testing.assert_allclose(-got.log_probs, losses, atol=1e-4)


def test_new_sampling_settings_do_not_compile_the_loop_again(loaded):
  loaded.generate(PROMPTS[1], max_new_tokens=10, temperature=0.7, stop_at_eos=False)
  compiled = loaded.decoder._loop._cache_size()  # pylint: disable=protected-access
  for settings in (dict(temperature=0.0), dict(temperature=1.7, top_k=3),
                   dict(temperature=0.2, top_p=0.5, seed=9), dict(max_new_tokens=13)):
    loaded.generate(PROMPTS[1], **{"max_new_tokens": 10, "stop_at_eos": False, **settings})
  assert loaded.decoder._loop._cache_size() == compiled  # pylint: disable=protected-access


def test_rows_stop_at_their_own_stop_token_and_stream_every_step(loaded):
  """Row 0 stops at the token it greedily generates third; row 1 goes on. The stream
  shows each step's tokens, -1 for a row that has stopped."""
  prompts = [loaded.encode(p) for p in PROMPTS[1:3]]
  free, _, _ = loaded.decoder.generate(loaded.params, prompts, loaded.pad_id, 12,
                                       seeds=[0, 1])
  stop = int(free[0, 2])
  first = int(np.argmax(free[0] == stop))  # where row 0 first emits it
  streamed = []
  tokens, log_probs, lengths = loaded.decoder.generate(
      loaded.params, prompts, loaded.pad_id, 12, seeds=[0, 1], stop_ids=[stop],
      on_token=lambda step, ids: streamed.append((int(step), np.asarray(ids).copy())))
  assert lengths[0] == first + 1
  np.testing.assert_array_equal(tokens[0, :first + 1], free[0, :first + 1])
  row1_stop = np.flatnonzero(free[1] == stop)
  assert lengths[1] == (row1_stop[0] + 1 if row1_stop.size else 12)
  np.testing.assert_array_equal(tokens[1, :lengths[1]], free[1, :lengths[1]])
  assert [s for s, _ in streamed] == list(range(int(lengths.max())))
  for step, ids in streamed:
    for row in range(2):
      want = tokens[row, step] if step < lengths[row] else -1
      assert ids[row] == want
  assert np.all(log_probs[0, first + 1:] == 0)


def _filter_reference(logits, top_k, top_p):
  """numpy: the top_k best, then the smallest prefix (most likely first) of them whose
  renormalised probabilities reach top_p."""
  out = np.full_like(logits, -np.inf)
  for row, values in enumerate(logits):
    order = np.argsort(-values, kind="stable")[:top_k or len(values)]
    probs = np.exp(values[order] - values[order].max())
    probs /= probs.sum()
    keep = 1 + int(np.searchsorted(np.cumsum(probs), top_p - 1e-7))
    keep = min(keep, len(order))
    out[row, order[:keep]] = values[order[:keep]]
  return out


@pytest.mark.parametrize("top_k, top_p", [(0, 1.0), (5, 1.0), (0, 0.5), (7, 0.8), (1, 0.3),
                                          (0, 0.999)])
def test_filter_logits_keeps_the_top_k_then_the_nucleus(top_k, top_p):
  logits = np.random.default_rng(top_k).normal(size=(4, 50)).astype(np.float32) * 2
  got = generation.filter_logits(jax.numpy.asarray(logits), np.int32(top_k),
                                 np.float32(top_p))
  np.testing.assert_array_equal(np.asarray(got), _filter_reference(logits, top_k, top_p))


def test_a_memory_split_over_a_mesh_scores_and_generates_the_same(loaded, trained_workdir):
  """Loaded onto a mesh whose `memory` axis splits every memory's 64 slots 4 ways
  (heads 2 ways): a batch's scores and greedy tokens are those on one device."""
  import memorizing_jax as mj  # pylint: disable=g-import-not-at-top
  mesh = cpu_mesh(1, 2, 4)
  split = mj.load(trained_workdir, mesh=mesh)
  for got, want in zip(split.score(TEXTS), loaded.score(TEXTS)):
    np.testing.assert_allclose(got.loss, want.loss, atol=1e-5)
  got = split.generate(PROMPTS[3], max_new_tokens=24, stop_at_eos=False)
  want = loaded.generate(PROMPTS[3], max_new_tokens=24, stop_at_eos=False)
  np.testing.assert_array_equal(got.tokens, want.tokens)
