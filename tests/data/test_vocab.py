"""Vocabularies: exact round trips, caching, the fast encoder, mismatch errors."""
import json
import pathlib

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest
import seqio

from memorizing_jax.data import data_dir as data_dir_lib
from memorizing_jax.data import vocab

CODE = ("def f(x):\n\tif x:\n\t\treturn {'é': 'Grüße', '€': '日本語', 'emoji': '😀'}\n"
        "    # four spaces, trailing spaces   \n\n\n\r\nclass  A :  pass\n")
LATEX = ("\\documentclass{article}\n\\begin{document}\n$$\\int_0^\\infty e^{-x^2}\\,dx = "
         "\\frac{\\sqrt{\\pi}}{2}$$ % comment\n\\end{document}\n")
EDGES = ["", " ", "\n", "\t\t", "  leading", "trailing  ", "a\u00a0b", "\x00\x01", "ﬁ ①"]


def test_sentencepiece_round_trips_code_and_latex_exactly(stdlib_sentencepiece):
  for text in [CODE, LATEX] + EDGES:
    ids = stdlib_sentencepiece.encode(text)
    assert stdlib_sentencepiece.decode(ids) == text
  # The learned pieces compress plain Python (fewer tokens than bytes).
  plain = "def __init__(self, name):\n    self.name = name\n    return None\n" * 3
  assert len(stdlib_sentencepiece.encode(plain)) < len(plain) * 0.5


@settings(max_examples=60, deadline=None)
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80))
def test_sentencepiece_and_bytes_round_trip_any_text(stdlib_sentencepiece, text):
  assert stdlib_sentencepiece.decode(stdlib_sentencepiece.encode(text)) == text
  byte_vocabulary = vocab.byte_vocabulary()
  assert byte_vocabulary.decode(byte_vocabulary.encode(text)) == text


@pytest.mark.parametrize("kind", ["byte", "sentencepiece"])
def test_fast_encode_equals_the_vocabulary_encode(kind, stdlib_sentencepiece):
  vocabulary = stdlib_sentencepiece if kind == "sentencepiece" else vocab.byte_vocabulary()
  for text in [CODE, LATEX] + EDGES:
    got = vocab.encode(vocabulary, text)
    assert got.dtype == np.int32
    assert got.tolist() == list(vocabulary.encode(text))


def test_sentencepiece_ids_follow_the_seqio_convention(stdlib_sentencepiece):
  assert (stdlib_sentencepiece.pad_id, stdlib_sentencepiece.eos_id,
          stdlib_sentencepiece.unk_id) == (0, 1, 2)
  assert stdlib_sentencepiece.vocab_size == 1000
  assert isinstance(stdlib_sentencepiece, seqio.SentencePieceVocabulary)


def test_trained_model_is_cached_by_its_inputs(stdlib_sentencepiece, data_dir):
  path = stdlib_sentencepiece.sentencepiece_model_file
  mtime = pathlib.Path(path).stat().st_mtime_ns
  again = vocab.get_vocabulary("python_stdlib", size=1000, data_dir=data_dir,
                               sample_bytes=300_000)
  assert again.sentencepiece_model_file == path
  assert pathlib.Path(path).stat().st_mtime_ns == mtime  # not retrained
  meta = json.loads(open(path.replace(".model", ".json")).read())
  assert meta["task"] == "python_stdlib" and meta["size"] == 1000
  other, _ = vocab.sentencepiece_model_path("python_stdlib", 1000, 300_000, 1,
                                            meta["source_fingerprint"], data_dir)
  assert str(other) != path  # another seed is another model


def test_vocabulary_of_another_task_is_an_error(stdlib_sentencepiece, tiny_sentencepiece):
  vocab.check_vocabulary_for_task(stdlib_sentencepiece, "python_stdlib")
  vocab.check_vocabulary_for_task(vocab.byte_vocabulary(), "tiny_repos")
  with pytest.raises(ValueError, match=r"trained on task 'python_stdlib', not 'tiny_repos'"):
    vocab.check_vocabulary_for_task(stdlib_sentencepiece, "tiny_repos")
  with pytest.raises(ValueError, match=r"trained on task 'tiny_repos', not 'python_stdlib'"):
    vocab.check_vocabulary_for_task(tiny_sentencepiece, "python_stdlib")
  with pytest.raises(TypeError, match="unsupported vocabulary PassThroughVocabulary"):
    vocab.check_vocabulary_for_task(seqio.PassThroughVocabulary(10), "python_stdlib")


