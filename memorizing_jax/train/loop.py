"""The training loop: build, restore or initialise, step, log, evaluate, checkpoint.

`train(...)` is the function the gin files configure (`loop.train.*`). It reads
top to bottom: `build_run` assembles the mesh, model, optimizer, shardings and
jitted steps; `restore_or_initialize` resumes from the workdir's latest
checkpoint (or starts fresh, optionally from another run's parameters); the loop
then steps, logs, evaluates and checkpoints until `total_steps`, a SIGTERM, or a
diverging loss. Process 0 holds the workdir's lock (train/workdir_lock.py) from
before the first write to the workdir until the end, so a second run on the same
workdir refuses to start.

Its config, `TrainerConfig`, lives in train/trainer_config.py (gin files bind it
as `loop.TrainerConfig`), stopping on SIGTERM in train/interruption.py and the
profiler trace in train/profiling.py.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any, Dict, Optional, Sequence

import flax.linen as nn
import jax
from etils import epath
import optax

from memorizing_jax.checkpointing import reader
from memorizing_jax.data.config import DataConfig
from memorizing_jax.model import partitioning
from memorizing_jax.model.config import ModelConfig
from memorizing_jax.model.transformer import MemorizingTransformer
from memorizing_jax.train import aot
from memorizing_jax.train import checkpoints as checkpoints_lib
from memorizing_jax.train import chips
from memorizing_jax.train import compiled
from memorizing_jax.train import evaluation
from memorizing_jax.train import inputs as inputs_lib
from memorizing_jax.train import interruption
from memorizing_jax.train import loss_guard
from memorizing_jax.train import metrics as metrics_lib
from memorizing_jax.train import optimizer as optimizer_lib
from memorizing_jax.train import profiling
from memorizing_jax.train import run_vocabulary
from memorizing_jax.train import steps as steps_lib
from memorizing_jax.train import train_state as train_state_lib
from memorizing_jax.train import workdir_lock
from memorizing_jax.train.loss_guard import LossAboveCeilingError, NonFiniteLossError
from memorizing_jax.train.partitioner import MeshConfig, Partitioner
# Also `loop.TrainerConfig`: the name gin files (and old workdirs' config.gin) bind.
from memorizing_jax.train.trainer_config import TrainerConfig


@dataclasses.dataclass
class TrainResult:
  """What a call to `train` did.

  Attributes:
    step: the step counter at the end.
    train_losses: {step: mean training loss of that step} for the steps run here,
      step counted after the update (1 for the first update).
    evals: {step: evaluation metrics}.
    stopped_by_signal: True when SIGTERM ended the run early.
  """

  step: int
  train_losses: Dict[int, float]
  evals: Dict[int, Dict[str, float]]
  stopped_by_signal: bool = False


@dataclasses.dataclass
class Run:
  """The pieces of one training run, built once."""

  model_config: ModelConfig
  data: DataConfig
  model: nn.Module
  tx: optax.GradientTransformation
  partitioner: Partitioner
  layout: train_state_lib.StateLayout
  eval_state: Any  # the evaluation ModelState's ShapeDtypeStructs, carrying shardings
  steps: steps_lib.CompiledSteps


def build_run(model_config: ModelConfig, data: DataConfig,
              optimizer: optimizer_lib.OptimizerConfig, mesh: MeshConfig,
              trainer: TrainerConfig, devices: Optional[Sequence[Any]] = None) -> Run:
  """The pieces of a run, for this host's devices or `devices` (e.g. a TPU topology's
  compile-only devices, to compile the steps without running them: train/aot.py)."""
  partitioner = Partitioner(mesh, devices)
  partitioner.check_processes_feed_distinct_rows()
  partitioner.check_batch_size(data.batch_size, "DataConfig.batch_size")
  partitioner.check_batch_size(data.eval_batch_size, "DataConfig.eval_batch_size")
  model = MemorizingTransformer(model_config)
  tx = optimizer_lib.make_optimizer(optimizer)
  layout = train_state_lib.train_state_layout(model_config, tx, data.batch_size, partitioner)
  eval_state = partitioning.state_layout(model_config, data.eval_batch_size, partitioner.mesh,
                                         partitioner.rules)
  steps = steps_lib.jit_steps(
      model, tx, optimizer_lib.learning_rate_schedule(optimizer.schedule), partitioner,
      layout.shardings, partitioning.shardings_of(eval_state), dropout_seed=trainer.seed + 1,
      use_dropout=model_config.dropout_rate > 0)
  return Run(model_config, data, model, tx, partitioner, layout, eval_state, steps)


def restore_or_initialize(run: Run, checkpointer: checkpoints_lib.Checkpointer, stream,
                          seed: int, init_from: Optional[str]) -> train_state_lib.TrainState:
  """The workdir's newest intact checkpoint (and the stream's position), else a fresh
  state.

  A fresh state takes the parameters that fit from `init_from` when given. A
  workdir that already has a checkpoint resumes it and ignores `init_from`.
  Damaged newer checkpoints are reported and moved aside (`Checkpointer.restore_latest`).

  Raises:
    CorruptCheckpointError: every checkpoint in the workdir is damaged.
  """
  latest = checkpointer.restore_latest(run.layout.abstract)
  if latest is not None:
    latest, state, positions = latest
    own = checkpoints_lib.shard_positions(positions, run.data.process_shards(),
                                          run.data.num_shards)
    if own is None:
      logging.warning(
          "the checkpoint's data position covers %d data shards, this run reads %d: the "
          "training stream starts again from its first document. To continue the data "
          "exactly on %d processes, set data_config.DataConfig.data_shards = %d.",
          len(positions), run.data.num_shards, jax.process_count(), len(positions))
    else:
      stream.restore(own)
    if init_from:
      logging.warning("workdir has a checkpoint at step %d: resuming it; init_from=%s is "
                      "ignored", latest, init_from)
    logging.info("resumed from %s/%d", checkpointer.directory, latest)
    return state
  state = train_state_lib.create_train_state(run.model_config, run.tx, run.data.batch_size,
                                             run.layout, seed)
  if init_from:
    params, _ = reader.restore_matching_params(init_from, state.params)
    opt_state = jax.jit(run.tx.init, out_shardings=run.layout.shardings.opt_state)(params)
    state = state.replace(params=params, opt_state=opt_state)
  return state


def run_evaluation(run: Run, params: Any, vocabulary, max_batches: Optional[int]
                   ) -> Dict[str, float]:
  """Evaluates `params` from a fresh model state over the eval split."""
  stream = inputs_lib.make_stream(run.data, run.model_config.segment_length, vocabulary,
                                  mode="eval")
  fresh = train_state_lib.fresh_model_state(run.model_config, run.data.eval_batch_size,
                                            partitioning.shardings_of(run.eval_state))
  batches = (inputs_lib.model_inputs(b) for b in stream)
  return evaluation.evaluate(run.steps.evaluate, params, fresh, batches,
                             run.partitioner.global_batch, max_batches)


def train(*, workdir: str, model: ModelConfig = ModelConfig(),
          data: DataConfig = DataConfig(),
          optimizer: optimizer_lib.OptimizerConfig = optimizer_lib.OptimizerConfig(),
          mesh: MeshConfig = MeshConfig(), trainer: TrainerConfig = TrainerConfig(),
          init_from: Optional[str] = None, gin_config: str = "") -> TrainResult:
  """Trains (or resumes training) in `workdir`; evaluates at the end.

  Args:
    workdir: checkpoints (`checkpoints/`), TensorBoard events (`train/`, `eval/`),
      the run's vocabulary (`vocabulary/`, stored when the run starts fresh and
      read back when it resumes) and the operative config (`config.gin`, written
      once the checkpoint is restored or the run starts fresh) go here. An
      existing checkpoint here is resumed exactly.
    model, data, optimizer, mesh, trainer: the run's configuration.
    init_from: a checkpoint of another run whose matching parameters to start from.
    gin_config: the gin config text to record with every checkpoint.
  Raises:
    NonFiniteLossError: the loss became NaN or infinite (last good checkpoint kept);
      LossAboveCeilingError (a subclass) when it exceeded `trainer.max_loss`.
    CheckpointMismatchError: the workdir's checkpoint does not fit `model`.
    StoredVocabularyError: the workdir's vocabulary is damaged or not the one `data`
      describes.
    WorkdirLockedError: another live run holds `workdir`.
  """
  run = build_run(model, data, optimizer, mesh, trainer)
  checkpoints_lib.check_workdir_writable(
      workdir, 2 * checkpoints_lib.checkpoint_bytes(run.layout.abstract))
  lock = workdir_lock.lock_workdir(workdir, trainer.lock_stale_after_s)
  try:
    # Stored with the run (fresh) or read back from it (resumed): train/run_vocabulary.py.
    vocabulary = run_vocabulary.vocabulary_for_run(workdir, data, model.vocab_size)
    return _train_in_locked_workdir(workdir, run, vocabulary, trainer, init_from, gin_config,
                                    lock)
  finally:
    if lock is not None:
      lock.release()


def _train_in_locked_workdir(workdir: str, run: Run, vocabulary, trainer: TrainerConfig,
                             init_from: Optional[str], gin_config: str,
                             lock: Optional[workdir_lock.WorkdirLock]) -> TrainResult:
  """`train` once process 0 holds the workdir's lock (`lock`, None elsewhere)."""
  model, data = run.model_config, run.data
  checkpointer = checkpoints_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                              keep=trainer.keep_checkpoints,
                                              asynchronous=trainer.async_checkpoints)
  stream = inputs_lib.make_stream(data, model.segment_length, vocabulary, mode="train")
  state = restore_or_initialize(run, checkpointer, stream, trainer.seed, init_from)
  # Only now: a config whose restore failed must not replace the workdir's config.gin.
  if jax.process_index() == 0 and gin_config:
    (epath.Path(workdir) / "config.gin").write_text(gin_config)
  run_vocabulary.store_if_missing(workdir, vocabulary, data)  # runs of older versions
  step = int(jax.device_get(state.step))
  result = TrainResult(step=step, train_losses={}, evals={})
  # Compiled once, ahead of the loop: its FLOPs give the utilisation (`mfu`).
  train_step = aot.lower_train_step(run).compile()
  device_peak = chips.device_peak(run.partitioner.mesh.devices.flat[0])
  logger = metrics_lib.MetricsLogger(
      workdir, step, trainer.total_steps, enabled=jax.process_index() == 0,
      progress_bar=trainer.progress_bar, devices=run.partitioner.mesh.size,
      step_flops_per_device=compiled.flops_per_device(train_step),
      peak_flops_per_device=device_peak.peak_flops if device_peak else None)
  profiler = profiling.Profiler(os.path.join(workdir, "profile"), first_step=step + 1,
                                steps=trainer.profile_steps)
  accumulator = metrics_lib.MetricsAccumulator()
  tokens_per_step = data.batch_size * model.segment_length
  try:
    with interruption.StopOnSignal() as stop:
      stopping = False
      while step < trainer.total_steps and not stopping:
        batch = run.partitioner.global_batch(inputs_lib.model_inputs(next(stream)))
        profiler.before_step(step)
        state, step_metrics = train_step(state, batch)
        accumulator.add(step, step_metrics)
        step += 1
        profiler.after_step(step, state)
        logger.advance()
        stopping = interruption.agreed_stop(stop.requested, step, trainer.stop_check_every)
        first_step = step == result.step + 1
        save = step % trainer.checkpoint_every == 0 or step == trainer.total_steps
        if first_step or save or stopping or step % trainer.log_every == 0:
          _flush_metrics(accumulator, checkpointer, logger, result, tokens_per_step,
                         trainer.max_loss)
        if first_step:  # Includes compilation: time the next interval afresh.
          logger.reset_timer()
        if save or stopping:
          _save(checkpointer, state, stream, gin_config, lock)
        if trainer.eval_every and step % trainer.eval_every == 0 and \
            step != trainer.total_steps:
          # The training rows' XL caches and memories wait in host memory meanwhile:
          # the device holds one model state at a time (aot.evaluation_peak_bytes).
          state, on_host = state.replace(model_state=None), _to_host(state.model_state)
          _evaluate_and_log(run, state.params, vocabulary, trainer, step, logger, result)
          state = state.replace(model_state=jax.device_put(
              on_host, run.layout.shardings.model_state))
      _flush_metrics(accumulator, checkpointer, logger, result, tokens_per_step,
                     trainer.max_loss)
      if step not in checkpointer.all_steps():
        _save(checkpointer, state, stream, gin_config, lock)
      result.stopped_by_signal = stopping
      if not stopping and step not in result.evals:
        params, state = state.params, None  # the training model state is not needed
        _evaluate_and_log(run, params, vocabulary, trainer, step, logger, result)
  finally:
    profiler.stop()
    checkpointer.close()
    logger.close()
  result.step = step
  return result


