"""A synthetic long-range recall task: names defined with random values, used later.

A document is a run of statements `<name><separator><value>;` (ASCII, so with the
byte vocabulary one character is one token); by default one-letter names and no
separator, so that a use's name token itself asks for its value:

    qK;fT;...;qK;...

It starts with `num_names` definitions (distinct names of `name_length` lowercase
letters, each with a value drawn uniformly from the 26 uppercase letters), then
`num_uses` uses, each repeating a defined name with its value: with probability
`recent_share` one of the `recent_names` most recently stated names (these uses
are always close to their source, and teach the model to copy a value), otherwise
any defined name, drawn uniformly (many of these lie far from their source). A
value is predictable only from the name's previous statement; the first statement
of a name (its definition) is not predictable at all.

Scoring (`annotate`, `classify`): every value token of a use is a recall target
whose source is the value token of the name's previous statement. Fed as
document-continuous segments of L tokens (see `data/streams.py`: the document is
read as `[pad] doc [eos]`, so document character i is input position i + 1), a
target at character v is predicted from input position v, and its source at
character p sits at input position p + 1. The model with an XL cache sees, from
segment s = v // L, only segments s - 1 and s; so the target is "far" (outside
the XL window: only an external memory can hold its source) when
(p + 1) // L < v // L - 1, and "near" otherwise. Chance accuracy on a far target
is 1/26 (`CHANCE`): values are drawn independently and uniformly.

This module is pure Python; `synthetic_task.py` registers the seqio task
`synthetic_recall` (the settings of `SyntheticConfig()`) when imported.
"""
from __future__ import annotations

import dataclasses
import hashlib
import string
from typing import Iterator, List, NamedTuple, Optional

import numpy as np

from memorizing_jax.data.documents import Document, ReadReport

TASK_NAME = "synthetic_recall"
VALUES = string.ascii_uppercase
NAME_LETTERS = string.ascii_lowercase
CHANCE = 1.0 / len(VALUES)
SPLITS = ("train", "validation", "test")
# Seeds of the splits: disjoint documents.
_SPLIT_SEEDS = {"train": 0, "validation": 1, "test": 2}


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """Sizes of the synthetic documents.

  Attributes:
    num_names: distinct names defined at the start of each document.
    num_uses: uses after the definitions, each of a uniformly drawn name.
    name_length: letters per name (26**name_length names to draw from).
    recent_share: probability that a use names one of the `recent_names` most
      recently stated names rather than any defined name.
    recent_names: how many recent names such a use draws from.
    separator: text between a name and its value (ASCII, no letters, no ';').
    repeat_name: write the name again after the value (`qKq;`): the value is then
      next to a copy of its name, which a later statement's name can match directly.
    train_documents, eval_documents: documents in the train split and in each of
      the validation and test splits.
    seed: the documents of every split derive from it.
  """

  num_names: int = 24
  num_uses: int = 316
  name_length: int = 1
  recent_share: float = 0.5
  recent_names: int = 4
  separator: str = ""
  repeat_name: bool = False
  train_documents: int = 4096
  eval_documents: int = 64
  seed: int = 0

  def __post_init__(self):
    for name in ("num_names", "num_uses", "name_length", "train_documents",
                 "eval_documents"):
      if getattr(self, name) < 1:
        raise ValueError(f"SyntheticConfig.{name} must be positive, got {getattr(self, name)}")
    if self.num_names > len(NAME_LETTERS) ** self.name_length:
      raise ValueError(f"SyntheticConfig.num_names={self.num_names} exceeds the "
                       f"{len(NAME_LETTERS) ** self.name_length} names of length "
                       f"{self.name_length}")
    if not 0.0 <= self.recent_share <= 1.0:
      raise ValueError(f"SyntheticConfig.recent_share must be in [0, 1], got "
                       f"{self.recent_share}")
    if any(c.isalpha() or c == ";" for c in self.separator) or not self.separator.isascii():
      raise ValueError(f"SyntheticConfig.separator must be ASCII without letters or ';', "
                       f"got {self.separator!r}")
    if not 1 <= self.recent_names <= self.num_names:
      raise ValueError(f"SyntheticConfig.recent_names must be in [1, num_names], got "
                       f"{self.recent_names}")

  @property
  def statement_length(self) -> int:
    """Characters per statement: name, separator, value, [name,] ';'."""
    return self.name_length * (2 if self.repeat_name else 1) + len(self.separator) + 2

  @property
  def value_index(self) -> int:
    """Index of the value within its statement."""
    return self.name_length + len(self.separator)

  @property
  def document_length(self) -> int:
    return (self.num_names + self.num_uses) * self.statement_length

  def num_documents(self, split: str) -> int:
    return self.train_documents if split == "train" else self.eval_documents


