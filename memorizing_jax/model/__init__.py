"""The Memorizing Transformer: config, state, the linen module and its partitioning."""
from memorizing_jax.model.config import ModelConfig
from memorizing_jax.model.knn_attention import DIAGNOSTICS, sown_by_layer
from memorizing_jax.model.partitioning import (DEFAULT_LOGICAL_AXIS_RULES, batch_sharding,
                                               fit_shardings, init_params,
                                               logical_to_shardings, param_layout,
                                               param_logical_axes, param_shardings,
                                               state_layout, state_shardings)
from memorizing_jax.model.position_bias import causal_bucket
from memorizing_jax.model.state import (ModelState, XLCache, init_state,
                                        state_logical_axes)
from memorizing_jax.model.transformer import MemorizingTransformer

__all__ = [
    "DEFAULT_LOGICAL_AXIS_RULES", "DIAGNOSTICS", "MemorizingTransformer", "ModelConfig",
    "ModelState", "XLCache", "batch_sharding", "causal_bucket", "fit_shardings",
    "init_params", "init_state", "logical_to_shardings", "param_layout", "param_logical_axes",
    "param_shardings", "sown_by_layer", "state_layout", "state_logical_axes",
    "state_shardings",
]
