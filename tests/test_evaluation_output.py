"""`evaluation_output`: where the evaluation command writes its result, and what, on a
hand-made result."""
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
