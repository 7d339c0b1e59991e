"""ModelConfig validation, the state's structure and the model's input checks."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from memorizing_jax import model as M
from memorizing_jax.memory import MemoryState

SMALL = dict(vocab_size=64, num_layers=2, d_model=32, num_heads=4, head_dim=8, mlp_dim=64,
             segment_length=8, knn_layers=(1,), knn_k=4, memory_slots=16)


def test_defaults_are_the_papers_200m_model():
  cfg = M.ModelConfig()
  assert (cfg.num_layers, cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.mlp_dim) == (
      12, 1024, 8, 128, 4096)
  assert cfg.knn_layer_indices == (8,) and cfg.knn_k == 32
  assert (cfg.relative_position_buckets, cfg.relative_position_max_distance) == (32, 128)


@pytest.mark.parametrize("overrides, message", [
    ({"knn_layers": (2,)}, "outside the 2 layers"),
    ({"knn_layers": (-3,)}, "outside the 2 layers"),
    ({"knn_layers": (1, -1)}, "names a layer twice"),
    ({"knn_k": 32}, "exceeds memory_slots"),
    ({"memory_slots": 7}, r"memory_slots=7 is smaller than one segment \(segment_length=8\)"
                          r".*Set memory_slots >= 8.*or knn_layers=\(\)"),
    ({"lookup_method": "faiss"}, "lookup_method must be one of"),
    ({"memory_dtype": "int8"}, "memory_dtype must be one of"),
    ({"compute_dtype": "float64"}, "compute_dtype must be one of"),
    ({"d_model": 0}, "d_model must be a positive integer"),
    ({"dropout_rate": 1.0}, "dropout_rate"),
    ({"recall_target": 0.0}, "recall_target"),
    ({"temperature_init": -1.0}, "temperature_init must be positive"),
    ({"remat": "all"}, "remat must be one of"),
    ({"relative_position_buckets": 32, "relative_position_max_distance": 16},
     "must exceed relative_position_buckets // 2"),
])
def test_bad_config_names_the_problem(overrides, message):
  with pytest.raises(ValueError, match=message):
    M.ModelConfig(**{**SMALL, **overrides})


def test_config_accepts_gin_style_values():
  cfg = M.ModelConfig(**{**SMALL, "knn_layers": [-1], "memory_dtype": jnp.bfloat16})
  assert cfg.knn_layers == (-1,) and cfg.knn_layer_indices == (1,)
  assert cfg.memory_dtype == "bfloat16" and cfg.memory_jnp_dtype == jnp.bfloat16
  assert M.ModelConfig(**{**SMALL, "knn_layers": (), "knn_k": 64}).knn_layers == ()
  # Without a kNN layer memory_slots is unused: any size is accepted; one segment is enough.
  assert M.ModelConfig(**{**SMALL, "knn_layers": (), "memory_slots": 4}).memory_slots == 4
  assert M.ModelConfig(**{**SMALL, "memory_slots": 8}).memory_slots == 8


@pytest.mark.parametrize("given, dtype", [
    ("float32", jnp.float32), ("bfloat16", jnp.bfloat16), ("float16", jnp.float16),
    (jnp.bfloat16, jnp.bfloat16), (np.float16, jnp.float16)])
def test_compute_dtype_sets_the_xl_cache_dtype_and_leaves_parameters_float32(given, dtype):
  cfg = M.ModelConfig(**{**SMALL, "compute_dtype": given})
  assert cfg.compute_jnp_dtype == dtype
  state = M.init_state(cfg, 2)
  assert {c.keys.dtype for c in state.xl_caches} == {c.values.dtype for c in state.xl_caches} \
      == {jnp.dtype(dtype)}
  assert state.memories[0].keys.dtype == jnp.float32  # the memory's own dtype
  variables = jax.eval_shape(M.MemorizingTransformer(cfg).init, jax.random.PRNGKey(0),
                             jnp.zeros((2, 8), jnp.int32), state, jnp.ones((2,), bool))
  params = jax.tree.leaves(nn.meta.unbox(variables["params"]))
  assert {leaf.dtype for leaf in params} == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize("overrides, temperature, gate_bias", [
    ({}, 8 ** 0.5, 0.0),                       # head_dim 8: sqrt(8), gate 0.5
    ({"temperature_init": 16.0, "gate_bias_init": -2.0}, 16.0, -2.0)])
def test_initial_temperature_and_gate_bias(overrides, temperature, gate_bias):
  cfg = M.ModelConfig(**{**SMALL, **overrides})
  assert cfg.initial_temperature == pytest.approx(temperature)
  model = M.MemorizingTransformer(cfg)
  tokens = jnp.zeros((2, 8), jnp.int32)
  params = nn.meta.unbox(model.init(jax.random.PRNGKey(0), tokens, M.init_state(cfg, 2),
                                    jnp.ones((2,), bool)))["params"]
  found = {"temperature": [], "gate_bias": []}
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    name = jax.tree_util.keystr(path)
    for key in found:
      if key in name:
        found[key].append(np.asarray(leaf))
  # Both layers normalise q and k; only the kNN layer has a gate.
  assert len(found["temperature"]) == 2 and len(found["gate_bias"]) == 1
  for value in found["temperature"]:
    np.testing.assert_allclose(value, np.full(4, temperature), rtol=1e-6)
  np.testing.assert_allclose(found["gate_bias"][0], np.full(4, gate_bias))


@pytest.mark.parametrize("overrides, caches, memories", [
    ({}, 2, 1), ({"use_xl_cache": False}, 0, 1), ({"knn_layers": ()}, 2, 0),
    ({"use_xl_cache": False, "knn_layers": ()}, 0, 0)])
def test_state_and_its_logical_axes_have_one_structure(overrides, caches, memories):
  cfg = M.ModelConfig(**{**SMALL, **overrides})
  state = M.init_state(cfg, 3)
  assert len(state.xl_caches) == caches and len(state.memories) == memories
  axes = M.state_logical_axes(cfg)
  assert jax.tree.structure(axes) == jax.tree.structure(state)
  for leaf, names in zip(jax.tree.leaves(state), jax.tree.leaves(axes)):
    assert isinstance(names, PartitionSpec) and len(names) == leaf.ndim and names[0] == "batch"
  for cache in state.xl_caches:
    assert cache.keys.shape == (3, 4, 8, 8) and not cache.valid.any()
  for mem in state.memories:
    assert isinstance(mem, MemoryState) and mem.keys.shape == (3, 4, 16, 8)


def test_model_rejects_mismatched_inputs():
  cfg = M.ModelConfig(**SMALL)
  model = M.MemorizingTransformer(cfg)
  tokens = jnp.zeros((2, 8), jnp.int32)
  key = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match="init_state"):
    jax.eval_shape(model.init, key, tokens, M.init_state(cfg, 3), jnp.ones((2,), bool))
  other = M.ModelConfig(**{**SMALL, "use_xl_cache": False})
  with pytest.raises(ValueError, match="init_state"):
    jax.eval_shape(model.init, key, tokens, M.init_state(other, 2), jnp.ones((2,), bool))
  with pytest.raises(ValueError, match="start_of_sequence"):
    jax.eval_shape(model.init, key, tokens, M.init_state(cfg, 2), jnp.ones((3,), bool))
  with pytest.raises(ValueError, match="integer"):
    jax.eval_shape(model.init, key, tokens.astype(jnp.float32), M.init_state(cfg, 2),
                   jnp.ones((2,), bool))
  with pytest.raises(ValueError, match="batch_size"):
    M.init_state(cfg, 0)
