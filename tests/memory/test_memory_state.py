"""MemoryState init/reset/write against a per-row list model of the ring buffer."""
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memorizing_jax import memory
from memory_reference import RingBufferReference

BATCH, HEADS, HEAD_DIM = 3, 2, 2
# Compiled once per shape; hypothesis draws lengths from a few shapes.
jit_write = jax.jit(memory.write)
jit_reset = jax.jit(memory.reset)
write_shard = jax.jit(lambda state, keys, values, mask, first, total: memory.write(
    state, keys, values, mask=mask, slot_range=(first, total)), static_argnums=5)

_operations = st.lists(
    st.one_of(
        # (write, length, explicit positions, the rows written: None for all)
        st.tuples(st.just("write"), st.sampled_from([1, 2, 5, 11]), st.booleans(),
                  st.one_of(st.none(),
                            st.lists(st.booleans(), min_size=BATCH, max_size=BATCH))),
        st.tuples(st.just("reset"), st.lists(st.booleans(), min_size=BATCH, max_size=BATCH),
                  st.just(False), st.none()),
    ),
    min_size=1, max_size=6)


def check_against_reference(state: memory.MemoryState, ref: RingBufferReference) -> None:
  np.testing.assert_array_equal(np.asarray(state.count), ref.count())
  keys, values = np.asarray(state.keys), np.asarray(state.values)
  positions = np.asarray(state.positions)
  valid = np.asarray(state.valid_slots())
  for row in range(BATCH):
    contents = ref.slot_contents(row)
    np.testing.assert_array_equal(valid[row], [s in contents for s in range(ref.slots)])
    for slot in range(ref.slots):
      if slot in contents:
        position, key, value = contents[slot]
        assert positions[row, slot] == position
        np.testing.assert_array_equal(keys[row, :, slot], key)
        np.testing.assert_array_equal(values[row, :, slot], value)
      else:
        assert positions[row, slot] == -1, "empty slots carry position -1"


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(slots=st.sampled_from([1, 4, 5]), operations=_operations,
                  seed=st.integers(0, 2**16))
def test_writes_and_resets_match_list_model(slots, operations, seed):
  rng = np.random.default_rng(seed)
  state = memory.init(BATCH, HEADS, slots, HEAD_DIM)
  ref = RingBufferReference(BATCH, HEADS, slots, HEAD_DIM)
  for op, arg, explicit_positions, rows in operations:
    if op == "reset":
      mask = np.array(arg)
      state = jit_reset(state, jnp.asarray(mask))
      ref.reset(mask)
    else:
      keys = rng.normal(size=(BATCH, HEADS, arg, HEAD_DIM)).astype(np.float32)
      values = rng.normal(size=(BATCH, HEADS, arg, HEAD_DIM)).astype(np.float32)
      mask = None if rows is None else jnp.asarray(rows)
      if explicit_positions:
        positions = rng.integers(0, 10**6, size=(BATCH, arg)).astype(np.int32)
        state = jit_write(state, jnp.asarray(keys), jnp.asarray(values),
                          jnp.asarray(positions), mask)
      else:
        positions = ref.count()[:, None] + np.arange(arg)[None, :]
        state = jit_write(state, jnp.asarray(keys), jnp.asarray(values), mask=mask)
      ref.write(keys, values, positions, rows)
  check_against_reference(state, ref)


def test_write_under_jit_with_donation_matches_eager():
  state = memory.init(2, 1, 4, 3)
  keys = jnp.arange(2 * 1 * 6 * 3, dtype=jnp.float32).reshape(2, 1, 6, 3)
  jitted = jax.jit(memory.write, donate_argnums=0)(memory.init(2, 1, 4, 3), keys, -keys)
  eager = memory.write(state, keys, -keys)
  for a, b in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager)):
    np.testing.assert_array_equal(a, b)
  # A write longer than the memory keeps the newest entries, in ring order.
  np.testing.assert_array_equal(eager.positions, [[4, 5, 2, 3]] * 2)


def test_init_is_empty_and_checks_dimensions():
  state = memory.init(2, 3, 5, 4, dtype=jnp.bfloat16)
  assert state.keys.shape == (2, 3, 5, 4) and state.keys.dtype == jnp.bfloat16
  assert not np.asarray(state.valid_slots()).any()
  np.testing.assert_array_equal(state.positions, -1)
  with pytest.raises(ValueError, match="positive"):
    memory.init(2, 0, 5, 4)


