"""TrainerConfig: its validation, and the name gin files bind it by."""
import math

import gin
import pytest

from memorizing_jax.train import loop
from memorizing_jax.train.trainer_config import TrainerConfig


def test_trainer_config_validates_itself():
  with pytest.raises(ValueError, match="TrainerConfig.total_steps must be positive"):
    TrainerConfig(total_steps=0)
  assert math.isclose(TrainerConfig().total_steps, 1000)
  with pytest.raises(ValueError, match="TrainerConfig.max_loss must be positive or None"):
    TrainerConfig(max_loss=0.0)
  with pytest.raises(ValueError, match="TrainerConfig.lock_stale_after_s must be positive"):
    TrainerConfig(lock_stale_after_s=0)
  assert TrainerConfig().max_loss is None
  assert TrainerConfig().lock_stale_after_s == 600.0


def test_gin_files_and_old_workdirs_config_gin_bind_it_as_loop_trainer_config():
  """`loop.TrainerConfig`, the name in gin/ and in the config.gin a run writes, is this
  class, and the operative config still names it so."""
  assert loop.TrainerConfig is TrainerConfig
  gin.clear_config()
  try:
    gin.parse_config("from __gin__ import dynamic_registration\n"
                     "from memorizing_jax.train import loop\n"
                     "loop.TrainerConfig.total_steps = 7\n")
    assert gin.get_configurable(TrainerConfig)().total_steps == 7
    assert "loop.TrainerConfig.total_steps = 7\n" in gin.config_str()
  finally:
    gin.clear_config()
