"""Leaf names as orbax stores them, and the differences between two trees."""
from __future__ import annotations

from typing import Any, Dict, List

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


def tree_differences(stored: Dict[str, Any], wanted: Dict[str, Any]) -> List[str]:
  """Human-readable differences between two {name: leaf with .shape/.dtype} maps."""
  problems = []
  for name in sorted(set(wanted) - set(stored)):
    problems.append(f"{name}: not in the checkpoint (shape {tuple(wanted[name].shape)})")
  for name in sorted(set(stored) - set(wanted)):
    problems.append(f"{name}: in the checkpoint but not in the model")
  for name in sorted(set(stored) & set(wanted)):
    if tuple(stored[name].shape) != tuple(wanted[name].shape):
      problems.append(f"{name}: checkpoint shape {tuple(stored[name].shape)}, model shape "
                      f"{tuple(wanted[name].shape)}")
  return problems
