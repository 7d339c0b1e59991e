"""Training, one module per job.

  optimizer     OptimizerConfig / ScheduleConfig: Adafactor (or AdamW), the paper's
                warm-up + inverse-square-root schedule, gradient clipping
  partitioner   MeshConfig and Partitioner: the (data, model, memory) mesh, logical-axis
                rules, shardings of batches and optimizer state (the parameters' and
                ModelState's come from model/partitioning.py)
  train_state   TrainState (step, params, opt_state, model_state), created sharded
  steps         pure train_step / eval_step and their jax.jit wiring (donation)
  inputs        the vocabulary and the segment streams of a DataConfig (data/config.py)
  evaluation    evaluation over whole documents from a fresh ModelState
  checkpoints   Checkpointer (orbax): saving, resuming through checkpointing/reader.py,
                moving damaged steps aside; workdir checks
  metrics       metric sums -> scalars, clu writers (TensorBoard + console), progress bar
  loss_guard    stop before saving when the loss is NaN, infinite or above a ceiling
  workdir_lock  one run per workdir: a lock file with the holder's host, pid, heartbeat
  multihost     jax.distributed start-up (TPU pods, flags, env) and cross-process agreement
  trainer_config
                TrainerConfig: how long to train, how often to log, evaluate and save
  interruption  SIGTERM -> save and stop, at the same step on every process
  profiling     a jax.profiler trace of a window of training steps
  loop          `train`, the function the gin files configure (they name TrainerConfig
                `loop.TrainerConfig`: loop imports it)
"""