def test_fingerprints_tell_vocabularies_apart(stdlib_sentencepiece, tiny_sentencepiece):
  prints = {vocab.vocabulary_fingerprint(v) for v in
            [stdlib_sentencepiece, tiny_sentencepiece, vocab.byte_vocabulary()]}
  assert len(prints) == 3


def test_bad_vocabulary_requests_are_clear_errors(data_dir):
  with pytest.raises(ValueError, match="unknown vocabulary kind 'wordpiece'"):
    vocab.get_vocabulary("python_stdlib", "wordpiece", data_dir=data_dir)
  with pytest.raises(ValueError, match="size 100 is too small"):
    vocab.get_vocabulary("python_stdlib", size=100, data_dir=data_dir)
  with pytest.raises(ValueError, match="unknown task 'nope'"):
    vocab.get_vocabulary("nope", data_dir=data_dir)


def test_sample_is_deterministic_and_bounded():
  texts = ["line %d\n" % i * 50 for i in range(100)]
  sample = vocab.sample_training_text(texts, 2000, seed=0)
  assert sample == vocab.sample_training_text(texts, 2000, seed=0)
  assert 0 < sum(len(line) for line in sample) <= 2000


def test_training_is_deterministic():
  """Hosts that train the same vocabulary independently must get the same model."""
  lines = [f"def function_{i}(x):\n\treturn x * {i}  # é" for i in range(300)]
  assert vocab.train_sentencepiece(lines, 400) == vocab.train_sentencepiece(lines, 400)


def test_load_sentencepiece_of_a_local_model(tiny_sentencepiece, tmp_path):
  path = tmp_path / "copy.model"
  path.write_bytes(tiny_sentencepiece.sp_model)
  loaded = vocab.load_sentencepiece(path)
  assert isinstance(loaded, seqio.SentencePieceVocabulary)
  assert loaded.sentencepiece_model_file == str(path)
  assert loaded.sp_model == tiny_sentencepiece.sp_model
  assert loaded.encode(CODE) == tiny_sentencepiece.encode(CODE)


def test_load_sentencepiece_of_a_remote_model_reads_a_local_copy_with_its_sidecar(
    tiny_sentencepiece, local_gcs, tmp_path, monkeypatch):
  monkeypatch.setenv(data_dir_lib.LOCAL_COPIES_ENV, str(tmp_path / "copies"))
  sidecar = pathlib.Path(tiny_sentencepiece.sentencepiece_model_file).with_suffix(".json")
  (local_gcs / "bucket").mkdir()
  (local_gcs / "bucket" / "sp.model").write_bytes(tiny_sentencepiece.sp_model)
  (local_gcs / "bucket" / "sp.json").write_bytes(sidecar.read_bytes())
  loaded = vocab.load_sentencepiece("gs://bucket/sp.model")
  assert loaded.sentencepiece_model_file == str(tmp_path / "copies/gs/bucket/sp.model")
  assert loaded.sp_model == tiny_sentencepiece.sp_model
  assert (tmp_path / "copies/gs/bucket/sp.json").read_bytes() == sidecar.read_bytes()
  assert vocab.sentencepiece_metadata(loaded) == json.loads(sidecar.read_text())


def test_sentencepiece_metadata_is_the_sidecar_of_a_locally_trained_model(tiny_sentencepiece,
                                                                        tiny_task, tmp_path):
  sidecar = pathlib.Path(tiny_sentencepiece.sentencepiece_model_file).with_suffix(".json")
  metadata = vocab.sentencepiece_metadata(tiny_sentencepiece)
  assert metadata == json.loads(sidecar.read_text())
  assert metadata["task"] == tiny_task and metadata["size"] == 400
  assert metadata["sample_bytes"] == 100_000 and metadata["seed"] == 0
  # Without a sidecar (a model trained elsewhere), and for bytes: nothing known.
  (tmp_path / "bare.model").write_bytes(tiny_sentencepiece.sp_model)
  assert vocab.sentencepiece_metadata(vocab.load_sentencepiece(tmp_path / "bare.model")) is None
  assert vocab.sentencepiece_metadata(vocab.byte_vocabulary()) is None
