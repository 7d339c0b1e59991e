"""Where a run's checkpoints are: the steps in a folder, a path resolved to one step,
and the gin config the run was trained with.

A path may name a run's workdir, its `checkpoints/` folder, or one step folder
(`<...>/checkpoints/<step>`); it may be local or remote (`gs://...`): paths go
through `etils.epath`, and a local one is made absolute.
"""
from __future__ import annotations

import os
from typing import List, NamedTuple, Optional

from etils import epath

from memorizing_jax.checkpointing import items

CHECKPOINTS_FOLDER = "checkpoints"  # `<workdir>/checkpoints` holds the step folders


class NoCheckpointError(FileNotFoundError):
  """The path holds no checkpoint (or not the step asked for)."""


class CheckpointLocation(NamedTuple):
  """One checkpoint step.

  Attributes:
    directory: the folder of step folders (`<workdir>/checkpoints`), absolute.
    step: the step.
    chosen: whether the step was named (by `step`, or by a step folder as the path)
      rather than taken as the newest.
  """

  directory: str
  step: int
  chosen: bool


def is_remote(path: str | os.PathLike) -> bool:
  """Whether `path` is a URL (`gs://bucket/...`, any `scheme://`), not a local path."""
  return "://" in os.fspath(path)


def absolute_location(path: str | os.PathLike) -> str:
  """A local `path` made absolute; a remote one (`gs://...`) as given. (Also the data
  package's, `data_dir.absolute_location`: checkpointing imports no other part.)"""
  path = os.fspath(path)
  return path if is_remote(path) else os.path.abspath(path)


def committed_steps(directory: str) -> List[int]:
  """The steps saved in `directory` (its step-numbered folders), ascending.

  A folder still being written has a temporary name, so every numbered folder is
  a finished save; whether it is intact is only known by restoring it.
  """
  root = epath.Path(directory)
  if not root.is_dir():
    return []
  return sorted(int(d.name) for d in root.iterdir() if d.name.isdigit() and d.is_dir())


def _steps_folder(path: str) -> str:
  """`<path>/checkpoints` when there is one, else `path` itself (absolute)."""
  nested = os.path.join(path, CHECKPOINTS_FOLDER)
  return nested if epath.Path(nested).is_dir() else path


def _is_step_folder(path: str) -> bool:
  """Whether `path` is one step's folder: numbered, holding the state item."""
  folder = epath.Path(path)
  return folder.name.isdigit() and (folder / items.STATE_ITEM).is_dir()


def resolve(path: str, step: Optional[int] = None) -> CheckpointLocation:
  """The checkpoint `path` names: its step folder, or `step` (default: the newest)
  of the run's workdir or `checkpoints/` folder.

  Raises:
    NoCheckpointError: `path` holds no checkpoint, or not `step`; the message names
      the path, the steps it holds and how to get one.
  """
  path = absolute_location(path)
  if _is_step_folder(path):
    directory, named = os.path.dirname(path), int(os.path.basename(path))
    if step is not None and step != named:
      raise NoCheckpointError(f"{path} is the checkpoint of step {named}, not of step {step}")
    return CheckpointLocation(directory, named, chosen=True)
  directory = _steps_folder(path)
  steps = committed_steps(directory)
  if not steps:
    raise NoCheckpointError(
        f"no checkpoint in {path}: train a run there first, e.g. `make train` or "
        f"python -m memorizing_jax.main --gin_file=gin/quickstart.gin --workdir={path} "
        "(or give a run's workdir, its checkpoints/ folder or one step folder in it)")
  if step is None:
    return CheckpointLocation(directory, steps[-1], chosen=False)
  if step not in steps:
    raise NoCheckpointError(f"no checkpoint of step {step} in {directory}; it holds steps "
                            f"{steps}")
  return CheckpointLocation(directory, step, chosen=True)


def operative_gin(directory: str, step: int) -> str:
  """The gin config stored with checkpoint `step` of `directory` (else the config.gin
  beside the step folders or in the workdir).

  Raises:
    NoCheckpointError: neither is there: the run's configuration is unknown.
  """
  stored = items.read_json_item(directory, step, items.CONFIG_ITEM)
  if stored is not None:
    return stored["gin"]
  for candidate in (os.path.join(directory, "config.gin"),
                    os.path.join(os.path.dirname(directory), "config.gin")):
    if epath.Path(candidate).is_file():
      return epath.Path(candidate).read_text()
  raise NoCheckpointError(f"the checkpoint {directory}/{step} has no stored gin config and "
                          "no config.gin lies beside it: the run's configuration is unknown")
