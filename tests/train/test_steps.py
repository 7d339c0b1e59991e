"""The jitted steps: one compilation for a whole run, and a train step that lowers for TPU;
the pure steps and their jit wiring on a stand-in bigram model, checked against numpy."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from memorizing_jax.model import scoring
from memorizing_jax.train import inputs, loop, steps, train_state
from memorizing_jax.train.partitioner import MeshConfig, Partitioner


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


class _Bigram(nn.Module):
  """A stand-in model with the transformer's `apply` contract: logits are a row of a
  [vocab, vocab] table picked by each input token; the state counts each row's tokens
  since its document started. Not deterministic, it scales the logits by a factor read
  off the dropout key (a stand-in for dropout masks that compiles no random bits)."""

  vocab: int = 5

  @nn.compact
  def __call__(self, inputs, state, start_of_sequence, deterministic=True):
    table = self.param("table", nn.initializers.normal(1.0), (self.vocab, self.vocab))
    logits = table[inputs]
    if not deterministic:
      key_bits = jax.random.key_data(self.make_rng("dropout"))[-1]
      logits = logits * (1.0 + (key_bits % 1000).astype(jnp.float32) / 1000.0)
    count = jnp.where(start_of_sequence, 0, state["count"]) + inputs.shape[1]
    return logits, {"count": count}


def _bigram_case():
  """(model, params, model state, batch) of 4 rows of 3 tokens; rows 0 and 2 start."""
  rng = np.random.default_rng(0)
  batch = {"inputs": rng.integers(0, 5, size=(4, 3)).astype(np.int32),
           "targets": rng.integers(0, 5, size=(4, 3)).astype(np.int32),
           "loss_mask": np.array([[1, 1, 0], [1, 1, 1], [0, 0, 0], [1, 0, 1]], np.float32),
           "start_of_sequence": np.array([True, False, True, False])}
  params = {"table": rng.normal(size=(5, 5)).astype(np.float32)}
  return _Bigram(), params, {"count": np.array([7, 7, 9, 2], np.int32)}, batch


# The steps are pure: jitted whole here, once per model (one small compilation rather
# than one per op). The optimizer and schedule are module-level, so calls share them.
_TX = optax.sgd(0.5)


def _schedule(step):
  return 0.1 * (step + 1)


_eval_step = jax.jit(steps.eval_step, static_argnames=("model",))
_train_step = jax.jit(steps.train_step, static_argnames=("model", "tx", "schedule",
                                                          "dropout_seed", "use_dropout"))


def _numpy_scores(table, batch):
  """(loss_sum, correct, tokens, d mean loss / d table) of the bigram table, in numpy."""
  logits = np.asarray(table, np.float64)[batch["inputs"]]
  mask = batch["loss_mask"]
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  nll = -np.log(np.take_along_axis(probs, batch["targets"][..., None], -1)[..., 0])
  tokens = mask.sum()
  d_logits = (probs - np.eye(5)[batch["targets"]]) * mask[..., None] / tokens
  grad = np.zeros((5, 5))
  np.add.at(grad, batch["inputs"], d_logits)
  correct = ((logits.argmax(-1) == batch["targets"]) * mask).sum()
  return (nll * mask).sum(), correct, tokens, grad


def test_eval_step_sums_the_masked_scores_and_carries_the_state():
  model, params, state, batch = _bigram_case()
  new_state, metrics = _eval_step(params, state, batch, model=model)
  loss_sum, correct, tokens, _ = _numpy_scores(params["table"], batch)
  assert set(metrics) == {"loss_sum", "correct", "tokens"}  # no kNN layer: no diagnostics
  np.testing.assert_allclose(float(metrics["loss_sum"]), loss_sum, rtol=1e-5)
  assert float(metrics["correct"]) == correct and float(metrics["tokens"]) == 7
  # Rows 0 and 2 start a document: their count restarts at the segment's 3 tokens.
  np.testing.assert_array_equal(new_state["count"], [3, 10, 3, 5])


def test_train_step_applies_the_optimizer_to_the_mean_loss_gradient():
  model, params, state, batch = _bigram_case()
  train = train_state.TrainState(step=jnp.int32(3), params=params, opt_state=_TX.init(params),
                                 model_state=state)
  new, metrics = _train_step(train, batch, model=model, tx=_TX, schedule=_schedule,
                             dropout_seed=0, use_dropout=False)
  loss_sum, correct, tokens, grad = _numpy_scores(params["table"], batch)
  np.testing.assert_allclose(np.asarray(new.params["table"]),
                             params["table"] - 0.5 * grad, rtol=1e-5, atol=1e-6)  # sgd(0.5)
  np.testing.assert_allclose(float(metrics["grad_norm"]), np.sqrt((grad ** 2).sum()),
                             rtol=1e-5)
  np.testing.assert_allclose(float(metrics["loss_sum"]), loss_sum, rtol=1e-5)
  assert float(metrics["correct"]) == correct and float(metrics["tokens"]) == tokens
  np.testing.assert_allclose(float(metrics["learning_rate"]), 0.4)  # the schedule at step 3
  assert int(new.step) == 4
  np.testing.assert_array_equal(new.model_state["count"], [3, 10, 3, 5])


def test_train_step_dropout_key_depends_on_the_step():
  """A resumed run draws the dropout masks of the uninterrupted one: the same step, the
  same key; the next step, another (the parameters are the same, so only the key
  differs)."""
  model, params, state, batch = _bigram_case()

  def loss(step):
    train = train_state.TrainState(step=jnp.int32(step), params=params,
                                   opt_state=_TX.init(params), model_state=state)
    _, metrics = _train_step(train, batch, model=model, tx=_TX, schedule=_schedule,
                             dropout_seed=0, use_dropout=True)
    return float(metrics["loss_sum"])

  assert loss(2) == loss(2) != loss(3)


def test_batch_shardings_split_the_rows_over_the_data_axis():
  partitioner = Partitioner(MeshConfig(data=4, model=2))
  shardings = steps.batch_shardings(partitioner)
  assert sorted(shardings) == ["inputs", "loss_mask", "start_of_sequence", "targets"]
  devices = partitioner.mesh.devices  # [data 4, model 2, memory 1]
  for name in ("inputs", "targets", "loss_mask"):
    where = shardings[name].devices_indices_map((8, 16))
    for i in range(4):  # data row i holds rows 2i, 2i + 1 on both of its model devices
      for j in range(2):
        rows, length = where[devices[i, j, 0]]
        assert (rows.start, rows.stop) == (2 * i, 2 * i + 2)
        assert (length.start, length.stop) in ((None, None), (0, 16))
  assert shardings["start_of_sequence"].shard_shape((8,)) == (2,)
  # Rules that put the batch on both axes split it 8 ways.
  both = Partitioner(MeshConfig(data=4, model=2, logical_axis_rules=(
      ("batch", ("data", "model")),)))
  assert steps.batch_shardings(both)["inputs"].shard_shape((8, 16)) == (1, 16)


def test_jit_steps_match_the_plain_steps_and_donate_the_states():
  model, params, state, batch = _bigram_case()
  partitioner = Partitioner(MeshConfig(data=4, model=2))
  replicated = partitioner.replicated()
  rows = partitioner.sharding(jax.sharding.PartitionSpec("batch"))
  host = train_state.TrainState(step=jnp.int32(3), params=params, opt_state=_TX.init(params),
                                model_state=state)
  shardings = jax.tree.map(lambda _: replicated, host).replace(model_state={"count": rows})
  compiled = steps.jit_steps(model, _TX, _schedule, partitioner, shardings, {"count": rows},
                             dropout_seed=0, use_dropout=False)
  assert isinstance(compiled, steps.CompiledSteps)
  expected_state, expected = _train_step(host, batch, model=model, tx=_TX, schedule=_schedule,
                                         dropout_seed=0, use_dropout=False)
  placed = jax.device_put(host, shardings)
  new, metrics = compiled.train(placed, partitioner.global_batch(batch))
  for got, want in zip(jax.tree.leaves((new, metrics)), jax.tree.leaves((expected_state,
                                                                         expected))):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-7)
  assert placed.params["table"].is_deleted()  # the train state is donated
  assert new.model_state["count"].sharding.is_equivalent_to(rows, 1)
  assert metrics["loss_sum"].sharding.is_fully_replicated

  eval_state = jax.device_put(state, {"count": rows})
  eval_new, sums = compiled.evaluate(new.params, eval_state, partitioner.global_batch(batch))
  _, eval_expected = _eval_step(jax.device_get(new.params), state, batch, model=model)
  np.testing.assert_allclose(float(sums["loss_sum"]), float(eval_expected["loss_sum"]),
                             rtol=1e-5)
  assert eval_state["count"].is_deleted() and not new.params["table"].is_deleted()
  np.testing.assert_array_equal(np.asarray(eval_new["count"]), [3, 10, 3, 5])