def _save(checkpointer: checkpoints_lib.Checkpointer, state: Any, stream, gin_config: str,
          lock: Optional[workdir_lock.WorkdirLock]) -> None:
  """Saves `state` unless it is not finite (then raises, keeping the last good one),
  after checking that this run still holds the workdir and refreshing its heartbeat."""
  loss_guard.check_state_finite(state, checkpointer)
  if lock is not None:
    lock.refresh()
  checkpointer.save(state, stream.state(), gin_config)


def _flush_metrics(accumulator: metrics_lib.MetricsAccumulator,
                   checkpointer: checkpoints_lib.Checkpointer,
                   logger: metrics_lib.MetricsLogger, result: TrainResult,
                   tokens_per_step: int, max_loss: Optional[float]) -> None:
  """Fetches the pending step metrics, stops on a diverging loss, writes a summary."""
  if not len(accumulator):
    return
  first, per_step = accumulator.fetch()
  loss_guard.check_losses(first, per_step, checkpointer, max_loss)
  for offset, m in enumerate(per_step):
    result.train_losses[first + offset + 1] = float(m["loss_sum"] / max(m["tokens"], 1.0))
  logger.write_train(first + len(per_step), metrics_lib.summarize(per_step),
                     tokens_per_step * len(per_step), steps=len(per_step))


def _to_host(tree: Any) -> Any:
  """A copy of device arrays in host memory, sharded as they are (every process
  keeps its own shards)."""
  return jax.device_put(tree, jax.tree.map(lambda x: x.sharding.with_memory_kind("pinned_host"),
                                           tree))


def _evaluate_and_log(run: Run, params: Any, vocabulary, trainer: TrainerConfig, step: int,
                      logger: metrics_lib.MetricsLogger, result: TrainResult) -> None:
  started = time.perf_counter()
  scalars = run_evaluation(run, params, vocabulary, trainer.eval_batches)
  logging.info("evaluation at step %d took %.1f s", step, time.perf_counter() - started)
  logger.write_eval(step, scalars)
  result.evals[step] = scalars
  logger.reset_timer()
