"""`LoadedModel`'s token handling and description (`inference/loaded_model.py`), on a
seqio byte vocabulary: nothing is loaded or compiled (score, generate and explain
are tested on a trained run in test_inference.py and test_batched_inference.py)."""
import numpy as np
import pytest
import seqio

from memorizing_jax.inference.loaded_model import LoadedModel
from memorizing_jax.model import ModelConfig


def _model(**changes):
  config = dict(vocab_size=264, num_layers=2, d_model=32, num_heads=2, head_dim=16,
                mlp_dim=64, segment_length=16, knn_layers=(-1,), knn_k=4, memory_slots=64)
  return LoadedModel(config=ModelConfig(**{**config, **changes}), params=None,
                     vocabulary=seqio.ByteVocabulary(), step=6, workdir="/runs/tiny")


def test_encode_gives_int32_ids_of_a_str_or_the_ids_themselves():
  m = _model()
  ids = m.encode("hé!")
  assert ids.dtype == np.int32 and ids.tolist() == [104 + 3, 0xC3 + 3, 0xA9 + 3, 33 + 3]
  for given in ([5, 263], np.array([5, 263], np.int64), (5, 263)):
    got = m.encode(given)
    assert got.dtype == np.int32 and got.tolist() == [5, 263]
  assert m.encode([]).shape == (0,) and m.encode("").shape == (0,)


@pytest.mark.parametrize("text, error, message", [
    ([3, 264], ValueError, r"^prompt: token id 264 is outside the model's \[0, 264\) ids$"),
    ([-2], ValueError, r"^prompt: token id -2 is outside"),
    (np.zeros((2, 2), np.int32), ValueError, r"^prompt: token ids must have shape \[n\]"),
    (b"ab", TypeError, r"^prompt must be a str, or token ids.*got bytes"),
    ([[1, 2], [3]], TypeError, r"ragged nested sequence"),
    (2.5, TypeError, r"got float$"),
])
def test_encode_rejects_what_is_not_a_text_naming_it(text, error, message):
  with pytest.raises(error, match=message):
    _model().encode(text, what="prompt")


def test_decode_pieces_and_special_ids():
  m = _model()
  ids = m.encode("a\nb")
  assert m.decode(ids) == "a\nb" and m.decode(np.asarray(ids)) == "a\nb"
  # Ids the model has (264) beyond the vocabulary's (259) are shown as <id>.
  assert m.pieces([*ids, 259, 263]) == ["a", "\n", "b", "<259>", "<263>"]
  assert (m.pad_id, m.eos_id) == (0, 1)
  assert isinstance(m.pad_id, int) and isinstance(m.eos_id, int)


def test_repr_describes_the_run():
  assert repr(_model()) == ("LoadedModel(/runs/tiny step 6: 2 layers, d_model 32, segments of "
                            "16 + XL cache, kNN layers (1,) x 64 slots, k=4, vocabulary of 259)")
  assert repr(_model(use_xl_cache=False, knn_layers=())) == (
      "LoadedModel(/runs/tiny step 6: 2 layers, d_model 32, segments of 16, no memory, "
      "vocabulary of 259)")
