"""The model on 8 CPU devices (data 2 x model 4, data 8, and meshes whose `memory` axis
splits the memory's slots 4 ways) equals one device.

The mesh is set with `jax.set_mesh`, as a notebook user would: the kNN layer then
looks up and writes each device's own rows, heads and slots (memory/shard_local.py).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from memorizing_jax import model as M
from meshes import cpu_mesh  # pylint: disable=g-bad-import-order

BATCH = 8
SOS = [[True] * 8, [False] * 8, [i % 3 == 0 for i in range(8)]]


@pytest.fixture(scope="module")
def one_device_run(tiny):
  cfg = tiny.config
  seg = cfg.segment_length
  tokens = np.random.default_rng(7).integers(0, cfg.vocab_size, (BATCH, 3 * seg), np.int32)
  state, logits = M.init_state(cfg, BATCH), []
  for s, sos in enumerate(SOS):
    out, state = tiny.apply(tiny.params, jnp.asarray(tokens[:, s * seg:(s + 1) * seg]), state,
                            jnp.asarray(sos))
    logits.append(np.asarray(out))
  return tokens, np.concatenate(logits, axis=1), state


@pytest.mark.parametrize("mesh_shape", [(2, 4), (8, 1), (2, 1, 4), (1, 2, 4)])
def test_sharded_model_matches_one_device(tiny, one_device_run, mesh_shape):
  assert len(jax.devices()) == 8
  cfg = tiny.config
  seg = cfg.segment_length
  tokens, want_logits, want_state = one_device_run
  mesh = cpu_mesh(*mesh_shape)
  param_sh, state_sh = M.param_shardings(cfg, mesh), M.state_shardings(cfg, mesh)
  step = jax.jit(lambda p, t, s, f: tiny.model.apply({"params": p}, t, s, f),
                 in_shardings=(param_sh, M.batch_sharding(mesh, 2), state_sh,
                               M.batch_sharding(mesh, 1)),
                 out_shardings=(M.batch_sharding(mesh, 3), state_sh), donate_argnums=(2,))
  params = jax.device_put(tiny.params, param_sh)
  state = jax.device_put(M.init_state(cfg, BATCH), state_sh)
  segments = [(jnp.asarray(tokens[:, s * seg:(s + 1) * seg]), jnp.asarray(sos))
              for s, sos in enumerate(SOS)]
  logits = []
  with jax.set_mesh(mesh):
    for segment, sos in segments:
      out, state = step(params, segment, state, sos)
      logits.append(np.asarray(out))
  np.testing.assert_allclose(np.concatenate(logits, axis=1), want_logits, rtol=1e-5, atol=1e-5)
  for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(want_state)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
  entries = state.memories[0].entries
  want_spec = P("data", "model", None, None, None) if len(mesh_shape) == 2 else P(
      "data", "model", "memory", None, None)
  assert entries.sharding.spec == want_spec
  assert len(entries.addressable_shards) == 8
  if len(mesh_shape) == 3:  # each device holds a quarter of its rows' and heads' slots
    assert entries.addressable_shards[0].data.shape[2] == cfg.memory_slots // 4


def test_default_rules_layout(tiny):
  mesh = cpu_mesh(2, 4)
  params = M.param_shardings(tiny.config, mesh)
  attention = params["layer_0"]["attention"]
  assert attention["query"]["kernel"].spec == P(None, "model", None)
  assert attention["out"]["kernel"].spec == P("model", None, None)
  assert params["layer_0"]["mlp"]["wi"]["kernel"].spec == P(None, "model")
  assert params["embed"]["embedding"].spec == P("model", None)
  state = M.state_shardings(tiny.config, mesh)
  assert state.xl_caches[1].valid.spec == P("data", None)
  assert state.memories[0].positions.spec == P("data", None)
  assert M.batch_sharding(mesh, 2).spec == P("data", None)


def test_init_params_created_sharded(tiny):
  mesh = cpu_mesh(2, 4)
  params = M.init_params(tiny.config, jax.random.PRNGKey(0), mesh=mesh)
  kernel = params["layer_1"]["attention"]["query"]["kernel"]
  assert kernel.sharding.spec == P(None, "model", None)
  assert jax.tree.structure(params) == jax.tree.structure(tiny.params)
