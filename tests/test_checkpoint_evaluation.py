"""`checkpoint_evaluation`: the settings it checks, and a workdir with nothing to score.
(Its scoring itself is tested through the command, in test_evaluate_command.py.)"""
import pytest

import memorizing_jax as mj
from memorizing_jax.checkpoint_evaluation import EvaluationConfig, evaluate_checkpoint


@pytest.mark.parametrize("fields, message", [
    (dict(step=-1), r"^step must be >= 0, got -1$"),
    (dict(memory_slots=0), r"^memory_slots must be positive, got 0$"),
    (dict(batch_size=-2), r"^batch_size must be positive, got -2$"),
    (dict(max_batches=0), r"^max_batches must be positive, got 0$"),
    (dict(position_edges=(8, 4)), r"^position_edges must be increasing and positive, "
                                  r"got \(8, 4\)$"),
    (dict(position_edges=(4, 4)), r"^position_edges must be increasing"),
    (dict(position_edges=(0, 4)), r"^position_edges must be increasing and positive"),
    (dict(gain_edges=(0.1, -0.1)), r"^gain_edges must be increasing, got \(0.1, -0.1\)$"),
    (dict(copy_edges=(-3,)), r"^copy_edges must be increasing and positive, got \(-3,\)$"),
    (dict(copy_context=0), r"^copy_context must be positive, got 0$"),
])
def test_evaluation_config_rejects_values_that_do_not_fit(fields, message):
  with pytest.raises(ValueError, match=message):
    EvaluationConfig(**fields)


def test_evaluation_config_accepts_the_edge_values():
  config = EvaluationConfig(step=0, memory_slots=1, batch_size=1, max_batches=1,
                            position_edges=(), gain_edges=(-2.0, 0.0), copy_edges=(1, 5),
                            copy_context=1)
  assert config.position_edges == () and config.gain_edges == (-2.0, 0.0)
  assert EvaluationConfig().position_edges is None  # the model's local context, then more
  with pytest.raises(AttributeError):
    config.step = 3  # frozen


def test_evaluate_checkpoint_of_a_workdir_without_checkpoints_raises(tmp_path):
  absent = tmp_path / "absent"
  with pytest.raises(mj.inference.NoCheckpointError, match="no checkpoint in"):
    evaluate_checkpoint(str(absent), EvaluationConfig(max_batches=1))
  assert not absent.exists()
