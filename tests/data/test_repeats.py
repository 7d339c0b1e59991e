"""`data.repeats`: repeat distances and copy guesses against a brute-force scan."""
import numpy as np
import pytest

from memorizing_jax.data import repeats


def naive_repeat_distance(tokens, t, context):
  """Distance back to the latest earlier end of the n-gram tokens[t - context : t + 1]."""
  if t < context:
    return repeats.NO_REPEAT
  gram = list(tokens[t - context:t + 1])
  for q in range(t - 1, context - 1, -1):
    if list(tokens[q - context:q + 1]) == gram:
      return t - q
  return repeats.NO_REPEAT


def naive_copy(tokens, t, context):
  """(distance, correct) of copying the successor of the latest earlier occurrence of
  tokens[t - context : t]."""
  if t < context:
    return repeats.NO_REPEAT, False
  wanted = list(tokens[t - context:t])
  for q in range(t - 1, context - 1, -1):  # q: the successor's position
    if list(tokens[q - context:q]) == wanted:
      return t - q, bool(tokens[q] == tokens[t])
  return repeats.NO_REPEAT, False


@pytest.mark.parametrize("context", [1, 2, 3])
def test_against_a_brute_force_scan(context):
  rng = np.random.default_rng(context)
  tokens = rng.integers(0, 3, size=300)  # a small alphabet repeats often
  distances = repeats.repeat_distances(tokens, context, 3)
  copy_distance, correct = repeats.copy_predictions(tokens, context, 3)
  for t in range(len(tokens)):
    assert distances[t] == naive_repeat_distance(tokens, t, context), t
    assert (copy_distance[t], correct[t]) == naive_copy(tokens, t, context), t


def test_a_hand_worked_case():
  tokens = np.array([1, 2, 3, 1, 2, 4, 1, 2, 3])
  # (1, 2, 3) recurs at the end, 6 tokens after its first end.
  assert repeats.repeat_distances(tokens, 2, 8).tolist() == [-1] * 8 + [6]
  distance, correct = repeats.copy_predictions(tokens, 2, 8)
  # After (1, 2): the guess for position 5 copies position 2 (a 3, wrong: it is a 4); the
  # guess for position 8 copies the latest occurrence, position 5 (a 4, wrong again).
  assert distance.tolist() == [-1] * 5 + [3, -1, -1, 3]
  assert not correct.any()
  # With one token of context: position 4 (a 2 after a 1) copies position 1, right.
  distance, correct = repeats.copy_predictions(tokens, 1, 8)
  assert (distance[4], correct[4]) == (3, True)
  bands = repeats.copy_bands(tokens, 1, 8, edges=(2, 3))
  assert bands[4] == 2  # distance 3 lies in (2, 3]
  assert bands[5] == 0  # after a 2 came a 3 before, so the guess 3 is wrong


def test_band_shares_count_every_token_once():
  distances = np.array([-1, 1, 5, 5, 9, 100])
  shares = repeats.band_shares(distances, (4, 9))
  assert shares == pytest.approx({"none": 1 / 6, "<=4": 1 / 6, "4-9": 3 / 6, ">9": 1 / 6})
  right = repeats.band_shares(distances, (4, 9), where=distances != 5)
  assert right == pytest.approx({"none": 1 / 6, "<=4": 1 / 6, "4-9": 1 / 6, ">9": 1 / 6})
  assert repeats.band_shares(distances, ())[">0"] == pytest.approx(5 / 6)


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match="at most 5 tokens"):
    repeats.ngram_keys(np.zeros(10, int), 6, 1024)  # 7 x 10 bits > 63
  with pytest.raises(ValueError, match=r"must lie in \[0, 4\)"):
    repeats.repeat_distances(np.array([0, 4]), 1, 4)
  with pytest.raises(ValueError, match="at least 1 token"):
    repeats.copy_predictions(np.array([0, 1]), 0, 4)
  assert repeats.repeat_distances(np.zeros(0, int), 2, 4).shape == (0,)
  assert repeats.copy_predictions(np.zeros(1, int), 2, 4)[0].tolist() == [-1]
