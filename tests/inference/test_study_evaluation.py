"""The study's evaluation (`memorizing_jax.study.evaluate.evaluate_run`) on the shared
tiny run: choosing a checkpoint, and the split by position in the document."""
import math
import os

import pytest


def _configs(workdir):
  import gin  # pylint: disable=g-import-not-at-top
  from memorizing_jax import main  # pylint: disable=g-import-not-at-top
  from memorizing_jax.model.config import ModelConfig  # pylint: disable=g-import-not-at-top
  from memorizing_jax.train import inputs, loop, optimizer, partitioner  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  try:
    main.parse_gin([os.path.join(os.path.dirname(workdir), "tiny.gin")], [],
                   main.gin_search_paths())
    return [gin.get_configurable(c)() for c in (
        ModelConfig, inputs.DataConfig, optimizer.OptimizerConfig, partitioner.MeshConfig,
        loop.TrainerConfig)]
  finally:
    gin.clear_config()


@pytest.fixture(scope="module")
def scored(trained_workdir):
  from memorizing_jax.study import evaluate  # pylint: disable=g-import-not-at-top
  configs = _configs(trained_workdir)
  latest = evaluate.evaluate_run(trained_workdir, *configs, max_batches=3,
                                 position_edges=(16, 40))
  earlier = evaluate.evaluate_run(trained_workdir, *configs, max_batches=3, step=3)
  return configs, latest, earlier


def test_latest_and_chosen_checkpoint(scored, trained_workdir, tmp_path):
  from memorizing_jax.study import evaluate  # pylint: disable=g-import-not-at-top
  configs, latest, earlier = scored
  assert latest["step"] == 6 and earlier["step"] == 3
  assert latest["tokens"] == earlier["tokens"] > 0
  assert latest["loss"] != earlier["loss"]  # other parameters
  assert "by_position" not in earlier
  with pytest.raises(FileNotFoundError, match=r"step 4 .* has steps \[3, 6\]"):
    evaluate.evaluate_run(trained_workdir, *configs, max_batches=1, step=4)
  # A workdir that does not exist is reported, not created.
  with pytest.raises(FileNotFoundError, match="no checkpoint in"):
    evaluate.evaluate_run(str(tmp_path / "absent"), *configs)
  assert not (tmp_path / "absent").exists()


def test_position_split_adds_up_to_the_whole(scored):
  _, latest, _ = scored
  buckets = latest["by_position"]
  assert [(b["start"], b["end"]) for b in buckets] == [(0, 16), (16, 40), (40, None)]
  # 3 batches of 8 rows x 16 targets read 8 long documents from their starts: positions
  # 0-15, 16-31 and 32-47 of each, so 16, 16 + 8 and 8 targets per row in the buckets.
  assert [b["tokens"] for b in buckets] == [8 * 16, 8 * 24, 8 * 8]
  assert sum(b["tokens"] for b in buckets) == latest["tokens"]
  total = sum(b["tokens"] * math.log(b["perplexity"]) for b in buckets if b["tokens"])
  assert total / latest["tokens"] == pytest.approx(latest["loss"], rel=1e-6)
