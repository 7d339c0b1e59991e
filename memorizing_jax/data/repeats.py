"""How far back a document last repeated each of its n-grams: an upper bound on what
copying from an external memory of a given size could predict.

A token at position t *repeats* when the n-gram ending at t (its `context` preceding
tokens and itself) occurred earlier in the same document; its *repeat distance* is t
minus the end of the most recent such occurrence. A model whose window reaches d tokens
back can copy a token with repeat distance <= d from what it sees; a token whose repeat
distance is beyond the window (segment + XL cache) but within a memory's reach can only
be copied from that memory.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

NO_REPEAT = -1
# Tokens of context that copying (`copy_predictions`) matches unless told otherwise.
COPY_CONTEXT = 4


def ngram_keys(tokens: np.ndarray, context: int, vocab_size: int) -> np.ndarray:
  """[len(tokens) - context] int64: the (context + 1)-gram ending at each position from
  `context` on, packed exactly (distinct n-grams get distinct keys).

  Raises ValueError when the n-gram does not fit in 63 bits.
  """
  if context < 0:
    raise ValueError(f"context must be >= 0, got {context}")
  bits = max(int(vocab_size - 1).bit_length(), 1)
  if (context + 1) * bits > 63:
    raise ValueError(f"a {context + 1}-gram of a {vocab_size}-token vocabulary needs "
                     f"{(context + 1) * bits} bits; use a context of at most "
                     f"{63 // bits - 1} tokens")
  tokens = np.asarray(tokens, np.int64)
  if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_size):
    raise ValueError(f"token ids must lie in [0, {vocab_size}), got "
                     f"{tokens.min()}..{tokens.max()}")
  n = len(tokens) - context
  keys = np.zeros(max(n, 0), np.int64)
  for offset in range(context + 1):
    keys = (keys << bits) | tokens[offset:offset + n]
  return keys


def repeat_distances(tokens: np.ndarray, context: int, vocab_size: int) -> np.ndarray:
  """[len(tokens)] int64 repeat distance of each token (see the module docstring), or
  NO_REPEAT where its n-gram has not occurred before (and for the first `context`
  tokens, which have no full context)."""
  tokens = np.asarray(tokens)
  return _previous_occurrence(ngram_keys(tokens, context, vocab_size), len(tokens), context)


def copy_predictions(tokens: np.ndarray, context: int, vocab_size: int
                     ) -> tuple[np.ndarray, np.ndarray]:
  """What copying would predict: for each token, the token that followed the most recent
  earlier occurrence of its `context` preceding tokens (an induction-head guess).

  Returns:
    distance: [len(tokens)] int64, how far back that guess is read (the position of the
      token being predicted minus the position of the copied token), NO_REPEAT where the
      context has not occurred before.
    correct: [len(tokens)] bool, whether the guess is the token (False without a guess).
  """
  if context < 1:
    raise ValueError(f"copying needs a context of at least 1 token, got {context}")
  tokens = np.asarray(tokens)
  # Keys of the `context` tokens ending at each position e >= context - 1; the guess for
  # token e + 1 is the token after the previous occurrence.
  keys = ngram_keys(tokens[:-1], context - 1, vocab_size)
  distance = _previous_occurrence(keys, len(tokens), context)
  correct = np.zeros(len(tokens), bool)
  found = np.flatnonzero(distance != NO_REPEAT)
  correct[found] = tokens[found - distance[found]] == tokens[found]
  return distance, correct


def _previous_occurrence(keys: np.ndarray, length: int, first: int) -> np.ndarray:
  """[length] distance from position `first + i` back to the position of the previous
  equal key (`first + j`, j < i, the latest such), NO_REPEAT where none."""
  distances = np.full(length, NO_REPEAT, np.int64)
  if len(keys) < 2:
    return distances
  order = np.argsort(keys, kind="stable")  # equal keys stay in position order
  same = keys[order[1:]] == keys[order[:-1]]
  later, earlier = order[1:][same], order[:-1][same]
  distances[later + first] = later - earlier
  return distances


def _distance_band(distances: np.ndarray, edges: Sequence[int]) -> np.ndarray:
  """[...] int band of each positive distance: 0 for (0, e_1], 1 for (e_1, e_2], ...,
  len(edges) beyond e_K."""
  return np.searchsorted(np.asarray(edges, np.int64), distances, side="left")


def band_shares(distances: np.ndarray, edges: Sequence[int],
                where: Optional[np.ndarray] = None) -> Dict[str, float]:
  """Share of all tokens whose distance lies in each band of `edges` ("<=e0", "e0-e1",
  ..., ">eK") and, if given, where `where` holds; "none": no distance (NO_REPEAT)."""
  distances = np.asarray(distances)
  total = max(len(distances), 1)
  selected = np.ones(len(distances), bool) if where is None else np.asarray(where, bool)
  found = distances[selected & (distances != NO_REPEAT)]
  counts = np.bincount(_distance_band(found, edges), minlength=len(edges) + 1)
  bounds = [0, *edges]
  names = [f"<={high}" if low == 0 else f"{low}-{high}"
           for low, high in zip(bounds[:-1], bounds[1:])] + [f">{bounds[-1]}"]
  shares = {"none": float((distances == NO_REPEAT).sum() / total)}
  shares.update((name, float(count / total)) for name, count in zip(names, counts))
  return shares


def copy_bands(tokens: np.ndarray, context: int, vocab_size: int, edges: Sequence[int]
               ) -> np.ndarray:
  """[len(tokens)] int: 0 where copying (`copy_predictions`) guesses the token wrong or
  has no guess; else 1 + the band of `edges` the copy's distance lies in (0 for
  (0, e_1], as in `band_shares`)."""
  distance, correct = copy_predictions(tokens, context, vocab_size)
  return np.where(correct, 1 + _distance_band(distance, edges), 0)
