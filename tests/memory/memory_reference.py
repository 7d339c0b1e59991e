"""Independent numpy references for the memory tests, a jitted lookup, and the mesh."""
from __future__ import annotations

import jax
import numpy as np

from memorizing_jax import memory

# The lookup compiled whole: faster in tests than running it op by op.
jit_lookup = jax.jit(memory.lookup, static_argnums=2,
                     static_argnames=("method", "recall_target", "bins", "block"))


class RingBufferReference:
  """A per-row list model of the memory: what each row's document has written.

  Entry j of a row's current document (j = 0, 1, ...) lives in slot j % slots and
  survives until entry j + slots is written or the row is reset.
  """

  def __init__(self, batch: int, heads: int, slots: int, head_dim: int):
    self.slots, self.heads, self.head_dim = slots, heads, head_dim
    self.entries = [[] for _ in range(batch)]  # (position, key [h, d], value [h, d])

  def write(self, keys: np.ndarray, values: np.ndarray, positions: np.ndarray,
            rows=None) -> None:
    for row, entries in enumerate(self.entries):
      if rows is not None and not rows[row]:
        continue
      for j in range(keys.shape[2]):
        entries.append((int(positions[row, j]), keys[row, :, j], values[row, :, j]))

  def reset(self, mask: np.ndarray) -> None:
    for row in np.flatnonzero(mask):
      self.entries[row] = []

  def count(self) -> np.ndarray:
    return np.array([len(e) for e in self.entries], np.int32)

  def filled(self) -> np.ndarray:
    return np.minimum(self.count(), self.slots)

  def slot_contents(self, row: int):
    """{slot: (position, key [h, d], value [h, d])} of the row's live entries."""
    entries = self.entries[row]
    live = entries[max(0, len(entries) - self.slots):]
    first = len(entries) - len(live)
    return {(first + i) % self.slots: e for i, e in enumerate(live)}


def brute_force_top_k(queries: np.ndarray, keys: np.ndarray, filled: np.ndarray, k: int):
  """Exact top-k over the valid slots (slot < filled[row]) by dot product.

  Args:
    queries: [batch, heads, queries, head_dim]; keys: [batch, heads, slots, head_dim].
  Returns:
    (scores [b, h, q, k] float64 descending, -inf past the valid count;
     slots [b, h, q, k] int, -1 past the valid count;
     all_scores [b, h, q, slots] float64 with -inf at empty slots).
  """
  scores = np.einsum("bhqd,bhsd->bhqs", queries.astype(np.float64), keys.astype(np.float64))
  empty = np.arange(keys.shape[2])[None, :] >= filled[:, None]
  scores[np.broadcast_to(empty[:, None, None, :], scores.shape)] = -np.inf
  order = np.argsort(-scores, axis=-1, kind="stable")[..., :k]
  top = np.take_along_axis(scores, order, axis=-1)
  order = np.where(np.isfinite(top), order, -1)
  return top, order, scores


def recall(found: np.ndarray, truth: np.ndarray) -> float:
  """Mean over queries of the fraction of `truth` ids (>= 0) present in `found`."""
  found = found.reshape(-1, found.shape[-1])
  truth = truth.reshape(-1, truth.shape[-1])
  fractions = []
  for f, t in zip(found, truth):
    t = t[t >= 0]
    if t.size:
      fractions.append(np.isin(t, f).mean())
  return float(np.mean(fractions))
