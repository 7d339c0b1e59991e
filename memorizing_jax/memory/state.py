"""The external memory's state and the pure functions that change it.

One memory per (batch row, head): a FIFO ring buffer of `slots` (key, value) pairs
holding the keys/values of earlier segments of the row's current document.
Nothing here is differentiable: everything stored passes through `stop_gradient`.

A slot's key and value are stored side by side, `entries[..., slot, 0 or 1, :]`, so
that a lookup fetches both in one gather of [2, head_dim] blocks. The TPU compiler
gathers rows of a [slots, head_dim] array out of (16, 128) tiles only, and its cost
model charged the two gathers of single key and value rows 19.4 GB each per v5p chip
at the paper's 8K setting (9x what they return), against 8.7 GB for the one gather of
pairs.
"""
from __future__ import annotations

from typing import Optional, Tuple

import flax.struct
import jax
import jax.numpy as jnp


# Where a slot's key and its value sit in `MemoryState.entries[..., slot, :, :]`.
KEY, VALUE = 0, 1


class KeyValueParts:
  """`keys` and `values`: the two parts of a dataclass's `entries` [..., 2, head_dim],
  each [..., head_dim] (slices, not stored)."""
  entries: jax.Array

  @property
  def keys(self) -> jax.Array:
    return self.entries[..., KEY, :]

  @property
  def values(self) -> jax.Array:
    return self.entries[..., VALUE, :]


@flax.struct.dataclass
class MemoryState(KeyValueParts):
  """The memory of one kNN layer.

  Attributes:
    entries: [batch, heads, slots, 2, head_dim] the stored keys (`[..., 0, :]`) and
      values (`[..., 1, :]`), a ring buffer of slots.
    count: [batch] int32, tokens written since the row's document began. Slot `s`
      holds an entry iff `s < min(count, slots)`; empty slots are masked by this,
      never by the content of `keys`.
    positions: [batch, slots] int32, position in its document of the token whose
      key/value sits in each slot (-1 for a slot never written in this document).
  """

  entries: jax.Array
  count: jax.Array
  positions: jax.Array

  @classmethod
  def from_keys_values(cls, keys: jax.Array, values: jax.Array, count: jax.Array,
                       positions: jax.Array) -> "MemoryState":
    """A state holding keys and values [batch, heads, slots, head_dim] (same shape)."""
    if jnp.shape(keys) != jnp.shape(values):
      raise ValueError(f"memory values {jnp.shape(values)} must match keys {jnp.shape(keys)}")
    return cls(entries=stack_entries(keys, values), count=count, positions=positions)

  @property
  def key_shape(self) -> Tuple[int, int, int, int]:
    """(batch, heads, slots, head_dim), without slicing `entries`."""
    b, h, s, _, d = self.entries.shape
    return b, h, s, d

  @property
  def slots(self) -> int:
    return self.entries.shape[2]

  def valid_slots(self) -> jax.Array:
    """[batch, slots] bool: which slots hold an entry of the current document."""
    filled = jnp.minimum(self.count, self.slots)
    return jnp.arange(self.slots, dtype=jnp.int32)[None, :] < filled[:, None]


def stack_entries(keys: jax.Array, values: jax.Array) -> jax.Array:
  """[..., n, head_dim] keys and values -> [..., n, 2, head_dim] entries (KEY, VALUE)."""
  return jnp.stack([keys, values], axis=-2)


