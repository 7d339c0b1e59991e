"""The jitted steps: one compilation for a whole run, and a train step that lowers for TPU."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memorizing_jax.model import scoring
from memorizing_jax.train import inputs, loop, steps, train_state


def test_steps_compile_once_for_a_whole_run(tiny):
  """Documents starting, rows finishing and the eval stream's last batch never re-trace."""
  run = loop.build_run(tiny.model, tiny.data, tiny.optimizer, tiny.mesh, tiny.trainer)
  vocabulary = inputs.load_vocabulary(tiny.data)
  state = train_state.create_train_state(tiny.model, run.tx, tiny.data.batch_size, run.layout,
                                         seed=0)
  stream = inputs.make_stream(tiny.data, tiny.model.segment_length, vocabulary, "train")
  starts = 0
  for _ in range(6):
    batch = inputs.model_inputs(next(stream))
    starts += int(np.sum(batch["start_of_sequence"]))
    state, _ = run.steps.train(state, run.partitioner.global_batch(batch))
  assert starts > tiny.data.batch_size  # some rows moved on to a new document
  params = state.params
  scalars = loop.run_evaluation(run, params, vocabulary, max_batches=None)
  assert scalars["tokens"] > 0
  assert run.steps.train._cache_size() == 1  # pylint: disable=protected-access
  assert run.steps.evaluate._cache_size() == 1  # pylint: disable=protected-access
  # The step is pure: the same state and batch give the same result.
  batch = run.partitioner.global_batch(inputs.model_inputs(next(stream)))
  copy = jax.tree.map(jnp.copy, state)
  _, m1 = run.steps.train(state, batch)
  _, m2 = run.steps.train(copy, batch)
  assert float(m1["loss_sum"]) == float(m2["loss_sum"])


@pytest.mark.parametrize("method", ["exact", "approx"])
def test_train_step_lowers_for_tpu(tiny, method):
  """CI has no TPU: export the sharded train step for it and check the module."""
  model = dataclasses.replace(tiny.model, lookup_method=method)
  run = loop.build_run(model, tiny.data, tiny.optimizer, tiny.mesh, tiny.trainer)
  exported = jax.export.export(run.steps.train, platforms=["tpu"])(
      run.layout.abstract,
      steps.abstract_batch(run.partitioner, tiny.data.batch_size, model.segment_length))
  assert exported.platforms == ("tpu",)
  assert exported.nr_devices == 8
  text = exported.mlir_module()
  assert ("ApproxTopK" in text) == (method == "approx")
  # The donated state comes back with the same shapes and shardings.
  state_out = exported.out_avals[:len(jax.tree.leaves(run.layout.abstract))]
  assert [a.shape for a in state_out] == [a.shape for a in jax.tree.leaves(run.layout.abstract)]


def test_token_sums_match_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 5, 7)).astype(np.float32)
  targets = rng.integers(0, 7, size=(2, 5))
  mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float32)
  nll = scoring.token_nll(jnp.asarray(logits), jnp.asarray(targets))
  predictions = jnp.argmax(jnp.asarray(logits), axis=-1)
  sums = steps.token_sums(nll, predictions, jnp.asarray(targets), jnp.asarray(mask))
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  nll = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
  np.testing.assert_allclose(float(sums["loss_sum"]), (nll * mask).sum(), rtol=1e-5)
  assert float(sums["tokens"]) == 8
  assert float(sums["correct"]) == ((logits.argmax(-1) == targets) * mask).sum()


def test_diagnostics_are_summarized_per_knn_layer_from_the_sown_values():
  """A real model's sown diagnostics (kNN layers 0 and 2 of 3, the second segment so the
  memory holds the first): the summary's scalars computed again with numpy."""
  from memorizing_jax import model as M  # pylint: disable=g-import-not-at-top
  config = M.ModelConfig(vocab_size=32, num_layers=3, d_model=16, num_heads=2, head_dim=8,
                         mlp_dim=32, segment_length=8, knn_layers=(0, 2), knn_k=4,
                         memory_slots=16, relative_position_buckets=8,
                         relative_position_max_distance=16)
  module = M.MemorizingTransformer(config)
  params = M.init_params(config, jax.random.PRNGKey(0), batch_size=2)
  tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 16), 0, 32)
  state = M.init_state(config, 2)
  _, state = module.apply({"params": params}, tokens[:, :8], state, jnp.ones((2,), bool))
  _, variables = module.apply({"params": params}, tokens[:, 8:], state,
                              jnp.zeros((2,), bool), mutable=[M.DIAGNOSTICS])
  sown = M.sown_by_layer(variables[M.DIAGNOSTICS])
  assert list(sown) == [0, 2]
  assert set(sown[0]) >= {"gate", "memory_share", "memory_fill", "mean_distance",
                          "retrieved_positions"}
  summary = steps.summarize_diagnostics(variables[M.DIAGNOSTICS])
  for index in (0, 2):
    values = {k: np.asarray(v) for k, v in sown[index].items()}
    name = f"memory/layer_{index}"
    np.testing.assert_allclose(summary[f"{name}/memory_fill"], 0.5)  # 8 of 16 slots
    np.testing.assert_allclose(summary[f"{name}/gate_head1"], values["gate"][1])
    distance = values["mean_distance"]
    assert (distance > 0).all()  # every query found the previous segment
    np.testing.assert_allclose(summary[f"{name}/mean_distance"], distance.mean(), rtol=1e-6)
    np.testing.assert_allclose(summary[f"{name}/memory_share"],
                               values["memory_share"].mean(), rtol=1e-6)
  assert not any(k.startswith("memory/layer_1") for k in summary)
