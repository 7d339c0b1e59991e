"""Restoring the newest intact step: each kind of damage is named and skipped, a step
without digests restores unverified, and a config error is not taken for damage."""
import json
import re

import jax.numpy as jnp
import numpy as np
import pytest

from memorizing_jax.checkpointing import digests, fallback, items
from memorizing_jax.checkpointing.fallback import CorruptCheckpointError
from memorizing_jax.checkpointing.trees import CheckpointMismatchError


def arrays_at(step):
  return {"w": jnp.full((2, 3), float(step)), "b": jnp.arange(4, dtype=jnp.int32) + step}


def save_digests(directory, step, text=None):
  path = items.json_item_path(str(directory), step, items.DIGESTS_ITEM)
  path.parent.mkdir(parents=True)
  path.write_text(json.dumps(fallback.digests_item(arrays_at(step))) if text is None else text)


def test_the_digests_item_names_the_algorithm_and_every_array():
  item = fallback.digests_item(arrays_at(3))
  assert sorted(item) == ["algorithm", "arrays"] and item["algorithm"] == digests.ALGORITHM
  assert sorted(item["arrays"]) == ["b", "w"]
  assert re.fullmatch(r"float32\[2,3\]:[0-9a-f]{16}", item["arrays"]["w"])
  assert re.fullmatch(r"int32\[4\]:[0-9a-f]{16}", item["arrays"]["b"])
  assert json.loads(json.dumps(item)) == item  # saved as a JSON item
  assert digests.digest_problems(arrays_at(3), item["arrays"]) == []
  other = digests.digest_problems(arrays_at(4), item["arrays"])
  assert [p.split(" (")[0] for p in other] == ["b: its values differ from the ones saved",
                                               "w: its values differ from the ones saved"]


def test_the_newest_intact_step_is_restored_past_each_kind_of_damage(tmp_path, caplog):
  for step in (1, 3, 4):
    save_digests(tmp_path, step)
  save_digests(tmp_path, 2, text='{"algorithm": "x", "arr')  # a truncated digests file
  on_disk = {1: arrays_at(1), 2: arrays_at(2), 3: dict(arrays_at(3), w=jnp.zeros((2, 3)))}
  read = []

  def restore_step(step):
    read.append(step)
    if step not in on_disk:
      raise OSError("a chunk of the array is missing\nmore detail")
    return on_disk[step], f"extra of {step}"

  with caplog.at_level("WARNING"):
    step, restored, damaged = fallback.restore_newest_intact(
        str(tmp_path), [2, 4, 1, 3], restore_step, arrays_of=lambda r: r[0], advice="")
  assert (step, restored[1]) == (1, "extra of 1")
  assert read == [4, 3, 1]  # newest first; step 2's digests fail before its arrays are read
  assert list(damaged) == [4, 3, 2]
  assert damaged[4] == "it does not read (OSError: a chunk of the array is missing)"
  assert damaged[3].startswith("its arrays fail the digest check (w: ")
  assert damaged[2].startswith("it does not read (ValueError: its array digests are "
                               "unreadable: ")
  for bad in (4, 3, 2):
    assert f"checkpoint {tmp_path}/{bad} is damaged" in caplog.text


def test_a_step_saved_without_digests_restores_unverified(tmp_path, caplog):
  with caplog.at_level("WARNING"):
    step, restored, damaged = fallback.restore_newest_intact(
        str(tmp_path), [5], lambda s: arrays_at(0), arrays_of=lambda r: r, advice="")
  assert (step, damaged) == (5, {})
  np.testing.assert_array_equal(restored["b"], [0, 1, 2, 3])
  assert "has no array digests" in caplog.text and "without verifying" in caplog.text


def test_every_step_damaged_lists_each_and_the_advice(tmp_path):
  for step in (1, 2):
    save_digests(tmp_path, step)
  many = {f"a{i}": jnp.zeros(2) for i in range(5)}
  save_digests(tmp_path, 7, text=json.dumps(fallback.digests_item(many)))
  changed = {f"a{i}": jnp.ones(2) for i in range(5)}
  on_disk = {2: arrays_at(1), 7: changed}

  def restore_step(step):
    if step not in on_disk:
      raise ValueError("")
    return on_disk[step]

  with pytest.raises(CorruptCheckpointError) as error:
    fallback.restore_newest_intact(str(tmp_path), [1, 2, 7], restore_step,
                                   arrays_of=lambda r: r, advice="Start afresh.")
  problems = error.value.problems
  assert sorted(problems) == [1, 2, 7] and error.value.directory == str(tmp_path)
  assert problems[1] == "it does not read (ValueError: (no message))"
  assert problems[2].startswith("its arrays fail the digest check (")
  assert problems[7].endswith("; and 2 more)")  # 5 arrays differ: 3 shown
  message = str(error.value)
  assert message.startswith(f"no intact checkpoint in {tmp_path}; every one is damaged:\n"
                            "  step 7: ")
  assert "\n  step 2: " in message and message.endswith("\nStart afresh.")


def test_a_checkpoint_of_another_model_is_a_config_error_not_damage(tmp_path):
  save_digests(tmp_path, 3)
  read = []

  def restore_step(step):
    read.append(step)
    raise CheckpointMismatchError("another model")

  with pytest.raises(CheckpointMismatchError, match="another model"):
    fallback.restore_newest_intact(str(tmp_path), [2, 3], restore_step, arrays_of=lambda r: r,
                                   advice="")
  assert read == [3]  # no older step is tried
