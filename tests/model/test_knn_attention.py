"""`MemoryMix` against numpy: a brute-force top-k softmax attention over each row's
memory, gated per head with the local output, and the segment written to the ring."""
import jax
import numpy as np

from memorizing_jax import memory
from memorizing_jax.model.config import ModelConfig
from memorizing_jax.model.knn_attention import MemoryMix

# 2 heads of 4, segments of 4 tokens, a memory of 8 slots read with k = 3.
CONFIG = ModelConfig(vocab_size=8, num_layers=1, d_model=8, num_heads=2, head_dim=4, mlp_dim=4,
                     segment_length=4, knn_layers=(0,), knn_k=3, memory_slots=8,
                     lookup_method="exact")


def numpy_memory_out(queries, keys, values, count, scale, k):
  """[batch, heads, length, head_dim] float64: the softmax of scale[head] * q . key over
  the top k of each row's count first slots (0 where it holds none)."""
  out = np.zeros(queries.shape)
  for b, h, t in np.ndindex(*queries.shape[:3]):
    if count[b] == 0:
      continue
    scores = keys[b, h, :count[b]].astype(np.float64) @ queries[b, h, t]
    top = np.argsort(-scores)[:k]
    weights = np.exp(scale[h] * (scores[top] - scores[top].max()))
    out[b, h, t] = (weights / weights.sum()) @ values[b, h, top]
  return out


def test_memory_mix_gates_the_retrieved_attention_and_writes_the_segment():
  rng = np.random.default_rng(0)
  normal = lambda *shape: rng.normal(size=shape).astype(np.float32)
  queries, keys, values, local_out = (normal(2, 2, 4, 4) for _ in range(4))
  state = memory.MemoryState.from_keys_values(
      normal(2, 2, 8, 4), normal(2, 2, 8, 4), count=np.array([6, 5], np.int32),
      positions=np.array([list(range(6)) + [-1, -1], list(range(5)) + [-1] * 3], np.int32))
  start = np.array([False, True])  # row 1 begins a document: its memory is emptied first
  scale = np.array([2.0, 3.0], np.float32)
  gate_bias = np.array([-1.0, 1.5], np.float32)
  mix = MemoryMix(CONFIG)

  apply = jax.jit(lambda gate_bias: mix.apply({"params": {"gate_bias": gate_bias}}, queries,
                                              keys, values, local_out, state, start, scale))
  out, new_state = jax.tree.map(np.asarray, apply(gate_bias))
  gate = 1 / (1 + np.exp(-gate_bias))[None, :, None, None]
  memory_out = numpy_memory_out(queries, state.keys, state.values, np.array([6, 0]), scale, 3)
  want = gate * memory_out + (1 - gate) * local_out
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out[1], ((1 - gate) * local_out)[1], rtol=1e-6)  # found nothing
  # The segment follows each row's entries in the ring: row 0 at slots 6, 7, 0, 1 (its
  # count 6 -> 10), row 1 after the reset at slots 0-3.
  np.testing.assert_array_equal(new_state.count, [10, 4])
  written = {0: [6, 7, 0, 1], 1: [0, 1, 2, 3]}
  for row, slots in written.items():
    np.testing.assert_array_equal(new_state.keys[row][:, slots], keys[row])
    np.testing.assert_array_equal(new_state.values[row][:, slots], values[row])
  np.testing.assert_array_equal(new_state.keys[0][:, 2:6], state.keys[0][:, 2:6])
  np.testing.assert_array_equal(new_state.positions, [[8, 9, 2, 3, 4, 5, 6, 7],
                                                      [0, 1, 2, 3, -1, -1, -1, -1]])
