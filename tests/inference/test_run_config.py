"""A run's configs read back from its operative gin config (`inference/run_config.py`),
also for runs trained before `DataConfig` moved from `memorizing_jax.train.inputs` to
`memorizing_jax.data.config`."""
import gin

from memorizing_jax import main
from memorizing_jax.data.config import DataConfig
from memorizing_jax.inference import run_config
from memorizing_jax.model.config import ModelConfig


def _operative_config(params):
  gin.clear_config()
  try:
    return main.operative_config(["gin/quickstart.gin"], params)
  finally:
    gin.clear_config()


def test_configs_from_gin_are_the_ones_the_trainer_builds():
  text = _operative_config(["data_config.DataConfig.batch_size = 16",
                            "model_config.ModelConfig.num_layers = 3"])
  model, data = run_config.configs_from_gin(text)
  assert isinstance(model, ModelConfig) and model.num_layers == 3
  assert data == DataConfig(task="python_stdlib", vocabulary="sentencepiece",
                            vocabulary_size=model.vocab_size, batch_size=16,
                            eval_batch_size=8, train_split="train", eval_split="validation")


def test_a_run_from_before_data_config_moved_loads_the_same_configs():
  """Its operative config binds `inputs.DataConfig` (`from memorizing_jax.train import
  inputs`); bindings are matched by class name, whatever module names the class."""
  text = _operative_config(["data_config.DataConfig.batch_size = 16"])
  old = (text.replace("from memorizing_jax.data import config as data_config",
                      "from memorizing_jax.train import inputs")
         .replace("data_config.DataConfig", "inputs.DataConfig"))
  assert "inputs.DataConfig.batch_size = 16\n" in old and "data_config" not in old
  assert run_config.configs_from_gin(old) == run_config.configs_from_gin(text)
