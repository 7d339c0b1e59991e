"""The memory ablation (`inference/ablation.py`): every memory emptied, the rest kept."""
import jax
import numpy as np

from memorizing_jax.inference import ablation
from memorizing_jax.memory import MemoryState
from memorizing_jax.model import ModelState, XLCache

BATCH, HEADS, SLOTS, LENGTH, HEAD_DIM = 2, 2, 8, 4, 4


def _filled_state(rng):
  """A state of 3 layers with XL caches and 2 kNN layers, every memory and cache holding
  something (written by hand, as host arrays)."""
  def memory(counts):
    return MemoryState(
        entries=rng.normal(size=(BATCH, HEADS, SLOTS, 2, HEAD_DIM)).astype(np.float32),
        count=np.array(counts, np.int32),
        positions=np.tile(np.arange(SLOTS, dtype=np.int32), (BATCH, 1)))

  def cache():
    return XLCache(keys=rng.normal(size=(BATCH, HEADS, LENGTH, HEAD_DIM)).astype(np.float32),
                   values=rng.normal(size=(BATCH, HEADS, LENGTH, HEAD_DIM)).astype(np.float32),
                   valid=np.ones((BATCH, LENGTH), bool))

  return ModelState(xl_caches=(cache(), cache(), cache()),
                    memories=(memory([5, 12]), memory([8, 3])))


def test_empty_memories_zeroes_every_count_and_keeps_the_rest():
  state = _filled_state(np.random.default_rng(0))
  emptied = ablation.empty_memories(state)
  assert len(emptied.memories) == 2 and len(emptied.xl_caches) == 3
  for before, after in zip(state.memories, emptied.memories):
    np.testing.assert_array_equal(after.count, [0, 0])
    np.testing.assert_array_equal(after.positions, np.full((BATCH, SLOTS), -1))  # none written
    # Stale keys and values stay in place (masked by count), as `memory.reset` documents.
    np.testing.assert_array_equal(after.keys, before.keys)
    np.testing.assert_array_equal(after.values, before.values)
  for before, after in zip(jax.tree.leaves(state.xl_caches), jax.tree.leaves(emptied.xl_caches)):
    np.testing.assert_array_equal(after, before)
  # The input is not changed (a pure function).
  np.testing.assert_array_equal(state.memories[1].count, [8, 3])
