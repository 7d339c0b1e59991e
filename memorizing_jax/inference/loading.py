"""`load(workdir)`: a run's config, parameters and vocabulary, on whatever devices are here."""
from __future__ import annotations

import os
from typing import Optional

import flax.linen as nn
import jax
from jax.sharding import Mesh, SingleDeviceSharding

from memorizing_jax.inference import checkpoint, run_config
from memorizing_jax.inference.loaded_model import LoadedModel
from memorizing_jax.model import partitioning


def load(workdir: str, step: Optional[int] = None, mesh: Optional[Mesh] = None) -> LoadedModel:
  """Loads a trained run.

  The config is the operative gin config stored with the checkpoint; the
  parameters are read straight onto this process's devices, whatever mesh (or
  number of hosts) trained them; the vocabulary is the run's (a SentencePiece model
  is read from the data cache, or trained again identically if missing).

  Args:
    workdir: the run's workdir (or its `checkpoints/` folder).
    step: which checkpoint (default: the newest intact one; a damaged newer one is
      reported with a warning).
    mesh: lay the parameters out on this mesh (axes "data" and "model", Auto axis
      types, as the trainer's) by the model's logical axis rules; default: all on
      the first device.
  Raises:
    NoCheckpointError: no checkpoint (of that step) in the workdir.
    CorruptCheckpointError: no intact checkpoint (or the step asked for is damaged).
  """
  requested_step = step
  directory, step = checkpoint.resolve_step(workdir, step)
  model_config, data_config = run_config.configs_from_gin(
      checkpoint.operative_gin(directory, step))
  abstract = nn.meta.unbox(partitioning.abstract_init(model_config, 1)["params"])
  if mesh is None:
    shardings = jax.tree.map(lambda _: SingleDeviceSharding(jax.devices()[0]), abstract)
  else:
    shardings = partitioning.param_shardings(model_config, mesh)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          abstract, shardings)
  # The latest step when none is asked for, else an older intact one (with a warning);
  # a step asked for by name is that step or an error.
  step, params = checkpoint.restore_params(directory, step, abstract,
                                           older_if_damaged=requested_step is None)
  from memorizing_jax.train import inputs  # pylint: disable=g-import-not-at-top
  vocabulary = inputs.load_vocabulary(data_config)
  return LoadedModel(config=model_config, params=params, vocabulary=vocabulary, step=step,
                     workdir=os.path.abspath(os.fspath(workdir)), data_config=data_config)
