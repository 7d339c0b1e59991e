"""The items of a checkpoint step, and the JSON ones read straight from their files.

Each step folder holds one folder per item; orbax's `JsonCheckpointHandler` writes
a JSON item as `<directory>/<step>/<item>/metadata`. Reading that file needs neither
orbax nor a `CheckpointManager`, and no JAX: the inference loader, the trainer's
vocabulary and the digest check read small items this way. The items:

  state        the arrays (orbax's PyTree format, not JSON: `reader.py` reads it)
  config       {"gin": the operative gin config}
  data         {"<shard>": data stream position}
  digests      {"algorithm", "arrays": {leaf name: digest}} (`digests.py`)
  vocabulary   the run's vocabulary (`memorizing_jax/data/stored_vocab.py`)
"""
from __future__ import annotations

import json
from typing import Any, Optional

from etils import epath

STATE_ITEM = "state"
CONFIG_ITEM = "config"
DATA_ITEM = "data"
DIGESTS_ITEM = "digests"
VOCABULARY_ITEM = "vocabulary"
_JSON_ITEM_FILE = "metadata"  # where orbax's JsonCheckpointHandler writes an item


def json_item_path(directory: str, step: int, item: str) -> epath.Path:
  """`<directory>/<step>/<item>/metadata`: the file of a JSON item."""
  return epath.Path(directory) / str(step) / item / _JSON_ITEM_FILE


def read_json_item(directory: str, step: int, item: str) -> Optional[Any]:
  """The JSON item `item` of checkpoint `step`, or None when the step has none.

  Raises:
    ValueError: the item's file is there but is not JSON (damaged), naming it.
  """
  path = json_item_path(directory, step, item)
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except (ValueError, UnicodeDecodeError) as e:
    raise ValueError(f"{path} is unreadable ({type(e).__name__}: {e})") from e