def test_write_rejects_mismatched_shapes_and_dtypes():
  state = memory.init(2, 3, 5, 4)
  good = jnp.zeros((2, 3, 6, 4))
  with pytest.raises(ValueError, match="heads=3"):
    memory.write(state, jnp.zeros((2, 2, 6, 4)), jnp.zeros((2, 2, 6, 4)))
  with pytest.raises(ValueError, match="head_dim=4"):
    memory.write(state, jnp.zeros((2, 3, 6, 5)), jnp.zeros((2, 3, 6, 5)))
  with pytest.raises(ValueError, match="must match keys"):
    memory.write(state, good, jnp.zeros((2, 3, 5, 4)))
  with pytest.raises(ValueError, match="positions"):
    memory.write(state, good, good, jnp.zeros((2, 5), jnp.int32))
  with pytest.raises(ValueError, match="floating"):
    memory.write(state, good.astype(jnp.int32), good)
  with pytest.raises(ValueError, match="reset mask"):
    memory.reset(state, jnp.zeros((3,), bool))


_in_order_operations = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.sampled_from([1, 2, 5, 11])),
        st.tuples(st.just("reset"), st.lists(st.booleans(), min_size=BATCH, max_size=BATCH))),
    min_size=1, max_size=8)


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(slots=st.sampled_from([1, 4, 5]), operations=_in_order_operations)
def test_ring_positions_are_the_stored_positions_of_in_order_writes(slots, operations):
  state = memory.init(BATCH, HEADS, slots, HEAD_DIM)
  for op, arg in operations:
    if op == "reset":
      state = jit_reset(state, jnp.asarray(arg))
    else:
      state = jit_write(state, jnp.zeros((BATCH, HEADS, arg, HEAD_DIM)),
                        jnp.zeros((BATCH, HEADS, arg, HEAD_DIM)))
  every_slot = jnp.broadcast_to(jnp.arange(slots, dtype=jnp.int32), (BATCH, slots))
  computed = np.asarray(memory.ring_positions(state.count, every_slot, slots))
  valid = np.asarray(state.valid_slots())
  np.testing.assert_array_equal(computed[valid], np.asarray(state.positions)[valid])


@hypothesis.settings(max_examples=15, deadline=None)
@hypothesis.given(layout=st.sampled_from([(16, 4), (12, 3), (8, 2), (8, 8)]),
                  lengths=st.lists(st.sampled_from([1, 3, 5, 8, 9, 20]), min_size=1,
                                   max_size=5),
                  seed=st.integers(0, 2**16))
def test_each_slot_shard_writes_what_the_whole_memory_holds_in_its_slots(layout, lengths,
                                                                         seed):
  """A memory of `total` slots cut into shards, each written with the whole segment and
  its slot range: side by side they equal the whole memory, writes wrapping the ring,
  crossing shard boundaries and longer than a shard or the memory included."""
  total, shards = layout
  local = total // shards
  rng = np.random.default_rng(seed)
  whole = memory.init(BATCH, HEADS, total, HEAD_DIM)
  parts = [memory.init(BATCH, HEADS, local, HEAD_DIM) for _ in range(shards)]
  for length in lengths:
    keys = jnp.asarray(rng.normal(size=(BATCH, HEADS, length, HEAD_DIM)), jnp.float32)
    values = jnp.asarray(rng.normal(size=(BATCH, HEADS, length, HEAD_DIM)), jnp.float32)
    mask = jnp.asarray(rng.random(BATCH) < 0.8)
    whole = jit_write(whole, keys, values, mask=mask)
    parts = [write_shard(p, keys, values, mask, jnp.int32(i * local), total)
             for i, p in enumerate(parts)]
  for name in ("keys", "values", "positions"):
    side_by_side = np.concatenate([np.asarray(getattr(p, name)) for p in parts],
                                  axis=2 if name != "positions" else 1)
    np.testing.assert_array_equal(side_by_side, np.asarray(getattr(whole, name)))
  for p in parts:
    np.testing.assert_array_equal(p.count, whole.count)
