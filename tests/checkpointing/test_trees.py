"""Leaf names as orbax stores them, and a stored tree compared with a wanted one."""
import jax
import pytest

from memorizing_jax.checkpointing import trees


def leaf(*shape):
  return jax.ShapeDtypeStruct(shape, "float32")


STORED = {"params.a": leaf(2, 3), "params.b": leaf(4), "params.old": leaf(1), "step": leaf()}
WANTED = {"params.a": leaf(2, 3), "params.b": leaf(5), "params.new": leaf(7), "step": leaf()}


def test_names_are_dotted_paths():
  tree = {"params": {"layer_0": {"kernel": 1}}, "memories": (2, 3)}
  assert trees.flatten_with_names(tree) == {"params.layer_0.kernel": 1, "memories.0": 2,
                                            "memories.1": 3}


def test_compare_sorts_every_name_into_one_list():
  assert trees.compare(STORED, WANTED) == trees.TreeComparison(
      matching=["params.a", "step"], missing=["params.new"], reshaped=["params.b"],
      unused=["params.old"])
  assert trees.compare(STORED, STORED).matching == sorted(STORED)


def test_differences_read_as_sentences():
  assert trees.tree_differences(STORED, WANTED) == [
      "params.new: not in the checkpoint (shape (7,))",
      "params.old: in the checkpoint but not in the model",
      "params.b: checkpoint shape (4,), model shape (5,)"]
  assert trees.tree_differences(STORED, STORED) == []


def test_check_fits_names_the_checkpoint_the_differences_and_the_advice():
  trees.check_fits(STORED, STORED, "c/3")
  trees.check_fits(STORED, {"params.a": leaf(2, 3)}, "c/3", ignore_unused=True)
  with pytest.raises(trees.CheckpointMismatchError) as error:
    trees.check_fits(STORED, WANTED, "c/3", advice="Use init_from.", ignore_unused=True)
  assert str(error.value) == (
      "the checkpoint c/3 does not fit the configured model:\n"
      "  params.new: not in the checkpoint (shape (7,))\n"
      "  params.b: checkpoint shape (4,), model shape (5,)\n"
      "Use init_from.")
  many = {f"p{i:02d}": leaf(1) for i in range(25)}
  with pytest.raises(trees.CheckpointMismatchError, match=r"p19: not in .*\n  \.\.\.$"):
    trees.check_fits({}, many, "c/3")
