"""A user's own registered seqio task trains through the real loop (tasks.SeqioTaskReader)."""
import math

import pytest
import seqio
import tensorflow as tf

from memorizing_jax.train import loop

TASK = "user_seqio_code"
TEXTS = {
    "train": [f"def f{i}(x):\n  return x + {i}\n\nprint(f{i}(f{i}(1)))\n" for i in range(24)],
    # 6 + 1 and 20 + 1 tokens with EOS: 28 validation tokens in all.
    "validation": ["x = 1\n", "def f():\n  return 2\n"],
}


@pytest.fixture
def user_seqio_task():
  """A seqio task over an in-memory source: {"content", "id"} examples, no vocabulary."""

  def dataset_fn(split, shuffle_files, seed=None):
    del shuffle_files, seed
    return tf.data.Dataset.from_tensor_slices(
        {"content": TEXTS[split], "id": list(range(len(TEXTS[split])))})

  seqio.TaskRegistry.remove(TASK)
  seqio.TaskRegistry.add(TASK, output_features={},
                         source=seqio.FunctionDataSource(dataset_fn, splits=list(TEXTS)))
  yield TASK
  seqio.TaskRegistry.remove(TASK)


def test_a_registered_seqio_task_trains_and_evaluates_every_token(user_seqio_task, tiny,
                                                                   tmp_path):
  configs = tiny.replace(data=dict(task=user_seqio_task, text_feature="content",
                                   data_dir=str(tmp_path / "data")),
                         trainer=dict(total_steps=4, checkpoint_every=4, eval_batches=None))
  result = loop.train(workdir=str(tmp_path / "run"), **configs.kwargs())
  assert result.step == 4 and sorted(result.train_losses) == [1, 2, 3, 4]
  assert all(math.isfinite(loss) for loss in result.train_losses.values())
  final = result.evals[4]
  assert int(final["tokens"]) == (6 + 1) + (20 + 1)
  assert math.isfinite(final["loss"])
