"""`load(workdir)`: a run's config, parameters and vocabulary, on whatever devices are here."""
from __future__ import annotations

import os
from typing import Optional

import jax
from jax.sharding import Mesh, SingleDeviceSharding

from memorizing_jax.checkpointing import discovery, reader
from memorizing_jax.data.data_dir import absolute_location
from memorizing_jax.inference import run_config
from memorizing_jax.inference.loaded_model import LoadedModel
from memorizing_jax.model import partitioning

_ADVICE = ("Load another step with mj.load(workdir, step=...), or retrain: the run "
           "resumes from its newest intact checkpoint.")


def load(workdir: str, step: Optional[int] = None, mesh: Optional[Mesh] = None) -> LoadedModel:
  """Loads a trained run.

  The config is the operative gin config stored with the checkpoint; the
  parameters are read straight onto this process's devices, whatever mesh (or
  number of hosts) trained them; the vocabulary is the one stored with the run
  (`<workdir>/vocabulary/`: neither the corpus nor the data cache is needed), else
  the one saved in the checkpoint (a checkpoint folder copied without its workdir
  loads alone), or, for a run stored without either (older versions), the task's
  vocabulary from the data cache (trained again identically if missing). The
  workdir's copy comes first because it is the one the trainer resumes with, so
  that a damaged one is reported here too; it must be the one the checkpoint saved.

  Args:
    workdir: the run's workdir (or its `checkpoints/` folder, or one step folder in it).
    step: which checkpoint (default: the one a step folder names, else the newest
      intact one; a damaged newer one is reported with a warning).
    mesh: lay the parameters out on this mesh (axes "data" and "model", Auto axis
      types, as the trainer's) by the model's logical axis rules, as the trainer
      does (`partitioning.param_layout`: a dimension a mesh axis does not divide is
      replicated); default: all on the first device.
  Raises:
    NoCheckpointError: no checkpoint (of that step) in the workdir.
    CorruptCheckpointError: no intact checkpoint (or the step asked for is damaged).
    StoredVocabularyError: the run's vocabulary (the copy used) is damaged, the
      workdir's differs from the checkpoint's, or it does not fit the run's config.
  """
  location = discovery.resolve(workdir, step)
  directory = location.directory
  model_config, data_config = run_config.configs_from_gin(
      discovery.operative_gin(directory, location.step))
  abstract = partitioning.param_layout(model_config, mesh)
  if mesh is None:
    one_device = SingleDeviceSharding(jax.devices()[0])
    abstract = partitioning.with_shardings(abstract, jax.tree.map(lambda _: one_device, abstract))
  # The latest step when none is named, else an older intact one (with a warning);
  # a step named (by `step` or a step folder) is that step or an error.
  step, params = reader.restore_params(directory, location.step, abstract, _ADVICE,
                                       older_if_damaged=not location.chosen)
  # Imported here: it imports seqio and TensorFlow, which `import mj` leaves out.
  from memorizing_jax.data import stored_vocab  # pylint: disable=g-import-not-at-top
  vocabulary = stored_vocab.run_vocabulary(
      os.path.dirname(directory), data_config.task, data_config.vocabulary,
      data_config.vocabulary_size, data_dir=data_config.data_dir,
      text_feature=data_config.text_feature, model_vocab_size=model_config.vocab_size,
      checkpoints=directory, steps=[s for s in discovery.committed_steps(directory)
                                    if s <= step])
  return LoadedModel(config=model_config, params=params, vocabulary=vocabulary, step=step,
                     workdir=absolute_location(workdir), data_config=data_config, mesh=mesh)

