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

Resuming takes the newest intact checkpoint, read by the one checkpoint reader
(`memorizing_jax/checkpointing/reader.py`): a damaged one is reported, moved aside
(`<step>.damaged`) here, and the next older one is used.

Also: the checks that a workdir can hold a checkpoint, and the data positions of
every process gathered for saving.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from typing import Any, Dict, List, Optional, Tuple

import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from memorizing_jax.checkpointing import fallback, items, reader
from memorizing_jax.data.data_dir import absolute_location, is_remote
from memorizing_jax.checkpointing.fallback import CorruptCheckpointError  # pylint: disable=unused-import  # (for callers)
from memorizing_jax.checkpointing.trees import CheckpointMismatchError  # pylint: disable=unused-import  # (for callers)
from memorizing_jax.train.train_state import TrainState


# orbax saves an array that R devices hold alike in R slices, one written by each device
# (replica-parallel), each cut out by a small jitted slice compiled per shape and device.
# Below this many bytes a slice saves no time and costs those compilations (96 of the
# 172 of a tiny run trained on 8 devices and resumed on another mesh, 7.5 s).
MIN_REPLICA_SLICE_BYTES = 1 << 20


def save_small_replicated_arrays_whole() -> None:
  """Sets orbax's `jax.Array` handler (process-wide) to split a replicated array over its
  replicas only where each slice has `MIN_REPLICA_SLICE_BYTES` or more."""
  ocp.type_handlers.register_type_handler(
      jax.Array, ocp.type_handlers.ArrayHandler(
          min_slice_bytes_for_replica_parallel=MIN_REPLICA_SLICE_BYTES), override=True)


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
    save_small_replicated_arrays_whole()
    options = ocp.CheckpointManagerOptions(max_to_keep=keep,
                                           enable_async_checkpointing=asynchronous,
                                           create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers={
        items.STATE_ITEM: ocp.StandardCheckpointHandler(),
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
        items.STATE_ITEM: ocp.args.StandardSave(state),
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
    """(state, data positions) of checkpoint `step`, verified against its digests
    (`checkpointing/reader.py`: any mesh, any number of processes).

    Raises:
      CheckpointMismatchError: it does not fit the model; the message lists the
        differences and suggests `init_from`.
      CorruptCheckpointError: it is damaged; the message says what is wrong.
    """
    _, state, positions, _ = reader.restore_state(
        self.directory, [step], abstract_state, self._advice(), self._mismatch_advice())
    return state, positions

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
    step, state, positions, damaged = reader.restore_state(
        self.directory, steps, abstract_state, self._advice(), self._mismatch_advice())
    self._move_aside(damaged)
    return step, state, positions

  def _advice(self) -> str:
    workdir = os.path.dirname(self.directory)
    return (f"To go on, start a new run with another --workdir (add --gin_param="
            f"\"loop.train.init_from='<a checkpoint>'\" to keep trained parameters), or "
            f"move the damaged step folders out of {self.directory} if an intact copy of "
            f"the run exists elsewhere (e.g. copy it back into {workdir}).")

  def _mismatch_advice(self) -> str:
    return (f"To start a new run from its parameters, use a fresh --workdir and "
            f"--gin_param=\"loop.train.init_from='{self.directory}'\"; to resume this "
            "run, use the config it was trained with (config.gin in its workdir).")

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
          multihost_utils.sync_global_devices("checkpoints: damaged steps moved aside")
    self._manager.reload()

  def wait(self) -> None:
    """Blocks until asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
