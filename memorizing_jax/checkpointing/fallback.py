"""Restoring the newest intact one of a checkpoint folder's steps.

A checkpoint is intact when it restores without error and its arrays match the
digests saved with it (`digests.py`). A damaged one (a truncated or deleted file,
flipped bytes) is reported with a warning naming the step and the damage, and the
next older one is tried; when none is intact, `CorruptCheckpointError` lists
every step and what is wrong with it. A checkpoint saved before digests were
recorded restores unverified, with a warning saying so.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, TypeVar

import jax
from jax.experimental import multihost_utils
import numpy as np

from memorizing_jax.checkpointing import digests as digests_lib
from memorizing_jax.checkpointing import items
from memorizing_jax.checkpointing.trees import CheckpointMismatchError

DIGESTS_ITEM = items.DIGESTS_ITEM  # the JSON item holding {leaf name: digest}

Restored = TypeVar("Restored")


class CorruptCheckpointError(RuntimeError):
  """No checkpoint of those asked for is intact.

  Attributes:
    directory: the checkpoints folder.
    problems: {step: what is wrong with it}.
  """

  def __init__(self, directory: str, problems: Dict[int, str], advice: str):
    self.directory, self.problems = directory, dict(problems)
    listed = "\n".join(f"  step {step}: {problem}" for step, problem in
                       sorted(problems.items(), reverse=True))
    super().__init__(f"no intact checkpoint in {directory}; every one is damaged:\n{listed}\n"
                     f"{advice}")


def _stored_digests(directory: str, step: int) -> Optional[Dict[str, str]]:
  """{leaf name: digest} saved with `step`, or None for a checkpoint saved without.

  Raises:
    ValueError: the digests file is there but unreadable (itself damaged).
  """
  path = items.json_item_path(directory, step, DIGESTS_ITEM)
  try:
    saved = items.read_json_item(directory, step, DIGESTS_ITEM)
    return None if saved is None else saved["arrays"]
  except ValueError as e:
    raise ValueError(f"its array digests are unreadable: {e}") from e
  except (KeyError, TypeError) as e:
    raise ValueError(f"its array digests ({path}) are unreadable: {e!r}") from e


def digests_item(tree: Any) -> Dict[str, Any]:
  """The JSON item to save beside the arrays of `tree` (a collective, see `array_digests`)."""
  return {"algorithm": digests_lib.ALGORITHM, "arrays": digests_lib.array_digests(tree)}


def _failed_on_any_process(failed: bool) -> bool:
  """Whether any process failed (a collective when there are several): all must then
  move on to the same older step, since restoring is a collective."""
  if jax.process_count() == 1:
    return failed
  flags = multihost_utils.process_allgather(np.asarray([int(failed)], np.int32))
  return bool(np.asarray(flags).any())


def _describe(error: BaseException) -> str:
  """One line: the exception's type and the first line of its message."""
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0] if text else '(no message)'}"


def _check_step(directory: str, step: int, restore_step: Callable[[int], Restored],
                arrays_of: Callable[[Restored], Any]) -> Tuple[Optional[Restored], str]:
  """(restored, "") when `step` is intact, else (None, what is wrong)."""
  restored, problem = None, ""
  try:
    saved = _stored_digests(directory, step)
    restored = restore_step(step)
  except CheckpointMismatchError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # any orbax/tensorstore failure
    problem = f"it does not read ({_describe(e)})"
  if _failed_on_any_process(bool(problem)):
    return None, problem or "it does not read on another process"
  if saved is None:
    logging.warning("checkpoint %s/%d has no array digests (saved before they were "
                    "recorded): restored without verifying its values", directory, step)
    return restored, ""
  differences = digests_lib.digest_problems(arrays_of(restored), saved)
  if differences:
    shown = "; ".join(differences[:3]) + (f"; and {len(differences) - 3} more"
                                          if len(differences) > 3 else "")
    return None, f"its arrays fail the digest check ({shown})"
  return restored, ""


def restore_newest_intact(directory: str, steps: Sequence[int],
                          restore_step: Callable[[int], Restored],
                          arrays_of: Callable[[Restored], Any],
                          advice: str) -> Tuple[int, Restored, Dict[int, str]]:
  """Restores the newest intact checkpoint of `steps`.

  Args:
    directory: the checkpoints folder.
    steps: the steps to try (newest is tried first).
    restore_step: reads one step; any exception means it is damaged, except
      `CheckpointMismatchError` (a config error), which propagates.
    arrays_of: the arrays of what `restore_step` returned, named as when saved
      (e.g. the whole train state, or {"params": params}), to check the digests.
    advice: how to proceed, for the error when none is intact.
  Returns:
    (step, what restore_step returned, {damaged newer step: what is wrong}).
  Raises:
    CorruptCheckpointError: every step is damaged; lists each and what is wrong.
  """
  damaged: Dict[int, str] = {}
  for step in sorted(steps, reverse=True):
    restored, problem = _check_step(directory, step, restore_step, arrays_of)
    if not problem:
      return step, restored, damaged
    damaged[step] = problem
    logging.warning("checkpoint %s/%d is damaged: %s; trying the next older one",
                    directory, step, problem)
  raise CorruptCheckpointError(directory, damaged, advice)
