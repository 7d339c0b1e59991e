"""Finds a run's checkpoints and restores its parameters onto any devices.

Only the parameters are read (not the optimizer state nor the training
`ModelState`), straight into the shardings asked for: one device, or a layout on
a mesh. Where the run was trained (its mesh, its number of hosts) does not matter.
Finding the steps, comparing trees, checking digests and falling back past a
damaged checkpoint are training's own (`memorizing_jax/checkpointing`).
A workdir may be local or remote (`gs://...`): paths go through `etils.epath`.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, List, Optional, Tuple

from etils import epath
import jax

from memorizing_jax.checkpointing import fallback, items, trees
from memorizing_jax.data.data_dir import absolute_location
from memorizing_jax.checkpointing.fallback import CorruptCheckpointError  # pylint: disable=unused-import  # (for callers)


class NoCheckpointError(FileNotFoundError):
  """The workdir holds no checkpoint."""


def checkpoint_dir(workdir: str) -> str:
  """`<workdir>/checkpoints` (or `workdir` itself when it is that folder)."""
  workdir = absolute_location(workdir)
  nested = os.path.join(workdir, "checkpoints")
  return nested if epath.Path(nested).is_dir() else workdir


def checkpoint_steps(workdir: str) -> List[int]:
  """The steps saved under `workdir`, ascending (intact or not: see `restore_params`)."""
  return fallback.committed_steps(checkpoint_dir(workdir))


def resolve_step(workdir: str, step: Optional[int] = None) -> Tuple[str, int]:
  """(checkpoint folder, step): the given step or the latest.

  Raises:
    NoCheckpointError: naming the path and how to train a run there.
  """
  steps = checkpoint_steps(workdir)
  if not steps:
    raise NoCheckpointError(
        f"no checkpoint in {absolute_location(workdir)}: train a run there first, "
        "e.g. `make train` or python -m memorizing_jax.main --gin_file=gin/quickstart.gin "
        f"--workdir={workdir}")
  if step is None:
    step = steps[-1]
  elif step not in steps:
    raise NoCheckpointError(f"no checkpoint of step {step} in {checkpoint_dir(workdir)}; "
                            f"it holds steps {steps}")
  return checkpoint_dir(workdir), step


def operative_gin(directory: str, step: int) -> str:
  """The gin config stored with the checkpoint (else the workdir's config.gin)."""
  stored = items.read_json_item(directory, step, items.CONFIG_ITEM)
  if stored is not None:
    return stored["gin"]
  for candidate in (os.path.join(directory, "config.gin"),
                    os.path.join(os.path.dirname(directory), "config.gin")):
    if epath.Path(candidate).is_file():
      return epath.Path(candidate).read_text()
  raise NoCheckpointError(f"the checkpoint {directory}/{step} has no stored gin config and "
                          "no config.gin lies beside it: the run's configuration is unknown")


def restore_params(directory: str, step: int, abstract_params: Any,
                   older_if_damaged: bool = True) -> Tuple[int, Any]:
  """The checkpoint's parameters, placed as `abstract_params` says, checked against
  the digests saved with them.

  Args:
    directory: the checkpoints folder; step: which one.
    abstract_params: `jax.ShapeDtypeStruct`s with shardings, the model's param tree.
    older_if_damaged: when `step` is damaged, warn and take the newest intact older
      one (for "the latest"); False: only `step` (a step asked for by name).
  Returns:
    (the step restored, its parameters).
  Raises:
    CheckpointMismatchError (a ValueError): the parameters do not fit the model.
    CorruptCheckpointError: no checkpoint tried is intact; lists what is wrong with each.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  steps = [s for s in fallback.committed_steps(directory) if s <= step] \
      if older_if_damaged else [step]
  advice = ("Load another step with mj.load(workdir, step=...), or retrain: the run "
            "resumes from its newest intact checkpoint.")
  with _quiet_absl():
    step, params, _ = fallback.restore_newest_intact(
        directory, steps, lambda s: _restore(ocp, directory, s, abstract_params),
        arrays_of=lambda params: {"params": params}, advice=advice)
  return step, params


@contextlib.contextmanager
def _quiet_absl():
  """orbax warns about the items (data, config) it is not asked to read."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  level = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    yield
  finally:
    logging.set_verbosity(level)


def _restore(ocp, directory: str, step: int, abstract_params: Any) -> Any:
  """The parameters of `step`, unverified; orbax's errors propagate."""
  manager = ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(read_only=True),
      item_handlers={"state": ocp.PyTreeCheckpointHandler()})
  try:
    stored = trees.flatten_with_names(manager.item_metadata(step)["state"].tree["params"])
    wanted = trees.flatten_with_names(abstract_params)
    # Parameters only in the checkpoint are not read: only missing or reshaped ones matter.
    problems = trees.tree_differences({k: v for k, v in stored.items() if k in wanted}, wanted)
    if problems:
      raise trees.CheckpointMismatchError(
          f"the parameters in {directory}/{step} do not fit the model of its gin config:\n  "
          + "\n  ".join(problems[:20]))
    restore_args = jax.tree.map(
        lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding, dtype=x.dtype), abstract_params)
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item={"params": abstract_params}, restore_args={"params": restore_args},
        partial_restore=True)))
  finally:
    manager.close()
  return restored["state"]["params"]
