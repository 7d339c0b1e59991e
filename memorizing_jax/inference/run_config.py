"""A run's configuration, read back from the operative gin config of its checkpoint.

The trainer stores the operative gin config with every checkpoint (and as
`config.gin` in the workdir). Here it is parsed as data, without touching gin's
global configuration: the bindings of `ModelConfig` and `DataConfig` (macros
resolved) become those dataclasses. The memorizing_jax data modules the config
imports are imported, so that the tasks they register (and their vocabularies)
are known.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Dict, Tuple

import gin.config_parser

from memorizing_jax.data.config import DataConfig
from memorizing_jax.model.config import ModelConfig


class _Macro:
  def __init__(self, name: str):
    self.name = name


class _Reference:
  def __init__(self, name: str):
    self.name = name


def _delegate():
  class Delegate(gin.config_parser.ParserDelegate):
    def configurable_reference(self, scoped_configurable_name, evaluate):
      return _Reference(scoped_configurable_name)

    def macro(self, macro_name):
      return _Macro(macro_name)

  return Delegate()


def _parse_bindings(text: str) -> Tuple[Dict[str, Dict[str, Any]], Tuple[str, ...]]:
  """{configurable selector: {parameter: value}} of the unscoped bindings, macros
  resolved, and the modules the config imports."""
  macros, bindings, imports = {}, {}, []
  for statement in gin.config_parser.ConfigParser(text, _delegate()):
    if isinstance(statement, gin.config_parser.ImportStatement):
      imports.append(statement.module)
    elif isinstance(statement, gin.config_parser.BindingStatement) and not statement.scope:
      if not statement.arg_name and "." not in statement.selector:
        macros[statement.selector] = statement.value
      else:
        bindings.setdefault(statement.selector, {})[statement.arg_name] = statement.value

  def resolve(value, depth=0):
    if depth > 50:
      raise ValueError("gin config: macros refer to each other in a cycle")
    if isinstance(value, _Macro):
      if value.name not in macros:
        raise ValueError(f"gin config uses the macro {value.name} but never sets it")
      return resolve(macros[value.name], depth + 1)
    if isinstance(value, (list, tuple)):
      return type(value)(resolve(v, depth + 1) for v in value)
    if isinstance(value, dict):
      return {k: resolve(v, depth + 1) for k, v in value.items()}
    return value

  resolved = {selector: {k: resolve(v) for k, v in params.items()}
              for selector, params in bindings.items()}
  return resolved, tuple(imports)


def _bound(bindings: Dict[str, Dict[str, Any]], cls) -> Dict[str, Any]:
  """Bindings of `cls` (selector `cls.__name__` or ending in `.<name>`)."""
  fields = {f.name for f in dataclasses.fields(cls)}
  values = {}
  for selector, params in bindings.items():
    if selector == cls.__name__ or selector.endswith("." + cls.__name__):
      values.update({k: v for k, v in params.items() if k in fields})
  return values


def configs_from_gin(text: str) -> Tuple[ModelConfig, DataConfig]:
  """(ModelConfig, DataConfig) bound by an operative gin config.

  Bindings are matched by class name, whatever module the config reached the class
  through: runs trained before `DataConfig` moved to `memorizing_jax.data.config`
  bind `inputs.DataConfig` (the trainer's `train/inputs.py`), which matches as well.
  """
  bindings, imports = _parse_bindings(text)
  for module in imports:
    if module.startswith("memorizing_jax.data"):
      importlib.import_module(module)  # registers the tasks the run used
  return (ModelConfig(**_bound(bindings, ModelConfig)),
          DataConfig(**_bound(bindings, DataConfig)))
