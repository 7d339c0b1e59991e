"""`Score`'s figures (`inference/scoring.py`) against values worked out by hand."""
import math

import numpy as np
import pytest

from memorizing_jax.inference.scoring import Score


def test_score_figures_and_repr():
  # Losses ln 2, ln 4, ln 8 (nats): mean 2 ln 2, perplexity 4, 2 bits per token.
  score = Score(tokens=np.array([5, 6, 7], np.int32), pieces=["a", "b", "c"],
                loss=np.log(np.array([2.0, 4.0, 8.0], np.float32)),
                predictions=np.array([6, 6, 1], np.int32), memory=True)
  assert isinstance(score.mean_loss, float)
  assert score.mean_loss == pytest.approx(2 * math.log(2), rel=1e-6)
  assert score.perplexity == pytest.approx(4.0, rel=1e-6)
  assert score.bits_per_token == pytest.approx(2.0, rel=1e-6)
  assert repr(score) == ("Score(3 tokens, memory=on: loss 1.3863 nats/token, "
                         "perplexity 4.000)")
  off = Score(tokens=np.array([5], np.int32), pieces=["a"], loss=np.array([0.0], np.float32),
              predictions=np.array([5], np.int32), memory=False)
  assert (off.perplexity, off.bits_per_token) == (1.0, 0.0)
  assert repr(off) == "Score(1 tokens, memory=off: loss 0.0000 nats/token, perplexity 1.000)"
