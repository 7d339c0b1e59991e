"""The jitted steps: one compilation for a whole run, and a train step that lowers for TPU."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memorizing_jax.train import inputs, loop, steps, train_state


def test_steps_compile_once_for_a_whole_run(tiny):
  """Documents starting, rows finishing and the eval stream's last batch never re-trace."""
  run = loop.build_run(tiny.model, tiny.data, tiny.optimizer, tiny.mesh, tiny.trainer)
  vocabulary = inputs.load_vocabulary(tiny.data)
  state = train_state.create_train_state(run.model, tiny.model, run.tx, tiny.data.batch_size,
                                         run.layout, seed=0)
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
