"""Plots of an `Explanation`: matplotlib figures (no pyplot state), shown inline by a
notebook when they are a cell's value, and saved to a file when given a path.

    e = m.explain(text)
    plot_top_gains(e)                              # shown in the notebook
    plot_retrieval_distances(e, "distances.png")   # shown and saved
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

from memorizing_jax.inference.explanation import Explanation


def _figure(width: float, height: float):
  # matplotlib takes half a second to import: only when a plot is drawn, not on `import mj`.
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  return Figure(figsize=(width, height), layout="constrained")


def plot_top_gains(explanation: Explanation, path: Optional[str] = None, n: int = 20):
  """A bar chart (matplotlib Figure) of the n tokens that gained most from memory,
  saved to `path` when one is given."""
  top = explanation.top_gains(n)
  figure = _figure(8, 0.3 * max(len(top), 4) + 1)
  axes = figure.add_subplot()
  labels = [repr(t["context"])[1:-1][-40:] for t in top]
  axes.barh(np.arange(len(top)), [t["gain"] for t in top], color="tab:green")
  axes.set_yticks(np.arange(len(top)), labels, fontsize=7, family="monospace")
  axes.invert_yaxis()
  axes.set_xlabel("gain from memory (loss without - loss with), nats")
  axes.set_title("Tokens that gained most from memory")
  return _saved(figure, path)


def plot_retrieval_distances(explanation: Explanation, path: Optional[str] = None,
                             bins: int = 40):
  """A histogram (matplotlib Figure) of how far back each head's top retrieved entry
  lies, saved to `path` when one is given."""
  distances = explanation.top_distances()
  figure = _figure(7, 4)
  axes = figure.add_subplot()
  if distances.size:
    edges = np.unique(np.geomspace(1, max(distances.max(), 2) + 1, bins).astype(int))
    axes.hist(distances, bins=edges, color="tab:blue")
    axes.set_xscale("log")
  else:
    axes.text(0.5, 0.5, "nothing retrieved (the memory was empty)", ha="center",
              transform=axes.transAxes)
  axes.set_xlabel("distance back of each head's top retrieved entry, tokens")
  axes.set_ylabel("count")
  axes.set_title("Retrieval distances")
  return _saved(figure, path)


def _saved(figure, path: Optional[str]):
  if path is not None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=100)
  return figure
