"""load / score / generate / explain on a checkpoint trained on an 8-device mesh."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import memorizing_jax as mj
from memorizing_jax.model import MemorizingTransformer, init_state
from meshes import cpu_mesh  # pylint: disable=g-bad-import-order

TEXT = ("x=ab; y=cd; z=ef; print(x); q=gh; print(y); w=ij; print(z); print(q); "
        "print(w); print(x); print(y)")


def _reference_losses(m, ids, memory=True):
  """Per-token loss by the plain forward pass, one segment per call, written out here."""
  model = MemorizingTransformer(m.config)
  apply = jax.jit(lambda params, x, state, sos: model.apply({"params": params}, x, state, sos))
  length = m.config.segment_length
  sequence = np.concatenate([[m.vocabulary.pad_id], ids])
  state, losses = init_state(m.config, 1), []
  for start in range(0, len(ids), length):
    if not memory:  # the documented ablation: the memory is empty at every segment
      state = state.replace(memories=tuple(
          mem.replace(count=jnp.zeros_like(mem.count)) for mem in state.memories))
    inputs = sequence[start:start + length][None]
    targets = sequence[start + 1:start + 1 + length][None]
    logits, state = apply(m.params, jnp.asarray(inputs), state, jnp.array([start == 0]))
    logp = jax.nn.log_softmax(logits[0, :targets.shape[1]])
    losses.append(-np.asarray(logp)[np.arange(targets.shape[1]), targets[0]])
  return np.concatenate(losses)


def test_load_restores_config_params_and_vocabulary_on_one_device(loaded, trained_workdir):
  m = loaded
  assert m.step == 6
  assert (m.config.segment_length, m.config.d_model, m.config.knn_layers) == (16, 32, (-1,))
  assert m.vocabulary.vocab_size == 259  # bytes
  for leaf in jax.tree.leaves(m.params):
    assert leaf.sharding.device_set == {jax.devices()[0]}
  earlier = mj.load(trained_workdir, step=3)
  assert earlier.step == 3
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), m.params, earlier.params)
  assert any(jax.tree.leaves(changed))  # training moved the parameters


def test_load_onto_a_mesh_scores_the_same(loaded, trained_workdir):
  mesh = cpu_mesh(4, 2)
  on_mesh = mj.load(trained_workdir, mesh=mesh)
  assert all(len(leaf.sharding.device_set) == 8 for leaf in jax.tree.leaves(on_mesh.params))
  np.testing.assert_allclose(on_mesh.score(TEXT).loss, loaded.score(TEXT).loss, atol=1e-5)


@pytest.mark.parametrize("memory", [True, False])
def test_score_matches_the_plain_forward_pass(loaded, memory):
  ids = loaded.encode(TEXT)
  assert len(ids) > 4 * loaded.config.segment_length  # memory is written and read
  score = loaded.score(TEXT, memory=memory)
  np.testing.assert_allclose(score.loss, _reference_losses(loaded, ids, memory), atol=1e-4)
  assert score.perplexity == pytest.approx(np.exp(np.mean(score.loss)))


def test_memory_ablation_changes_only_segments_with_memory(loaded):
  on, off = loaded.score(TEXT), loaded.score(TEXT, memory=False)
  length = loaded.config.segment_length
  np.testing.assert_array_equal(on.loss[:length], off.loss[:length])
  assert np.any(on.loss[length:] != off.loss[length:])


# 21 bytes (+ the start token): one full segment, then a partial one; 15: the prompt
# fills the first segment exactly, which completes before the first decoding step.
@pytest.mark.parametrize("prompt_length", [21, 15])
def test_greedy_generation_agrees_with_scoring_its_own_output(loaded, prompt_length):
  prompt = TEXT[:prompt_length]
  generated = loaded.generate(prompt, max_new_tokens=40, stop_at_eos=False)
  assert len(generated.tokens) == 40
  ids = np.concatenate([generated.prompt_tokens, generated.tokens])
  score = loaded.score(ids)
  p = len(generated.prompt_tokens)
  np.testing.assert_array_equal(score.predictions[p:], generated.tokens)


def test_sampling_is_seeded(loaded):
  a = loaded.generate(TEXT[:5], 20, temperature=1.0, top_k=8, seed=1, stop_at_eos=False)
  b = loaded.generate(TEXT[:5], 20, temperature=1.0, top_k=8, seed=1, stop_at_eos=False)
  np.testing.assert_array_equal(a.tokens, b.tokens)


def test_explain_gives_zero_gain_with_memory_off(loaded, tmp_path):
  off = loaded.explain(TEXT, memory=False)
  np.testing.assert_array_equal(off.gain, 0.0)
  assert not off.retrieved_valid.any()
  on = loaded.explain(TEXT)
  np.testing.assert_allclose(on.loss, loaded.score(TEXT).loss, atol=1e-5)
  length = loaded.config.segment_length
  np.testing.assert_array_equal(on.gain[:length], 0.0)  # nothing to retrieve yet
  assert on.retrieved_valid[length:].any()
  best = on.top_gains(3)
  assert best[0]["gain"] == pytest.approx(on.gain.max())
  index = best[0]["index"]
  for entry in on.retrievals(index, 4):
    assert 0 < entry["distance"] <= index
    assert entry["token"] == on.piece_at(index - entry["distance"])
  for plot, name in ((mj.inference.plot_top_gains, "gains.png"),
                     (mj.inference.plot_retrieval_distances, "distances.png")):
    figure = plot(on, str(tmp_path / name))
    assert os.path.getsize(tmp_path / name) > 1000
    bars_or_bins = figure.axes[0].patches
    assert len(bars_or_bins) > 0
    assert len(plot(on).axes) == 1  # no path: a figure, nothing written
  assert sorted(os.listdir(tmp_path)) == ["distances.png", "gains.png"]
  gains = mj.inference.plot_top_gains(on, n=3).axes[0].patches
  np.testing.assert_allclose([b.get_width() for b in gains],
                             [t["gain"] for t in on.top_gains(3)])


def test_clear_errors(loaded, tmp_path):
  with pytest.raises(mj.inference.NoCheckpointError, match="train"):
    mj.load(str(tmp_path))
  with pytest.raises(ValueError, match="empty"):
    loaded.score("")


ACCEPTED = r"must be a str, or token ids: a 1-D sequence or array of ints"


@pytest.mark.parametrize("text, got", [
    (b"abc", r"got bytes: decode them first, e\.g\. text\.decode\('utf-8'\)"),
    (None, "got NoneType"),
    (3, "got int"),
    ([1.5, 2.0], r"got a list of float \(dtype float64\)"),
    (np.array([True, False]), r"got a ndarray of bool"),
])
def test_score_generate_and_explain_say_which_texts_they_accept(loaded, text, got):
  for call, what in ((loaded.score, "text"), (loaded.explain, "text"),
                     (loaded.generate, "prompt")):
    with pytest.raises(TypeError, match=f"{what} {ACCEPTED}.*; {got}"):
      call(text)


def test_token_ids_are_accepted_as_lists_and_arrays(loaded):
  # The byte vocabulary: id = byte + 3 (pad 0, eos 1, unk 2), by hand.
  ids = np.frombuffer(TEXT.encode("utf-8"), np.uint8).astype(np.int32) + 3
  np.testing.assert_array_equal(loaded.encode(TEXT), ids)
  want = loaded.score(TEXT).loss
  for given in (ids.tolist(), ids.astype(np.int64), jnp.asarray(ids), tuple(ids)):
    np.testing.assert_array_equal(loaded.score(given).loss, want)
  with pytest.raises(ValueError, match=r"token id 264 is outside the model's \[0, 264\) ids"):
    loaded.score([5, 264])
  with pytest.raises(ValueError, match=r"token id -1 is outside"):
    loaded.score([-1])
  with pytest.raises(ValueError, match=r"shape \[n\] \(or be a batch.*got shape \(2, 1, 3\)"):
    loaded.score(np.ones((2, 1, 3), np.int32))
  assert len(loaded.generate([], max_new_tokens=2, stop_at_eos=False).tokens) == 2


@pytest.mark.parametrize("kwargs, error, message", [
    ({"temperature": float("nan")}, ValueError, "finite number >= 0.*got nan"),
    ({"temperature": float("inf")}, ValueError, "finite number >= 0.*got inf"),
    ({"temperature": -0.5}, ValueError, "finite number >= 0.*got -0.5"),
    ({"temperature": "0.7"}, TypeError, "temperature must be a finite number >= 0.*got '0.7' of type str"),
    ({"temperature": 1.0, "top_k": 0}, ValueError, "top_k must be a positive int or None.*got 0"),
    ({"temperature": 1.0, "top_k": 2.5}, TypeError, "top_k must be a positive int.*got 2.5 of type float"),
    ({"temperature": 1.0, "top_k": True}, TypeError, "top_k must be a positive int.*got True"),
    ({"max_new_tokens": -1}, ValueError, "max_new_tokens must be an int >= 0, got -1"),
    ({"top_p": 0}, ValueError, r"top_p must be a number in \(0, 1\].*got 0"),
    ({"top_p": 1.5}, ValueError, r"top_p must be a number in \(0, 1\].*got 1.5"),
    ({"top_p": None}, TypeError, r"top_p must be a number in \(0, 1\].*got None"),
])
def test_generate_rejects_bad_sampling_settings_naming_the_value(loaded, kwargs, error, message):
  with pytest.raises(error, match=message):
    loaded.generate(TEXT[:5], **kwargs)


def test_numpy_numbers_are_sampling_settings_like_python_ones(loaded):
  a = loaded.generate(TEXT[:5], np.int64(6), temperature=np.float32(0.5), top_k=np.int64(4),
                      seed=1, stop_at_eos=False)
  b = loaded.generate(TEXT[:5], 6, temperature=0.5, top_k=4, seed=1, stop_at_eos=False)
  np.testing.assert_array_equal(a.tokens, b.tokens)


def test_import_is_cheap():
  code = ("import sys, memorizing_jax; "
          "assert 'jax' not in sys.modules and 'tensorflow' not in sys.modules; "
          "assert callable(memorizing_jax.load)")
  subprocess.run([sys.executable, "-c", code], check=True)