def ring_positions(count: jax.Array, slot_ids: jax.Array, slots: int) -> jax.Array:
  """The document positions of the entries in `slot_ids`, for rows written in order.

  A row whose document was written from its start with `write`'s default positions
  holds positions max(0, count - slots) .. count - 1, position p in slot p % slots;
  this is what `state.positions` then holds, computed without reading it.

  Args:
    count: [batch] int32 (MemoryState.count).
    slot_ids: [batch, ...] int32 slots (e.g. LookupResult.slots).
    slots: the memory's slots.
  Returns:
    [batch, ...] int32, meaningful where the slot holds an entry.
  """
  count = count.reshape(count.shape + (1,) * (slot_ids.ndim - 1))
  return slot_ids + slots * ((count - 1 - slot_ids) // slots)


def init(batch: int, heads: int, slots: int, head_dim: int,
         dtype: jnp.dtype = jnp.float32) -> MemoryState:
  """An empty memory. Returns a MemoryState with `count == 0` everywhere."""
  if min(batch, heads, slots, head_dim) <= 0:
    raise ValueError(
        f"memory dimensions must be positive, got batch={batch}, heads={heads}, "
        f"slots={slots}, head_dim={head_dim}")
  return MemoryState(
      entries=jnp.zeros((batch, heads, slots, 2, head_dim), dtype),
      count=jnp.zeros((batch,), jnp.int32),
      positions=jnp.full((batch, slots), -1, jnp.int32),
  )


def reset(state: MemoryState, mask: jax.Array) -> MemoryState:
  """Empties the rows where `mask` [batch] bool is true (a new document starts).

  Only `count` and `positions` change: stale keys stay in place but are masked by
  `count`, so a reset costs O(batch * slots), not O(batch * heads * slots * head_dim).
  """
  mask = jnp.asarray(mask, bool)
  if mask.shape != state.count.shape:
    raise ValueError(f"reset mask must have shape {state.count.shape} (batch,), "
                     f"got {mask.shape}")
  return state.replace(
      count=jnp.where(mask, 0, state.count),
      positions=jnp.where(mask[:, None], -1, state.positions),
  )


def write(state: MemoryState, keys: jax.Array, values: jax.Array,
          positions: Optional[jax.Array] = None, mask: Optional[jax.Array] = None,
          slot_range: Optional[Tuple[jax.Array, int]] = None) -> MemoryState:
  """Appends a segment's keys/values to each row's ring buffer.

  Args:
    state: the memory.
    keys, values: [batch, heads, length, head_dim]; written after everything already
      stored, overwriting the oldest entries once the buffer is full. When `length`
      exceeds `slots`, only the newest `slots` entries are kept.
    positions: [batch, length] int32 document positions of the tokens; defaults to
      `count + arange(length)` (the tokens follow on from what was written).
    mask: [batch] bool, the rows to write (default: all); the other rows are left
      unchanged (decoding a batch whose rows complete their segments at different
      times).
    slot_range: (first slot, the memory's slots) when `state` holds one shard of a
      memory whose slots are split across devices: its slots are the memory's
      `first .. first + state.slots - 1`, and it keeps the entries that land there
      (`count` is the whole memory's). Default: `state` is the whole memory.
  Returns:
    The new state; `count` grows by `length` in the rows written.
  """
  b, h, s, d = state.key_shape
  first, total = (0, s) if slot_range is None else slot_range
  if keys.ndim != 4 or keys.shape[0] != b or keys.shape[1] != h or keys.shape[3] != d:
    raise ValueError(f"write keys must be [batch={b}, heads={h}, length, head_dim={d}], "
                     f"got {keys.shape}")
  if values.shape != keys.shape:
    raise ValueError(f"write values {values.shape} must match keys {keys.shape}")
  for name, x in (("keys", keys), ("values", values)):
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise ValueError(f"write {name} must be floating point (they are cast to the memory's "
                       f"{state.entries.dtype}), got dtype {x.dtype}")
  length = written = keys.shape[2]
  if positions is None:
    positions = state.count[:, None] + jnp.arange(length, dtype=jnp.int32)[None, :]
  if positions.shape != (b, length):
    raise ValueError(f"write positions must be [batch={b}, length={length}], "
                     f"got {positions.shape}")
  # [batch, heads, length, 2, head_dim], laid out as `entries`.
  new = jax.lax.stop_gradient(stack_entries(keys, values)).astype(state.entries.dtype)
  positions = positions.astype(jnp.int32)
  mask = jnp.ones((b,), bool) if mask is None else jnp.asarray(mask, bool)
  if mask.shape != (b,):
    raise ValueError(f"write mask must have shape ({b},) (batch,), got {mask.shape}")
  if length > total:  # only the newest `slots` entries survive
    new = new[:, :, -total:]
    positions = positions[:, -total:]
    offset = state.count + (length - total)
    length = total
  else:
    offset = state.count
  # Entry j of the row goes to slot (offset + j) % slots.
  start = offset % total
  slot_ids = (start[:, None] + jnp.arange(length, dtype=jnp.int32)[None, :]) % total
  rows = jnp.arange(b)[:, None]
  if slot_range is not None:  # a shard keeps the entries of its own slots
    local_ids = slot_ids - first
    owned = (local_ids >= 0) & (local_ids < s) & mask[:, None]
    new_positions = state.positions.at[rows, jnp.where(owned, local_ids, s)].set(
        positions, mode="drop")
    return MemoryState(entries=_write_shard(state.entries, new, start, mask, first, total),
                       count=state.count + written * mask, positions=new_positions)
  positions = jnp.where(mask[:, None], positions, state.positions[rows, slot_ids])
  new_positions = state.positions.at[rows, slot_ids].set(positions, unique_indices=True)
  return MemoryState(entries=_write_blocks(state.entries, new, start, mask),
                     count=state.count + written * mask, positions=new_positions)


def _write_blocks(buffer: jax.Array, new: jax.Array, start: jax.Array, mask: jax.Array
                  ) -> jax.Array:
  """Writes each row's `new` entries into its ring buffer from slot `start` on.

  Args:
    buffer: [batch, heads, slots, ...] (e.g. `entries`, [..., 2, head_dim]).
    new: [batch, heads, length, ...], length <= slots.
    start: [batch] int32 in [0, slots): the slot of each row's first new entry.
    mask: [batch] bool, the rows written; the others keep their entries.
  Returns:
    The buffer with slots (start + j) % slots holding new[:, :, j] in the rows of
    `mask`.

  Each row's entries form one block of `length` slots, or two when they wrap past
  the last slot, so the write is two in-place block updates per row (a window of
  all heads and `length` slots), row after row. A scatter of single entries, or
  these updates vectorised over the rows (a scatter too), makes the TPU compiler
  read and write the whole buffer.
  """
  batch, heads, slots = buffer.shape[:3]
  trailing = buffer.shape[3:]
  length = new.shape[2]
  j = jnp.arange(length, dtype=jnp.int32)
  zeros = (0,) * len(trailing)
  doubled = jnp.concatenate([new, new], axis=2)  # a shifted view of `new` is one slice of it

  def write_row(row, buffer):
    first, enabled = start[row], mask[row]

    def update(buffer, window_start, shift):  # window slot j takes new entry j + shift, if any
      inside = (j + shift >= 0) & (j + shift < length) & enabled
      shifted = jax.lax.dynamic_slice(doubled, (row, 0, jnp.mod(shift, length)) + zeros,
                                      (1, heads, length) + trailing)
      corner = (row, 0, window_start) + zeros
      old = jax.lax.dynamic_slice(buffer, corner, (1, heads, length) + trailing)
      inside = inside.reshape((1, 1, length) + (1,) * len(trailing))
      return jax.lax.dynamic_update_slice(buffer, jnp.where(inside, shifted, old), corner)
    # The entries up to the last slot, in the window of `length` slots that holds
    # them and stays inside the buffer.
    window = jnp.minimum(first, slots - length)
    buffer = update(buffer, window, window - first)
    # The entries that wrap around to the first slots (none when first + length <= slots).
    return update(buffer, 0, slots - first)

  return jax.lax.fori_loop(0, batch, write_row, buffer)


def _write_shard(buffer: jax.Array, new: jax.Array, start: jax.Array, mask: jax.Array,
                 first: jax.Array, total: int) -> jax.Array:
  """`_write_blocks` for one shard of a memory whose slots are split across devices.

  Args:
    buffer: [batch, heads, local slots, ...], the memory's slots
      first .. first + local - 1.
    new: [batch, heads, length, ...], length <= total.
    start: [batch] int32, the memory's slot of each row's first new entry.
    mask: [batch] bool, the rows written.
    first: [] int32, the shard's first slot; total: the memory's slots.
  Returns:
    The buffer with each of its slots g (the memory's) that entry j = (g - start) %
    total < length lands on holding new[:, :, j].

  The entries a shard receives lie in at most two runs of its slots, one from its
  first slot (entries that began on an earlier shard or wrapped around the ring)
  and one from `start`, each at most min(length, local) long, so the write is two
  window updates per row, as in `_write_blocks`. Unlike there, they are vectorised
  over the rows: written row after row (a fori_loop), the 1M-slot config
  `experiments/mem_1m_sharded.gin` compiled for v5e:2x4 needed 16.33 GiB per chip
  instead of 14.86 (its roofline 1.82x the XL step's instead of 1.61x).
  """
  local, length = buffer.shape[2], new.shape[2]
  width = min(length, local)
  i = jnp.arange(width, dtype=jnp.int32)

  def one_row(row, entries, row_start, enabled):  # [h, local, ...], [h, length, ...], [], []
    def blend(window):  # local slots window .. window + width - 1
      entry = jnp.mod(first + window + i - row_start, total)
      inside = (entry < length) & enabled
      taken = jnp.take(entries, jnp.minimum(entry, length - 1), axis=1)
      old = jax.lax.dynamic_slice_in_dim(row, window, width, axis=1)
      return jnp.where(inside.reshape((1, width) + (1,) * (row.ndim - 2)), taken, old)
    window = jnp.clip(row_start - first, 0, local - width)
    row = jax.lax.dynamic_update_slice_in_dim(row, blend(window), window, axis=1)
    return jax.lax.dynamic_update_slice_in_dim(row, blend(0), 0, axis=1)

  return jax.vmap(one_row)(buffer, new, start, mask)
