"""`evaluation_output`: where the evaluation command writes its result, and what, and the
lines it prints, on hand-made results."""
import json
import math
import os

import pytest

from memorizing_jax import evaluation_output

from event_files import read_scalars  # pylint: disable=g-bad-import-order


@pytest.mark.parametrize("workdir", ["/runs/a", "/runs/a/", "/runs/a/checkpoints",
                                     "/runs/a/checkpoints/"])
def test_default_paths_are_under_the_runs_eval_folder(workdir):
  result = {"step": 300, "evaluation": {"workdir": workdir, "name": "pg19-test-mem16"}}
  assert evaluation_output.default_paths(result) == (
      "/runs/a/eval/pg19-test-mem16/step_300.json", "/runs/a/eval/pg19-test-mem16")


def _hand_result():
  """A result as `evaluate_checkpoint` gives it: loss 1.5 over 10 tokens, 2 buckets of
  which the second is empty."""
  return {"step": 6, "loss": 1.5, "perplexity": math.exp(1.5),
          "bits_per_token": 1.5 / math.log(2), "accuracy": 0.25, "tokens": 10,
          "by_position": [{"start": 0, "end": 32, "tokens": 10, "perplexity": 4.5},
                          {"start": 32, "end": None, "tokens": 0, "perplexity": None}],
          "evaluation": {"workdir": "/runs/a", "name": "validation"}}


def test_write_outputs_writes_the_json_and_the_scalars_at_the_step(tmp_path):
  result = _hand_result()
  json_path, events = tmp_path / "new" / "folder" / "step_6.json", tmp_path / "events"
  evaluation_output.write_outputs(result, str(json_path), str(events))
  assert json.loads(json_path.read_text()) == result
  assert json_path.read_text().startswith("{\n")  # indented, for people
  scalars = read_scalars(events)
  expected = {"loss": 1.5, "perplexity": math.exp(1.5), "bits_per_token": 1.5 / math.log(2),
              "accuracy": 0.25, "tokens": 10.0, "by_position/perplexity/0_to_32": 4.5,
              "by_position/tokens/0_to_32": 10.0}  # the empty bucket is left out
  assert scalars == {tag: {6: pytest.approx(value, rel=1e-6)}
                     for tag, value in expected.items()}


def test_write_outputs_without_an_events_folder_writes_the_json_alone(tmp_path):
  evaluation_output.write_outputs(_hand_result(), str(tmp_path / "r.json"), None)
  assert os.listdir(tmp_path) == ["r.json"]


def _ablated_result():
  """A result with the memory ablation and the three splits, read with fewer slots than
  the run was trained with."""
  return {"step": 300, "loss": 2.0, "perplexity": math.exp(2.0),
          "bits_per_token": 2.0 / math.log(2), "accuracy": 0.5, "tokens": 4096,
          "perplexity_without_memory": 8.25, "gain_share": 0.4321,
          "by_position": [
              {"start": 0, "end": 512, "tokens": 1024, "perplexity": 9.0,
               "perplexity_without_memory": 9.0, "gain_share": 0.0},
              {"start": 512, "end": None, "tokens": 3072, "perplexity": 6.5,
               "perplexity_without_memory": 8.0, "gain_share": 0.5}],
          "by_copy_source": [
              {"start": None, "end": None, "tokens": 4000, "perplexity": 7.5,
               "perplexity_without_memory": 8.0, "gain_share": 0.4},
              {"start": 0, "end": 512, "tokens": 0, "perplexity": None,
               "perplexity_without_memory": None, "gain_share": None},
              {"start": 512, "end": None, "tokens": 96, "perplexity": math.inf,
               "perplexity_without_memory": 3.0, "gain_share": 0.9}],
          "by_memory_gain": [
              {"start": None, "end": 0.0, "tokens": 2000, "perplexity": 7.0,
               "perplexity_without_memory": 6.0, "gain_share": 0.0},
              {"start": 0.0, "end": None, "tokens": 2096, "perplexity": 5.0,
               "perplexity_without_memory": 9.0, "gain_share": 1.0}],
          "evaluation": {"workdir": "/runs/a", "name": "validation", "task": "pg19",
                         "split": "validation", "memory_slots": 16, "trained_memory_slots": 64,
                         "batches": 4, "batch_size": 8, "segment_length": 128,
                         "mesh": {"data": 8, "model": 1, "memory": 1}, "seconds": 12.34}}


def test_describe_summarises_the_result_the_ablation_and_each_split():
  assert evaluation_output.describe(_ablated_result()).splitlines() == [
      "step 300 of /runs/a on pg19/validation: memory 16 slots (trained with 64), 4 batches "
      "of 8 x 128 tokens, mesh {'data': 8, 'model': 1, 'memory': 1}, 12.3 s",
      "  perplexity 7.389 (loss 2.0000 nats/token, 2.8854 bits/token, accuracy 0.5000, "
      "4096 tokens)",
      "  without memory: perplexity 8.250; the memory lowers the loss of 43.2% of the tokens",
      "  by position: 0_to_512 9.000 (9.000 without) [1024], from_512 6.500 (8.000 without) "
      "[3072]",
      # The empty bucket is left out; an infinite perplexity prints as "-".
      "  by copy source: none 7.500 (8.000 without) [4000], from_512 - (3.000 without) [96]",
      "  by memory gain: below_0 7.000 [2000], from_0 5.000 [2096]"]


def test_describe_without_memory_or_splits_is_two_lines():
  result = _hand_result()
  result["evaluation"].update(task="github", split="test", memory_slots=0,
                              trained_memory_slots=0, batches=1, batch_size=8,
                              segment_length=32, mesh={"data": 1}, seconds=0.04)
  del result["by_position"]
  assert evaluation_output.describe(result) == (
      "step 6 of /runs/a on github/test: no memory, 1 batches of 8 x 32 tokens, mesh "
      "{'data': 1}, 0.0 s\n"
      "  perplexity 4.482 (loss 1.5000 nats/token, 2.1640 bits/token, "
      "accuracy 0.2500, 10 tokens)")
