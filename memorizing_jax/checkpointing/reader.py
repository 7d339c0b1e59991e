"""Reading a checkpoint's arrays onto any devices.

The arrays go straight into the shardings asked for (one device, or a layout on
any mesh and any number of processes: orbax reads each device's part of each
array), whatever mesh saved them. Before reading, the stored tree is compared
with the wanted one (`trees.check_fits`); after, the arrays are checked against
the digests saved with them, and a damaged step gives way to the newest intact
older one (`fallback.py`).

  restore_state            the whole saved tree (the trainer's TrainState) and the
                           data position: resuming a run;
  restore_params           the parameters only: inference;
  restore_matching_params  the parameters that fit another model (`init_from`).

Writing is the trainer's (`memorizing_jax/train/checkpoints.py`).
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Sequence, Tuple

from etils import epath
import jax
import orbax.checkpoint as ocp

from memorizing_jax.checkpointing import discovery, fallback, items, trees

PARAMS = "params"  # the parameters' subtree of the saved state


def _state_path(directory: str, step: int) -> epath.Path:
  return epath.Path(directory) / str(step) / items.STATE_ITEM


def stored_arrays(directory: str, step: int) -> Dict[str, Any]:
  """{leaf name: metadata with `.shape` and `.dtype`} of the arrays saved in `step`,
  named as `trees.flatten_with_names` names them ("step", "params.embed.embedding").

  Raises:
    Exception: whatever orbax raises for a damaged checkpoint.
  """
  handler = ocp.PyTreeCheckpointHandler()
  try:
    return trees.flatten_with_names(handler.metadata(_state_path(directory, step)).tree)
  finally:
    handler.close()


def _read_arrays(directory: str, step: int, abstract: Any, partial: bool = False) -> Any:
  """The arrays of `abstract` read from `step`, each onto its sharding; unverified.

  Args:
    abstract: `jax.ShapeDtypeStruct`s with shardings, nested as saved: the whole
      saved tree (e.g. a TrainState) or, with `partial`, a part of it such as
      {"params": {...}}.
    partial: `abstract` may leave out saved arrays (they are not read).
  Returns:
    `abstract`'s tree of `jax.Array`s.
  Raises:
    Exception: whatever orbax/tensorstore raise for a damaged checkpoint.
  """
  handler = ocp.PyTreeCheckpointHandler()
  try:
    return handler.restore(_state_path(directory, step), args=ocp.args.PyTreeRestore(
        item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
        partial_restore=partial))
  finally:
    handler.close()


def _read_fitting(directory: str, step: int, abstract: Any, partial: bool,
                  mismatch_advice: str) -> Any:
  """`_read_arrays` once the stored tree is found to hold `abstract`'s leaves."""
  trees.check_fits(stored_arrays(directory, step), trees.flatten_with_names(abstract),
                   f"{directory}/{step}", mismatch_advice, ignore_unused=partial)
  return _read_arrays(directory, step, abstract, partial)


def restore_state(directory: str, steps: Sequence[int], abstract_state: Any, advice: str,
                  mismatch_advice: str = "") -> Tuple[int, Any, Dict[str, Any], Dict[int, str]]:
  """The newest intact of `steps`, whole, with the data position saved with it.

  Args:
    directory: the folder of step folders.
    steps: the steps to try, newest first.
    abstract_state: the saved tree's `jax.ShapeDtypeStruct`s with shardings (the
      TrainState); the checkpoint must hold exactly its leaves, with their shapes.
    advice: what to do when every step is damaged.
    mismatch_advice: what to do when the checkpoint does not fit `abstract_state`.
  Returns:
    (step, state, data positions {"<shard>": position}, {damaged newer step: what
    is wrong}).
  Raises:
    CheckpointMismatchError: the stored tree differs from `abstract_state`.
    CorruptCheckpointError: every step is damaged; lists each.
  """
  def read(step: int) -> Tuple[Any, Dict[str, Any]]:
    state = _read_fitting(directory, step, abstract_state, partial=False,
                          mismatch_advice=mismatch_advice)
    positions = items.read_json_item(directory, step, items.DATA_ITEM)
    if positions is None:
      raise FileNotFoundError(f"{items.json_item_path(directory, step, items.DATA_ITEM)} "
                              "is missing")
    return state, positions

  step, (state, positions), damaged = fallback.restore_newest_intact(
      directory, steps, read, arrays_of=lambda restored: restored[0], advice=advice)
  return step, state, positions, damaged


