"""The study's evaluation (`experiments.paper_study.evaluate.evaluate_run`) on the
tests' shared tiny run (`trained_workdir`): choosing a checkpoint, and the splits by position in the
document and by where copying would find a target."""
import math
import os

import pytest


def _configs(workdir):
  import gin  # pylint: disable=g-import-not-at-top
  from memorizing_jax import main  # pylint: disable=g-import-not-at-top
  from memorizing_jax.data.config import DataConfig  # pylint: disable=g-import-not-at-top
  from memorizing_jax.model.config import ModelConfig  # pylint: disable=g-import-not-at-top
  from memorizing_jax.train import optimizer, partitioner  # pylint: disable=g-import-not-at-top
  from memorizing_jax.train.trainer_config import TrainerConfig  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  try:
    main.parse_gin([os.path.join(os.path.dirname(workdir), "tiny.gin")], [],
                   main.gin_search_paths())
    return [gin.get_configurable(c)() for c in (
        ModelConfig, DataConfig, optimizer.OptimizerConfig, partitioner.MeshConfig,
        TrainerConfig)]
  finally:
    gin.clear_config()


@pytest.fixture(scope="module")
def scored(trained_workdir):
  from experiments.paper_study import evaluate  # pylint: disable=g-import-not-at-top
  configs = _configs(trained_workdir)
  latest = evaluate.evaluate_run(trained_workdir, max_batches=3, position_edges=(16, 40))
  earlier = evaluate.evaluate_run(trained_workdir, max_batches=3, step=3)
  return configs, latest, earlier


def test_latest_and_chosen_checkpoint(scored, trained_workdir, tmp_path):
  from experiments.paper_study import evaluate  # pylint: disable=g-import-not-at-top
  configs, latest, earlier = scored
  assert latest["step"] == 6 and earlier["step"] == 3
  assert latest["tokens"] == earlier["tokens"] > 0
  assert latest["loss"] != earlier["loss"]  # other parameters
  assert "by_position" not in earlier
  with pytest.raises(FileNotFoundError, match=r"step 4 .* holds steps \[3, 6\]"):
    evaluate.evaluate_run(trained_workdir, max_batches=1, step=4)
  # A workdir that does not exist is reported, not created.
  with pytest.raises(FileNotFoundError, match="no checkpoint in"):
    evaluate.evaluate_run(str(tmp_path / "absent"))
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


def test_copy_source_split_counts_what_a_brute_force_copy_finds(scored, trained_workdir):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from memorizing_jax.data import tasks  # pylint: disable=g-import-not-at-top
  from experiments.paper_study import evaluate  # pylint: disable=g-import-not-at-top
  from memorizing_jax.train import inputs  # pylint: disable=g-import-not-at-top
  from tests.data.test_repeats import naive_copy  # pylint: disable=g-import-not-at-top
  configs, latest, _ = scored
  model_config, data_config = configs[:2]
  assert "by_copy_source" not in latest
  # 8 batches: positions 0-127 of the first 8 documents, past their 24 definitions
  # (72 characters) into uses that repeat an earlier statement.
  batches = 8
  scores = evaluate.evaluate_run(trained_workdir, max_batches=batches, copy_edges=(8, 24),
                                 copy_context=2)
  buckets = scores["by_copy_source"]
  assert scores["copy_context"] == 2
  assert [(b["start"], b["end"]) for b in buckets] == [
      (None, None), (0, 8), (8, 24), (24, None)]
  # The same 3 eval batches, each target found in its document's text (byte id + 3).
  texts = [d.text for d in tasks.get_reader(data_config.task).documents(data_config.eval_split)]
  stream = inputs.make_stream(data_config, model_config.segment_length,
                              inputs.load_vocabulary(data_config), mode="eval")
  expected = [0, 0, 0, 0]
  for _, batch in zip(range(batches), stream):
    for row, doc in enumerate(batch["document_id"].tolist()):
      if doc < 0:
        continue
      tokens = [b + 3 for b in texts[doc].encode("utf-8")]
      for j in np.flatnonzero(batch["loss_mask"][row]):
        t = int(batch["token_offset"][row]) + int(j)
        if t >= len(tokens):  # the end-of-document target
          expected[0] += 1
          continue
        assert batch["targets"][row, j] == tokens[t]
        distance, correct = naive_copy(tokens, t, 2)
        band = 0 if not correct else 1 if distance <= 8 else 2 if distance <= 24 else 3
        expected[band] += 1
  assert [b["tokens"] for b in buckets] == expected
  assert all(expected)  # every bucket is exercised
  total = sum(b["tokens"] * math.log(b["perplexity"]) for b in buckets if b["tokens"])
  assert total / scores["tokens"] == pytest.approx(scores["loss"], rel=1e-6)
