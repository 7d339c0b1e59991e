"""The optimizer and the paper's learning-rate schedule.

The paper trains with Adafactor, a linear warm-up over the first 1000 steps and
an inverse-square-root decay after it; AdamW is offered as the common
alternative. Both clip the global gradient norm first.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("adafactor", "adamw")


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
  """Linear warm-up to `peak_learning_rate`, then inverse-square-root decay.

  lr(step) = peak * (step + 1) / warmup_steps          while step + 1 < warmup_steps
           = peak * sqrt(warmup_steps / (step + 1))    afterwards,
  where `step` counts updates from 0, so the first update is not wasted on lr 0.
  With `warmup_steps == 0` the decay is measured from step 1.
  """

  peak_learning_rate: float = 0.01
  warmup_steps: int = 1000
  decay: str = "rsqrt"  # "rsqrt" (the paper's) or "constant" after warm-up.

  def __post_init__(self):
    if not self.peak_learning_rate > 0:
      raise ValueError(f"ScheduleConfig.peak_learning_rate must be > 0, got "
                       f"{self.peak_learning_rate}")
    if self.warmup_steps < 0:
      raise ValueError(f"ScheduleConfig.warmup_steps must be >= 0, got {self.warmup_steps}")
    if self.decay not in ("rsqrt", "constant"):
      raise ValueError(f"ScheduleConfig.decay must be 'rsqrt' or 'constant', got "
                       f"{self.decay!r}")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """Which optimizer, its schedule and its clipping.

  Attributes:
    name: "adafactor" (the paper's) or "adamw".
    schedule: the learning-rate schedule.
    clip_gradient_norm: global-norm clipping threshold; None or 0 turns it off.
    weight_decay: decoupled weight decay (AdamW only; Adafactor's is 0 here).
    b1, b2: AdamW moments. Adafactor runs without momentum, as in the paper.
    multiply_by_parameter_scale: Adafactor's relative step size (t5x's default):
      an update is scaled by max(RMS of the parameter it changes, 1e-3).
    unscaled_parameters: regular expressions, searched in a parameter's path
      ("decoder/layer_2/knn/gate_bias"), naming parameters whose Adafactor updates
      are NOT scaled by their RMS even when multiply_by_parameter_scale is on (as
      t5x's HParamMap for multiply_by_parameter_scale). The default names the kNN
      layer's per-head gate bias and temperature: the gate bias starts at 0, so a
      scaled update would be 1e-3 x the learning rate and the gate would stay at
      sigmoid(0) = 0.5; unscaled, each moves by about the learning rate per step.
  """

  name: str = "adafactor"
  schedule: ScheduleConfig = ScheduleConfig()
  clip_gradient_norm: Optional[float] = 1.0
  weight_decay: float = 0.0
  b1: float = 0.9
  b2: float = 0.98
  multiply_by_parameter_scale: bool = True
  unscaled_parameters: Sequence[str] = (r"(^|/)gate_bias$", r"(^|/)temperature$")

  def __post_init__(self):
    object.__setattr__(self, "unscaled_parameters", tuple(self.unscaled_parameters))
    for pattern in self.unscaled_parameters:
      try:
        re.compile(pattern)
      except re.error as e:
        raise ValueError(f"OptimizerConfig.unscaled_parameters: {pattern!r} is not a "
                         f"regular expression ({e})") from e
    if self.name not in OPTIMIZERS:
      raise ValueError(f"OptimizerConfig.name must be one of {OPTIMIZERS}, got {self.name!r}")
    if self.clip_gradient_norm is not None and self.clip_gradient_norm < 0:
      raise ValueError("OptimizerConfig.clip_gradient_norm must be >= 0 or None, got "
                       f"{self.clip_gradient_norm}")
    if self.weight_decay < 0:
      raise ValueError(f"OptimizerConfig.weight_decay must be >= 0, got {self.weight_decay}")


def learning_rate_schedule(config: ScheduleConfig) -> optax.Schedule:
  """Returns step [] int -> learning rate [] float32 (see ScheduleConfig)."""
  peak = config.peak_learning_rate
  warmup = float(config.warmup_steps)

  def schedule(step):
    n = jnp.asarray(step, jnp.float32) + 1.0  # updates done, counting this one
    if warmup == 0:
      ramp = 1.0
      decay = jax.lax.rsqrt(n) if config.decay == "rsqrt" else 1.0
    else:
      ramp = jnp.minimum(n / warmup, 1.0)
      decay = (jnp.sqrt(warmup / jnp.maximum(n, warmup))
               if config.decay == "rsqrt" else 1.0)
    return peak * ramp * decay

  return schedule


def _parameter_path(path: Tuple[Any, ...]) -> str:
  """"decoder/layer_2/knn/gate_bias": a parameter's tree path joined by slashes."""
  names = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        names.append(str(getattr(key, attr)))
        break
    else:
      names.append(str(key))
  return "/".join(names)


def _scale_by_param_rms_except(unscaled: Callable[[str], bool], min_scale: float = 1e-3
                               ) -> optax.GradientTransformation:
  """Adafactor's parameter scaling, skipped for the parameters `unscaled` names.

  update[p] *= max(RMS(param[p]), min_scale) for every parameter p (a whole leaf
  is one block, as in `optax.scale_by_param_block_rms`), except where
  `unscaled(path of p)` is true: there the update is left as it is. Stateless.
  """

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("_scale_by_param_rms_except needs the parameters")

    def scale(path, update, param):
      if unscaled(_parameter_path(path)):
        return update
      rms = jnp.sqrt(jnp.mean(jnp.square(param.astype(jnp.float32))))
      return update * jnp.maximum(rms, min_scale).astype(update.dtype)

    return jax.tree_util.tree_map_with_path(scale, updates, params), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def adafactor(schedule: optax.Schedule, multiply_by_parameter_scale: bool,
              unscaled_parameters: Sequence[str] = ()) -> optax.GradientTransformation:
  """Adafactor as in t5x: factored second moments (decay 0.8), update clipping at
  RMS 1, no momentum, then (optionally) parameter scaling, except for the
  parameters whose path matches one of `unscaled_parameters`.

  The chain mirrors `optax.adafactor` element for element, so its state (and a
  checkpoint of it) is the same as optax's; with no exceptions the updates are too.
  """
  patterns = [re.compile(p) for p in unscaled_parameters]
  rules = [optax.scale_by_factored_rms(factored=True, decay_rate=0.8, step_offset=0,
                                       min_dim_size_to_factor=128, epsilon=1e-30),
           optax.clip_by_block_rms(1.0),
           optax.scale_by_learning_rate(schedule, flip_sign=False)]
  if multiply_by_parameter_scale:
    rules.append(_scale_by_param_rms_except(
        lambda path: any(p.search(path) for p in patterns)))
  rules.append(optax.scale(-1.0))
  return optax.chain(*rules)


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
  """The full update rule: clip, then Adafactor or AdamW on the schedule."""
  schedule = learning_rate_schedule(config.schedule)
  if config.name == "adafactor":
    rule = adafactor(schedule, config.multiply_by_parameter_scale,
                     config.unscaled_parameters)
  else:
    rule = optax.adamw(learning_rate=schedule, b1=config.b1, b2=config.b2,
                       weight_decay=config.weight_decay)
  if config.clip_gradient_norm:
    return optax.chain(optax.clip_by_global_norm(config.clip_gradient_norm), rule)
  return rule