def restore_params(directory: str, step: int, abstract_params: Any, advice: str,
                   older_if_damaged: bool = True) -> Tuple[int, Any]:
  """The parameters of `step` (only those), placed as `abstract_params` says and
  checked against the digests saved with them.

  Args:
    directory: the folder of step folders.
    step: which one.
    abstract_params: `jax.ShapeDtypeStruct`s with shardings, the model's param tree.
    advice: what to do when no step tried is intact.
    older_if_damaged: when `step` is damaged, warn and take the newest intact older
      one (for "the latest"); False: only `step` (a step asked for by name).
  Returns:
    (the step restored, its parameters).
  Raises:
    CheckpointMismatchError: the parameters do not fit the model (parameters only
      in the checkpoint are fine: they are not read).
    CorruptCheckpointError: no step tried is intact; lists what is wrong with each.
  """
  steps = ([s for s in discovery.committed_steps(directory) if s <= step]
           if older_if_damaged else [step])
  wanted = {PARAMS: abstract_params}
  step, restored, _ = fallback.restore_newest_intact(
      directory, steps,
      lambda s: _read_fitting(directory, s, wanted, partial=True, mismatch_advice=""),
      arrays_of=lambda restored: restored, advice=advice)
  return step, restored[PARAMS]


def _nested(named: Dict[str, Any]) -> Dict[str, Any]:
  """{"a.b.c": leaf} -> {"a": {"b": {"c": leaf}}}."""
  tree: Dict[str, Any] = {}
  for name, leaf in named.items():
    *parents, last = name.split(".")
    node = tree
    for part in parents:
      node = node.setdefault(part, {})
    node[last] = leaf
  return tree


def restore_matching_params(path: str, params: Any) -> Tuple[Any, Dict[str, List[str]]]:
  """`params` with every parameter that a checkpoint holds with the same name and
  shape replaced by the checkpoint's; the others (e.g. the gate and temperature of a
  kNN layer the other run did not have) are kept. Unverified; nothing else is read.

  Args:
    path: a checkpoint step folder, a `checkpoints/` folder or a workdir (its newest
      step).
    params: the model's parameters (`jax.Array`s); a loaded one takes the place
      and sharding of the one it replaces.
  Returns:
    (params, report) where report has "loaded", "initialized" (not in the
    checkpoint), "mismatched" (another shape there) and "unused" (only in the
    checkpoint) parameter names.
  Raises:
    NoCheckpointError: `path` holds no checkpoint.
  """
  location = discovery.resolve(path)
  prefix = PARAMS + "."
  stored = {name[len(prefix):]: leaf
            for name, leaf in stored_arrays(location.directory, location.step).items()
            if name.startswith(prefix)}
  wanted = trees.flatten_with_names(params)
  found = trees.compare(stored, wanted)
  loaded = {}
  if found.matching:
    abstract = _nested({name: jax.ShapeDtypeStruct(wanted[name].shape, wanted[name].dtype,
                                                   sharding=wanted[name].sharding)
                        for name in found.matching})
    restored = _read_arrays(location.directory, location.step, {PARAMS: abstract}, partial=True)
    loaded = trees.flatten_with_names(restored[PARAMS])
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  merged = jax.tree_util.tree_unflatten(
      treedef, [loaded.get(trees.leaf_name(key_path), leaf) for key_path, leaf in leaves])
  report = {"loaded": found.matching, "initialized": found.missing,
            "mismatched": found.reshaped, "unused": found.unused}
  source = f"{location.directory}/{location.step}"
  logging.info("parameters from %s: loaded %d, initialised %d new, %d with another shape, "
               "%d unused", source, len(found.matching), len(found.missing),
               len(found.reshaped), len(found.unused))
  for kind in ("initialized", "mismatched", "unused"):
    for name in report[kind]:
      logging.info("parameters from %s: %s %s", source, kind, name)
  return merged, report
