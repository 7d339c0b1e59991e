"""Leaf names as orbax stores them, and the differences between two trees."""
from __future__ import annotations

from typing import Any, Dict, List, NamedTuple

import jax


class CheckpointMismatchError(ValueError):
  """A checkpoint's tree (names, shapes) does not fit the configured model.

  This is a configuration error, not damage: every checkpoint of the run would
  give it, so no older checkpoint is tried instead.
  """


def _key_name(key) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def leaf_name(path) -> str:
  """"params.decoder.layer_0.kernel" for a `tree_flatten_with_path` path."""
  return ".".join(_key_name(k) for k in path)


def flatten_with_names(tree: Any) -> Dict[str, Any]:
  """{"params.decoder.layer_0.kernel": leaf, ...}: dotted names, as orbax stores them."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {leaf_name(path): leaf for path, leaf in leaves}


class TreeComparison(NamedTuple):
  """The leaf names of a wanted tree against a stored one, each list sorted.

  Attributes:
    matching: in both, with the same shape.
    missing: wanted, not stored.
    reshaped: in both, with another shape.
    unused: stored, not wanted.
  """

  matching: List[str]
  missing: List[str]
  reshaped: List[str]
  unused: List[str]


def compare(stored: Dict[str, Any], wanted: Dict[str, Any]) -> TreeComparison:
  """Compares two {name: leaf with .shape} maps (e.g. `flatten_with_names` of a
  checkpoint's metadata and of the model's abstract tree)."""
  both = sorted(set(stored) & set(wanted))
  same_shape = {n: tuple(stored[n].shape) == tuple(wanted[n].shape) for n in both}
  return TreeComparison(matching=[n for n in both if same_shape[n]],
                        missing=sorted(set(wanted) - set(stored)),
                        reshaped=[n for n in both if not same_shape[n]],
                        unused=sorted(set(stored) - set(wanted)))


def tree_differences(stored: Dict[str, Any], wanted: Dict[str, Any]) -> List[str]:
  """Human-readable differences between two {name: leaf with .shape} maps."""
  found = compare(stored, wanted)
  return ([f"{name}: not in the checkpoint (shape {tuple(wanted[name].shape)})"
           for name in found.missing]
          + [f"{name}: in the checkpoint but not in the model" for name in found.unused]
          + [f"{name}: checkpoint shape {tuple(stored[name].shape)}, model shape "
             f"{tuple(wanted[name].shape)}" for name in found.reshaped])


def check_fits(stored: Dict[str, Any], wanted: Dict[str, Any], where: str, advice: str = "",
               ignore_unused: bool = False) -> None:
  """Raises unless the `wanted` leaves are stored with their shapes.

  Args:
    stored, wanted: {name: leaf with .shape} of the checkpoint and of the model.
    where: the checkpoint, for the message (`<directory>/<step>`).
    advice: what to do instead, appended to the message.
    ignore_unused: stored leaves the model does not want are fine (they are not read).
  Raises:
    CheckpointMismatchError: listing the first 20 differences.
  """
  if ignore_unused:
    stored = {name: leaf for name, leaf in stored.items() if name in wanted}
  problems = tree_differences(stored, wanted)
  if problems:
    shown = "\n  ".join(problems[:20] + (["..."] if len(problems) > 20 else []))
    raise CheckpointMismatchError(
        f"the checkpoint {where} does not fit the configured model:\n  {shown}"
        + (f"\n{advice}" if advice else ""))
