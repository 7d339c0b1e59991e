"""Checkpoints: orbax `CheckpointManager` with named items.

  state       the TrainState (step, params, optimizer state, ModelState with the
              memories and XL caches), sharded, saved asynchronously;
  data        the data stream's position (JSON), so a resumed run reads on exactly;
  config      the operative gin config (JSON), also written as `config.gin`;
  digests     a digest of every array of the state (JSON), checked on restore
              (`memorizing_jax/checkpointing/digests.py`);
  vocabulary  the run's vocabulary (JSON: its description and, for SentencePiece,
              the model file), copied from `<workdir>/vocabulary/` when the workdir
              stores one, so that a checkpoint folder copied alone still loads
              (`memorizing_jax/data/stored_vocab.py`).

Resuming takes the newest intact checkpoint: a damaged one is reported, moved
aside (`<step>.damaged`) and the next older one is used
(`memorizing_jax/checkpointing/fallback.py`).

Also: `init_from` (start from another run's parameters, even of a different
config) and the checks that turn orbax's errors into actionable messages.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from typing import Any, Dict, List, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from memorizing_jax.checkpointing import fallback, items
from memorizing_jax.data.data_dir import absolute_location, is_remote
from memorizing_jax.checkpointing.fallback import CorruptCheckpointError  # pylint: disable=unused-import
from memorizing_jax.checkpointing.trees import CheckpointMismatchError  # pylint: disable=unused-import
from memorizing_jax.checkpointing.trees import flatten_with_names, leaf_name, tree_differences
from memorizing_jax.train.train_state import TrainState


def check_workdir_writable(workdir: str, needed_bytes: int) -> None:
  """Fails before training if `workdir` cannot hold a checkpoint.

  Raises:
    PermissionError / OSError naming the directory and the fix.
  """
  if is_remote(workdir):  # gs://...: orbax, TensorBoard and gin write through epath/gfile
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    return
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write_test_"):
      pass
  except OSError as e:
    raise PermissionError(
        f"workdir {workdir!r} is not writable ({e.strerror or e}); choose another --workdir "
        "or fix its permissions") from e
  free = shutil.disk_usage(workdir).free
  if free < needed_bytes:
    raise OSError(
        f"workdir {workdir!r} has {free / 2**20:.1f} MiB free, but a checkpoint needs about "
        f"{needed_bytes / 2**20:.1f} MiB; free space, lower checkpoint keep, or choose "
        "another --workdir")


def checkpoint_bytes(abstract_state: Any) -> int:
  """Bytes of one checkpoint of `abstract_state` (ShapeDtypeStructs)."""
  return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
             for x in jax.tree.leaves(abstract_state))


def gather_data_positions(positions: Dict[str, Any]) -> Dict[str, Any]:
  """{"<shard>": stream position} of every data shard of every process.

  Args:
    positions: this process's `ProcessStream.state()`, {"<shard>": position}.

  Each process reads its own shards, so each has its own positions; orbax writes
  JSON items from the primary process only, so the positions travel there first
  (a collective: every process calls this at the same step).
  """
  if jax.process_count() == 1:
    return dict(positions)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  encoded = np.frombuffer(json.dumps(positions).encode("utf-8"), np.uint8)
  lengths = np.asarray(multihost_utils.process_allgather(np.array([encoded.size]))).reshape(-1)
  padded = np.zeros(int(lengths.max()), np.uint8)
  padded[:encoded.size] = encoded
  rows = np.asarray(multihost_utils.process_allgather(padded))
  merged = {}
  for i in range(len(lengths)):
    merged.update(json.loads(bytes(rows[i][:lengths[i]]).decode("utf-8")))
  return merged


def shard_positions(positions: Dict[str, Any], shards: List[int], num_shards: int
                    ) -> Optional[Dict[str, Any]]:
  """The positions of `shards` from a checkpoint's {"<shard>": position}, or None
  when the checkpoint's data was split into another number of shards than
  `num_shards` (then the stream cannot continue exactly)."""
  if len(positions) != num_shards or any(str(s) not in positions for s in shards):
    return None
  return {str(s): positions[str(s)] for s in shards}


class Checkpointer:
  """Saves and restores the train state, data position and gin config of one run,
  and saves its vocabulary with each checkpoint.

  Args:
    directory: where the step folders go (`<workdir>/checkpoints`).
    keep: how many recent checkpoints to keep.
    asynchronous: write arrays in a background thread while training goes on.
  """

  def __init__(self, directory: str, keep: int = 3, asynchronous: bool = True):
    self.directory = absolute_location(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep,
                                           enable_async_checkpointing=asynchronous,
                                           create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers={
        "state": ocp.StandardCheckpointHandler(),
        items.DATA_ITEM: ocp.JsonCheckpointHandler(),
        items.CONFIG_ITEM: ocp.JsonCheckpointHandler(),
        items.DIGESTS_ITEM: ocp.JsonCheckpointHandler(),
        items.VOCABULARY_ITEM: ocp.JsonCheckpointHandler()})
    self._vocabulary: Optional[Dict[str, Any]] = None

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self) -> List[int]:
    return list(self._manager.all_steps())

  def save(self, state: TrainState, data_position: Dict[str, Any], gin_config: str) -> None:
    """Saves asynchronously (arrays are copied off the device before this returns).

    Every process calls this at the same step: each writes its own shards of the
    arrays (global `jax.Array`s), the primary writes the JSON items, among them
    the digest of every array (computed where the shards are, the same on every
    process: `checkpointing/digests.py`).

    Args:
      state: the train state; its step names the checkpoint.
      data_position: this process's `stream.state()`, {"<shard>": position}.
      gin_config: the operative gin config text.
    """
    step = int(jax.device_get(state.step))
    if step in self._manager.all_steps():
      return
    saved = {
        "state": ocp.args.StandardSave(state),
        items.DATA_ITEM: ocp.args.JsonSave(gather_data_positions(data_position)),
        items.CONFIG_ITEM: ocp.args.JsonSave({"gin": gin_config}),
        items.DIGESTS_ITEM: ocp.args.JsonSave(fallback.digests_item(state))}
    vocabulary = self._vocabulary_item()
    if vocabulary is not None:
      saved[items.VOCABULARY_ITEM] = ocp.args.JsonSave(vocabulary)
    self._manager.save(step, args=ocp.args.Composite(**saved), force=True)

  def _vocabulary_item(self) -> Optional[Dict[str, Any]]:
    """The vocabulary stored in the workdir (the folder holding `directory`) as a
    checkpoint item, read once; None while the workdir stores none.

    The trainer stores it before the first save (`train/run_vocabulary.py`), on a
    file system every process sees, so every process saves the same items.

    Raises:
      StoredVocabularyError: the workdir's vocabulary is damaged.
    """
    if self._vocabulary is None:
      from memorizing_jax.data import stored_vocab  # pylint: disable=g-import-not-at-top
      self._vocabulary = stored_vocab.checkpoint_item(os.path.dirname(self.directory))
    return self._vocabulary

  def restore(self, step: int, abstract_state: TrainState) -> Tuple[TrainState, Dict[str, Any]]:
    """Restores checkpoint `step`, verified against its digests (see `restore_latest`).

    Raises:
      CheckpointMismatchError: it does not fit the model (see `_restore_unverified`).
      CorruptCheckpointError: it is damaged; the message says what is wrong.
    """
    _, restored, _ = fallback.restore_newest_intact(
        self.directory, [step], lambda s: self._restore_unverified(s, abstract_state),
        arrays_of=lambda restored: restored[0], advice=self._advice())
    return restored

  def restore_latest(self, abstract_state: TrainState
                     ) -> Optional[Tuple[int, TrainState, Dict[str, Any]]]:
    """(step, state, data positions) of the newest intact checkpoint; None when there
    is no checkpoint.

    Damaged newer checkpoints are reported (a warning naming the step and what is
    wrong) and moved aside to `<step>.damaged`, so that the resumed run can save
    those steps again.

    Raises:
      CheckpointMismatchError: the checkpoints do not fit the model.
      CorruptCheckpointError: every checkpoint is damaged; lists each step.
    """
    steps = self.all_steps()
    if not steps:
      return None
    step, (state, positions), damaged = fallback.restore_newest_intact(
        self.directory, steps, lambda s: self._restore_unverified(s, abstract_state),
        arrays_of=lambda restored: restored[0], advice=self._advice())
    self._move_aside(damaged)
    return step, state, positions

  def _advice(self) -> str:
    workdir = os.path.dirname(self.directory)
    return (f"To go on, start a new run with another --workdir (add --gin_param="
            f"\"loop.train.init_from='<a checkpoint>'\" to keep trained parameters), or "
            f"move the damaged step folders out of {self.directory} if an intact copy of "
            f"the run exists elsewhere (e.g. copy it back into {workdir}).")

  def _restore_unverified(self, step: int, abstract_state: TrainState
                          ) -> Tuple[TrainState, Dict[str, Any]]:
    """Restores the state into the shardings of `abstract_state` (any mesh and any
    number of processes: orbax reads each device's part of each array), and the
    data positions of every shard, {"<shard>": position}.

    Raises:
      CheckpointMismatchError: the checkpoint's tree or shapes differ from the model's;
        the message lists the differences and suggests `init_from`.
      Exception: whatever orbax/tensorstore raise for a damaged checkpoint.
    """
    stored = flatten_with_names(self._manager.item_metadata(step)["state"].tree)
    problems = tree_differences(stored, flatten_with_names(abstract_state))
    if problems:
      shown = "\n  ".join(problems[:20] + (["..."] if len(problems) > 20 else []))
      raise CheckpointMismatchError(
          f"The checkpoint at {self.directory}/{step} does not fit the configured model:\n  "
          f"{shown}\nTo start a new run from its parameters, use a fresh --workdir and "
          f"--gin_param=\"loop.train.init_from='{self.directory}/{step}'\"; to resume "
          "this run, use the config it was trained with (config.gin in its workdir).")
    restored = self._manager.restore(step, args=ocp.args.Composite(**{
        "state": ocp.args.StandardRestore(abstract_state),
        items.DATA_ITEM: ocp.args.JsonRestore()}))
    return restored["state"], restored[items.DATA_ITEM]

  def _move_aside(self, damaged: Dict[int, str]) -> None:
    """Renames damaged step folders to `<step>.damaged` (kept for inspection; orbax
    ignores them), so the run saves those steps again."""
    if not damaged:
      return
    if jax.process_index() == 0:
      for step in damaged:
        folder = epath.Path(self.directory) / str(step)
        target = epath.Path(self.directory) / f"{step}.damaged"
        suffix = 1
        while target.exists():
          target, suffix = epath.Path(self.directory) / f"{step}.damaged.{suffix}", suffix + 1
        folder.rename(target)
        logging.warning("moved the damaged checkpoint %s aside to %s", folder, target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices("checkpoints: damaged steps moved aside")
    self._manager.reload()

  def wait(self) -> None:
    """Blocks until asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def _resolve_checkpoint(path: str) -> Tuple[str, int]:
  """`<dir>/<step>` or a folder of steps (a run's `checkpoints/` or its workdir)."""
  root_path = epath.Path(absolute_location(path))
  if root_path.name.isdigit() and (root_path / "state").is_dir():
    return str(root_path.parent), int(root_path.name)
  for root in (root_path, root_path / "checkpoints"):
    if root.is_dir():
      steps = [int(d.name) for d in root.iterdir()
               if d.name.isdigit() and (d / "state").is_dir()]
      if steps:
        return str(root), max(steps)
  raise FileNotFoundError(
      f"init_from={path!r} holds no checkpoint: give a run's workdir, its checkpoints/ "
      "folder, or one step folder inside it")


def load_matching_params(init_from: str, params: Any, param_shardings: Any) -> Tuple[Any, Dict[str, List[str]]]:
  """Loads the parameters of another run's checkpoint that fit this model.

  A parameter loads when the checkpoint has one of the same name and shape; the
  others (for example the gate and temperature of a kNN layer the other run did
  not have) keep their fresh initialisation. Parameters and optimizer state of
  the other run are otherwise ignored: the new run starts at step 0.

  Args:
    init_from: a checkpoint step folder, a `checkpoints/` folder or a workdir.
    params: this model's freshly initialised parameters.
    param_shardings: their shardings (the loaded ones take the same).
  Returns:
    (params, report) where report has "loaded", "initialized" (new here),
    "mismatched" (same name, other shape: initialised) and "unused" (only in the
    checkpoint) parameter names.
  """
  directory, step = _resolve_checkpoint(init_from)
  manager = ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(read_only=True),
      item_handlers={"state": ocp.PyTreeCheckpointHandler()})
  stored = flatten_with_names(manager.item_metadata(step)["state"].tree)
  stored = {k[len("params."):]: v for k, v in stored.items() if k.startswith("params.")}
  wanted = flatten_with_names(params)
  shardings = flatten_with_names(param_shardings)
  report = {"loaded": [], "initialized": [], "mismatched": [], "unused": []}
  for name, leaf in wanted.items():
    if name not in stored:
      report["initialized"].append(name)
    elif tuple(stored[name].shape) != tuple(leaf.shape):
      report["mismatched"].append(name)
    else:
      report["loaded"].append(name)
  report["unused"] = sorted(set(stored) - set(wanted))

  # A partial restore of exactly the loadable leaves, nested as orbax stores them.
  item, restore_args = {}, {}
  for name in report["loaded"]:
    node, args_node = item.setdefault("params", {}), restore_args.setdefault("params", {})
    parts = name.split(".")
    for part in parts[:-1]:
      node, args_node = node.setdefault(part, {}), args_node.setdefault(part, {})
    leaf = wanted[name]
    node[parts[-1]] = jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=shardings[name])
    args_node[parts[-1]] = ocp.ArrayRestoreArgs(sharding=shardings[name], dtype=leaf.dtype)
  loaded = {}
  if item:
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=item, restore_args=restore_args, partial_restore=True)))["state"]
    loaded = flatten_with_names(restored["params"])
  manager.close()

  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  new_leaves = []
  for path, leaf in leaves:
    name = leaf_name(path)
    new_leaves.append(loaded.get(name, leaf))
  logging.info("init_from %s/%d: loaded %d parameters, initialised %d new, %d with another "
               "shape, %d unused", directory, step, len(report["loaded"]),
               len(report["initialized"]), len(report["mismatched"]), len(report["unused"]))
  for kind in ("initialized", "mismatched", "unused"):
    for name in report[kind]:
      logging.info("init_from: %s %s", kind, name)
  return jax.tree_util.tree_unflatten(treedef, new_leaves), report