def generate_document(config: SyntheticConfig, split: str, index: int) -> str:
  """The text of document `index` of `split`; the same on every call and machine."""
  if split not in _SPLIT_SEEDS:
    raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
  rng = np.random.default_rng([config.seed, _SPLIT_SEEDS[split], index])
  letters = np.array(list(NAME_LETTERS))
  names: List[str] = []
  seen = set()
  while len(names) < config.num_names:
    name = "".join(rng.choice(letters, config.name_length))
    if name not in seen:
      seen.add(name)
      names.append(name)
  values = [VALUES[i] for i in rng.integers(0, len(VALUES), config.num_names)]
  order = list(range(config.num_names))
  for _ in range(config.num_uses):
    if rng.random() < config.recent_share:
      recent = list(dict.fromkeys(reversed(order)))[:config.recent_names]
      order.append(recent[rng.integers(0, len(recent))])
    else:
      order.append(int(rng.integers(0, config.num_names)))
  return "".join(
      f"{names[i]}{config.separator}{values[i]}{names[i] if config.repeat_name else ''};"
      for i in order)


class Recall(NamedTuple):
  """One value token of a document.

  Attributes:
    position: character index of the value in the document.
    source: character index of the value of the name's previous statement; -1 for
      a definition (the name's first statement).
    value: the value character.
  """
  position: int
  source: int
  value: str


def annotate(text: str) -> List[Recall]:
  """Every value token of a synthetic document and where its name last had a value.

  Parses the text independently of the generator: a statement ends with ';', its
  value is its one uppercase character, and what comes before the value (name and
  separator) names it.
  """
  recalls, last = [], {}
  start = 0
  while start < len(text):
    end = text.index(";", start)
    statement = text[start:end]
    upper = [i for i, c in enumerate(statement) if c.isupper()]
    if len(upper) != 1 or upper[0] == 0:
      raise ValueError(f"statement {statement!r} at {start} is not <name><value>[...];")
    name, value = statement[:upper[0]], statement[upper[0]]
    position = start + upper[0]
    recalls.append(Recall(position, last.get(name, -1), value))
    last[name] = position
    start = end + 1
  return recalls


# Kinds of value tokens (see the module docstring).
DEFINITION, NEAR, FAR = "definition", "near", "far"


def classify(recall: Recall, segment_length: int) -> str:
  """DEFINITION, NEAR (source within the XL window) or FAR (beyond it)."""
  if recall.source < 0:
    return DEFINITION
  if (recall.source + 1) // segment_length < recall.position // segment_length - 1:
    return FAR
  return NEAR


class SyntheticReader:
  """The document reader of the task (see `sources.py` for the reader interface)."""

  def __init__(self, config: SyntheticConfig = SyntheticConfig(), name: str = TASK_NAME):
    self.config = config
    self.name = name
    self.splits = SPLITS

  def documents(self, split: str, data_dir=None, report: Optional[ReadReport] = None, *,
                keep_binary_files: bool = False) -> Iterator[Document]:
    del data_dir, keep_binary_files  # Generated, not read.
    if split not in self.splits:
      raise ValueError(f"unknown split {split!r}; expected one of {list(self.splits)}")
    report = ReadReport() if report is None else report
    for index in range(self.config.num_documents(split)):
      report.documents += 1
      yield Document(f"{self.name}/{split}/{index:06d}",
                     generate_document(self.config, split, index))

  def fingerprint(self, split: str, data_dir=None) -> str:
    del data_dir
    text = f"{self.name}|{split}|{dataclasses.astuple(self.config)}|v1"
    return hashlib.sha256(text.encode()).hexdigest()[:16]
