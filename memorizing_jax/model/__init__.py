"""The Memorizing Transformer: config, state, the linen module and its partitioning."""
from memorizing_jax.model.config import ModelConfig
from memorizing_jax.model.knn_attention import DIAGNOSTICS, sown_by_layer
from memorizing_jax.model.partitioning import (DEFAULT_LOGICAL_AXIS_RULES, abstract_init,
                                               batch_sharding, init_params,
                                               logical_to_shardings, param_logical_axes,
                                               param_shardings, state_shardings)
from memorizing_jax.model.position_bias import causal_bucket
from memorizing_jax.model.state import (ModelState, XLCache, init_state,
                                        state_logical_axes)
from memorizing_jax.model.transformer import MemorizingTransformer

__all__ = [
    "DEFAULT_LOGICAL_AXIS_RULES", "DIAGNOSTICS", "MemorizingTransformer", "ModelConfig",
    "ModelState", "XLCache", "abstract_init", "batch_sharding", "causal_bucket",
    "init_params", "init_state", "logical_to_shardings", "param_logical_axes",
    "param_shardings", "sown_by_layer", "state_logical_axes", "state_shardings",
]
