"""Trained models in notebooks: load a checkpoint, score, generate, explain.

    import memorizing_jax as mj
    m = mj.load("runs/quickstart")
"""
from memorizing_jax.checkpointing.discovery import NoCheckpointError
from memorizing_jax.checkpointing.fallback import CorruptCheckpointError
from memorizing_jax.inference.explanation import Explanation
from memorizing_jax.inference.generation import Generation
from memorizing_jax.inference.loaded_model import LoadedModel
from memorizing_jax.inference.loading import load
from memorizing_jax.inference.plots import plot_retrieval_distances, plot_top_gains
from memorizing_jax.inference.scoring import Score

__all__ = ["CorruptCheckpointError", "Explanation", "Generation", "LoadedModel", "NoCheckpointError", "Score", "load",
           "plot_retrieval_distances", "plot_top_gains"]
