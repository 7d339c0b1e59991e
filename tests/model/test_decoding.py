"""Incremental decoding reads a document exactly as the full forward pass does."""
import jax
import jax.numpy as jnp
import numpy as np

from memorizing_jax.model import MemorizingTransformer, ModelConfig, init_params, init_state
from memorizing_jax.model import decoding
from memorizing_jax.model.state import SegmentCache

TINY = dict(vocab_size=64, num_layers=3, d_model=32, num_heads=2, head_dim=16, mlp_dim=64,
            segment_length=8, knn_layers=(1,), knn_k=4, memory_slots=16,
            relative_position_buckets=8, relative_position_max_distance=16)


def _full_pass(model, params, tokens, config):
  """Logits [batch, n, vocab] of the full forward pass, one segment per call."""
  batch, n = tokens.shape
  state = init_state(config, batch)
  apply = jax.jit(lambda p, t, st, sos: model.apply({"params": p}, t, st, sos))
  outputs = []
  for start in range(0, n, config.segment_length):
    logits, state = apply(params, tokens[:, start:start + config.segment_length], state,
                          jnp.full((batch,), start == 0))
    outputs.append(logits)
  return jnp.concatenate(outputs, axis=1)


def _decoded(model, params, tokens, config, chunks):
  """Logits of decoding `tokens` in pieces of the sizes in `chunks` (cycled)."""
  batch, n = tokens.shape
  state = init_state(config, batch)
  segments = decoding.init_segment_cache(config, batch)
  assert len(segments) == config.num_layers
  assert all(isinstance(cache, SegmentCache) for cache in segments)
  step = jax.jit(lambda p, t, st, sg: decoding.decode(model, p, t, st, sg))
  complete = jax.jit(lambda st, sg: decoding.complete_segment(config, st, sg))
  outputs, read, position, i = [], 0, 0, 0
  while read < n:
    size = min(chunks[i % len(chunks)], config.segment_length - position, n - read)
    logits, segments = step(params, tokens[:, read:read + size], state, segments)
    outputs.append(logits)
    read, position, i = read + size, position + size, i + 1
    np.testing.assert_array_equal(segments[0].position, position)
    if position == config.segment_length:
      state, segments = complete(state, segments)
      position = 0
  return jnp.concatenate(outputs, axis=1)


def test_decoding_matches_full_pass():
  """Prefill pieces then single tokens over 3.75 segments: the XL cache is replaced and
  the memory written (and, with 16 slots, wrapped around) while decoding."""
  config = ModelConfig(**TINY)
  model = MemorizingTransformer(config)
  params = init_params(config, jax.random.PRNGKey(0), batch_size=2)
  tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 30), 0, config.vocab_size)
  want = _full_pass(model, params, tokens, config)
  got = _decoded(model, params, tokens, config, chunks=[3, 1, 1, 5, 1])
  np.testing.assert_allclose(got, want, atol=2e-5, rtol=2e-5)


def test_decoding_without_xl_or_memory_matches_full_pass():
  config = ModelConfig(**{**TINY, "use_xl_cache": False, "knn_layers": ()})
  model = MemorizingTransformer(config)
  params = init_params(config, jax.random.PRNGKey(2), batch_size=1)
  tokens = jax.random.randint(jax.random.PRNGKey(3), (1, 20), 0, config.vocab_size)
  want = _full_pass(model, params, tokens, config)
  got = _decoded(model, params, tokens, config, chunks=[1])
  np.testing.assert_allclose(got, want, atol=2e-5, rtol=2e-5)


def test_rows_at_different_places_in_their_segments_decode_as_if_alone():
  """Row 0 starts with 3 tokens read, row 1 with 6 (one prefill of 6, row 0's last three
  padding that its position leaves unread); then one token per step, each row
  completing its segments at its own steps. Each row's logits are the full pass's
  over its own tokens, through several segment ends and the memory's wrap-around."""
  config = ModelConfig(**TINY)
  model = MemorizingTransformer(config)
  params = init_params(config, jax.random.PRNGKey(4), batch_size=2)
  tokens = jax.random.randint(jax.random.PRNGKey(5), (2, 40), 0, config.vocab_size)
  want = _full_pass(model, params, tokens, config)
  state = init_state(config, 2)
  segments = decoding.init_segment_cache(config, 2)
  step = jax.jit(lambda p, t, st, sg: decoding.decode(model, p, t, st, sg))
  complete = jax.jit(lambda st, sg, rows: decoding.complete_segment(config, st, sg, rows))
  read = np.array([3, 6])
  logits, segments = step(params, tokens[:, :6], state, segments)
  segments = tuple(s.replace(position=jnp.asarray(read, jnp.int32)) for s in segments)
  for row in range(2):
    np.testing.assert_allclose(logits[row, :read[row]], want[row, :read[row]], atol=2e-5,
                               rtol=2e-5)
  completions = 0
  while read.max() < 40:
    ended = segments[0].position == config.segment_length
    completions += int(np.sum(ended))
    state, segments = complete(state, segments, ended)
    next_tokens = tokens[np.arange(2), np.minimum(read, 39)]
    logits, segments = step(params, next_tokens[:, None], state, segments)
    for row in range(2):
      if read[row] < 40:
        np.testing.assert_allclose(logits[row, 0], want[row, read[row]], atol=2e-5,
                                   rtol=2e-5, err_msg=f"row {row} token {read[row]}")
    read = read + 1
  assert completions >= 8  # both rows crossed four segment ends, at different steps


def test_complete_segment_leaves_the_other_rows_unchanged():
  config = ModelConfig(**TINY)
  model = MemorizingTransformer(config)
  params = init_params(config, jax.random.PRNGKey(6), batch_size=2)
  tokens = jax.random.randint(jax.random.PRNGKey(7), (2, 8), 0, config.vocab_size)
  state = init_state(config, 2)
  _, segments = decoding.decode(model, params, tokens, state,
                                decoding.init_segment_cache(config, 2))
  new_state, new_segments = decoding.complete_segment(config, state, segments,
                                                      jnp.array([False, True]))
  for old, new in zip(jax.tree.leaves((state, segments)), jax.tree.leaves((new_state,
                                                                          new_segments))):
    np.testing.assert_array_equal(new[0], old[0])
  memory = new_state.memories[0]
  np.testing.assert_array_equal(memory.count, [0, 8])
  np.testing.assert_array_equal(memory.keys[1, :, :8], segments[1].keys[1])
  np.testing.assert_array_equal(new_segments[0].position, [8, 0])
