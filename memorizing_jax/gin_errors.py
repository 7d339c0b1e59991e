"""Gin configuration errors that name the problem and the fix.

gin's own messages name a misspelt configurable or parameter but not the right one,
never say which flag sets a missing macro, accept a binding of a macro that no file
uses (it silently changes nothing) and pass a string on to a number field. Here:

  explain_parse_error(e)    the ConfigError for an error gin raised while parsing
  check_macros_are_used(p)  every macro a binding sets is one the files use
  check_field_types()       every value bound to a dataclass field has its type

gin keeps what it parsed in private module state (`_REGISTRY`, `_CONFIG`); this
module is the only one that reads those two.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import inspect
import re
import types
import typing
from typing import Sequence

import gin


class ConfigError(ValueError):
  """A gin file or binding that does not parse, names something unknown or gives a
  value of the wrong type."""


def _did_you_mean(word: str, candidates: Sequence[str], otherwise: str = "") -> str:
  close = difflib.get_close_matches(word, candidates, n=3)
  return f"\nDid you mean: {', '.join(close)}?" if close else otherwise


def _suggestion(message: str) -> str:
  """A 'did you mean' for a misspelt configurable or parameter in a gin error."""
  registry = gin.config._REGISTRY  # pylint: disable=protected-access
  match = re.search(r"Configurable '([\w.]+)' doesn't have a parameter named '(\w+)'", message)
  if match:
    try:
      names = list(inspect.signature(registry.get_match(match.group(1)).wrapped).parameters)
    except Exception:  # pylint: disable=broad-except
      return ""
    return _did_you_mean(match.group(2), names, f"\nIts parameters are: {', '.join(names)}")
  match = re.search(r"No configurable matching '([\w.]+)'", message)
  if match:
    depth = match.group(1).count(".") + 1  # compare as written: "loop.TrainerConfig"
    return _did_you_mean(match.group(1),
                         sorted({".".join(key.split(".")[-depth:]) for key, _ in registry.items()}))
  return ""


def _macro_hint(name: str) -> str:
  hints = {"TASK": "add a data file, e.g. --gin_file=data/python_stdlib.gin",
           "PRETRAINED": "give the run to start from, e.g. "
                         "--gin_param=\"PRETRAINED='runs/arxiv_512_xl'\""}
  return hints.get(name, f"set it, e.g. --gin_param=\"{name}=...\"")


def explain_parse_error(error: Exception) -> ConfigError:
  """The ConfigError for `error`, raised by gin while parsing files and bindings: a
  macro used but never set says how to set it; a misspelt name gets a 'did you mean'."""
  message = str(error).strip("'\"")
  macro = re.search(r"No bindings specified for '(\w+)/gin.macro'", message)
  if macro:
    return ConfigError(f"gin configuration error: the macro {macro.group(1)} is used but "
                       f"never set: {_macro_hint(macro.group(1))}")
  return ConfigError(f"gin configuration error: {message}{_suggestion(message)}")


def _macro_value(value):
  """`value` with macro references (%NAME) replaced by the macros' values."""
  if isinstance(value, gin.config.ConfigurableReference) and value.selector == "gin.macro":
    bound = gin.config._CONFIG.get(value.config_key, {})  # pylint: disable=protected-access
    return _macro_value(bound["value"]) if "value" in bound else value
  if isinstance(value, (list, tuple)):
    return type(value)(_macro_value(item) for item in value)
  return value


def check_macros_are_used(params: Sequence[str]) -> None:
  """A macro set by a binding must be one that the gin files refer to (%NAME):
  otherwise it is misspelt and would silently change nothing."""
  used = sorted({ref.scopes[-1] for ref in gin.config.iterate_references(
      gin.config._CONFIG) if ref.selector == "gin.macro"})  # pylint: disable=protected-access
  for param in params:
    for name in re.findall(r"^\s*([A-Za-z_]\w*)\s*=", param, flags=re.MULTILINE):
      if name not in used:
        raise ConfigError(
            f"gin configuration error: the binding {param.strip()!r} sets the macro {name}, "
            f"which no gin file uses{_did_you_mean(name, used, f'; the macros used: {used}')}")


def _fits(value, annotation) -> bool:
  """Whether `value` fits a dataclass field's type; values this cannot judge
  (configurable references, unusual annotations) fit."""
  origin, args = typing.get_origin(annotation), typing.get_args(annotation)
  if isinstance(value, gin.config.ConfigurableReference) or annotation is typing.Any:
    return True
  if origin in (typing.Union, types.UnionType):
    return any(_fits(value, arg) for arg in args)
  if origin is typing.Literal:
    return value in args
  if origin in (tuple, list, collections.abc.Sequence):  # a gin list fits a tuple field
    if not args:
      return isinstance(value, (list, tuple))
    item_types = [args[0]] * len(value) if len(args) == 1 or args[-1:] == (Ellipsis,) else args
    return (isinstance(value, (list, tuple)) and len(item_types) == len(value)
            and all(_fits(v, t) for v, t in zip(value, item_types)))
  if annotation in (int, float) and isinstance(value, bool):
    return False
  if annotation is float:
    return isinstance(value, (int, float))
  if isinstance(origin or annotation, type):
    return isinstance(value, origin or annotation)
  return True


def check_field_types() -> None:
  """Every value bound to a dataclass field must have the field's annotated type
  (macros resolved), so that a string for a number is named as such."""
  for (scope, selector), bindings in gin.config._CONFIG.items():  # pylint: disable=protected-access
    cls = gin.config._REGISTRY.get_match(selector)  # pylint: disable=protected-access
    if cls is None or not dataclasses.is_dataclass(cls.wrapped):
      continue
    hints = typing.get_type_hints(cls.wrapped)
    for name, given in bindings.items():
      value = _macro_value(given)
      if name in hints and not _fits(value, hints[name]):
        binding = "/".join(filter(None, [scope, ".".join(selector.split(".")[-2:] + [name])]))
        shown = repr(given) if repr(given) == repr(value) else f"{given!r} (= {value!r})"
        expected = (hints[name].__name__ if isinstance(hints[name], type)
                    else str(hints[name]).replace("typing.", ""))
        raise ConfigError(
            f"gin configuration error: {binding} = {shown} is a {type(value).__name__}, but "
            f"{cls.wrapped.__name__}.{name} takes {expected}: give a value of that type")
