"""The synthetic recall task against hand-computed references and brute force."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from memorizing_jax.data import synthetic
from memorizing_jax.data.streams import SegmentStream

SMALL = synthetic.SyntheticConfig(num_names=6, num_uses=20, train_documents=5,
                                  eval_documents=3, name_length=2, separator="=")


def test_annotate_hand_computed():
  #        0123456789012345
  text = "a=K;b=T;c=U;a=K;"
  assert synthetic.annotate(text) == [
      synthetic.Recall(2, -1, "K"), synthetic.Recall(6, -1, "T"),
      synthetic.Recall(10, -1, "U"), synthetic.Recall(14, 2, "K")]


def test_classify_hand_computed():
  use = synthetic.Recall(14, 2, "K")  # source at input 3, query at input 14
  # L = 4: the query's segment is 3, the XL window segments 2..3 (inputs 8..15).
  assert synthetic.classify(use, 4) == synthetic.FAR
  # L = 8: the query's segment is 1, the window is segments 0..1: the source is in it.
  assert synthetic.classify(use, 8) == synthetic.NEAR
  assert synthetic.classify(synthetic.Recall(2, -1, "K"), 4) == synthetic.DEFINITION


def test_default_format():
  text = synthetic.generate_document(synthetic.SyntheticConfig(), "train", 0)
  assert all(len(s) == 2 and s[0].islower() and s[1].isupper()
             for s in text.split(";")[:-1])
  assert synthetic.annotate("aK;bT;aK;")[2] == synthetic.Recall(7, 1, "K")


def test_document_structure():
  text = synthetic.generate_document(SMALL, "train", 3)
  statements = text.split(";")[:-1]
  assert len(text) == SMALL.document_length
  assert len(statements) == SMALL.num_names + SMALL.num_uses
  names = [s[:-1] for s in statements]
  values = [s[-1] for s in statements]
  assert len(set(names[:SMALL.num_names])) == SMALL.num_names  # distinct definitions
  assert set(names[SMALL.num_names:]) <= set(names[:SMALL.num_names])  # uses are defined
  defined = dict(zip(names[:SMALL.num_names], values[:SMALL.num_names]))
  for name, value in zip(names, values):
    assert name[:SMALL.name_length].islower() and name[SMALL.name_length:] == "="
    assert value == defined[name] and value in synthetic.VALUES


def test_determinism_and_disjoint_splits():
  a = synthetic.generate_document(SMALL, "train", 1)
  assert a == synthetic.generate_document(SMALL, "train", 1)
  assert a != synthetic.generate_document(SMALL, "train", 2)
  assert a != synthetic.generate_document(SMALL, "validation", 1)
  other_seed = synthetic.SyntheticConfig(**{**SMALL.__dict__, "seed": 1})
  assert a != synthetic.generate_document(other_seed, "train", 1)


def test_reader_and_task():
  reader = synthetic.SyntheticReader(SMALL, "synthetic_small")
  docs = list(reader.documents("validation"))
  assert [d.name for d in docs] == [f"synthetic_small/validation/{i:06d}" for i in range(3)]
  assert len(list(reader.documents("train"))) == 5
  assert reader.fingerprint("train") != reader.fingerprint("validation")
  with pytest.raises(ValueError, match="unknown split"):
    list(reader.documents("dev"))


def test_seqio_registration():
  from memorizing_jax.data import synthetic_task, tasks  # imports TensorFlow (slow)
  synthetic_task.register("synthetic_small", SMALL)
  assert tasks.get_reader("synthetic_small").config == SMALL
  assert isinstance(tasks.get_reader(synthetic.TASK_NAME), synthetic.SyntheticReader)


@settings(max_examples=30, deadline=None)
@given(index=st.integers(0, 1000), segment_length=st.sampled_from([4, 8, 16, 32]))
def test_far_means_outside_the_xl_window(index, segment_length):
  """Brute force: list the inputs a model with an XL cache sees from each query."""
  text = synthetic.generate_document(SMALL, "train", index)
  for recall in synthetic.annotate(text):
    kind = synthetic.classify(recall, segment_length)
    if recall.source < 0:
      assert kind == synthetic.DEFINITION
      continue
    query = recall.position  # input index that predicts the value (document char + 1 - 1)
    segment = query // segment_length
    visible = set(range(max(segment - 1, 0) * segment_length, query + 1))
    assert (kind == synthetic.FAR) == (recall.source + 1 not in visible)
    if kind == synthetic.FAR:
      assert recall.position - recall.source > segment_length


def test_default_task_has_far_and_near_uses():
  config = synthetic.SyntheticConfig()
  kinds = [synthetic.classify(r, 64)
           for r in synthetic.annotate(synthetic.generate_document(config, "validation", 0))]
  assert kinds.count(synthetic.DEFINITION) == config.num_names
  assert kinds.count(synthetic.FAR) > 40 and kinds.count(synthetic.NEAR) > 20


def test_stream_coordinates_match_annotation():
  """Through the real SegmentStream and byte ids, a value sits where annotate says."""
  texts = [synthetic.generate_document(SMALL, "validation", i) for i in range(3)]
  ids = [np.frombuffer(t.encode(), np.uint8).astype(np.int32) + 3 for t in texts]
  offsets = np.cumsum([0] + [len(x) for x in ids])
  stream = SegmentStream(np.concatenate(ids), offsets, 2, 16, mode="eval")
  seen = 0
  for batch in stream:
    for row, doc in enumerate(batch["document_id"].tolist()):
      if doc < 0:
        continue
      for recall in synthetic.annotate(texts[doc]):
        j = recall.position - int(batch["token_offset"][row])
        if 0 <= j < 16:
          assert batch["targets"][row, j] == ord(recall.value) + 3
          # The input at the predicting position is the character before the value.
          assert batch["inputs"][row, j] == ord(texts[doc][recall.position - 1]) + 3
          seen += 1
  assert seen == sum(len(synthetic.annotate(t)) for t in texts)


def test_recent_uses():
  only_last = synthetic.SyntheticConfig(num_names=5, num_uses=7, recent_share=1.0,
                                        recent_names=1)
  statements = synthetic.generate_document(only_last, "train", 0).split(";")[:-1]
  assert statements[5:] == [statements[4]] * 7  # every use repeats the last definition
  two = synthetic.SyntheticConfig(num_names=5, num_uses=50, recent_share=1.0,
                                  recent_names=2)
  names = [s[:-1] for s in synthetic.generate_document(two, "train", 0).split(";")[:-1]]
  for i in range(5, len(names)):  # each use names one of the 2 latest distinct names
    assert names[i] in list(dict.fromkeys(reversed(names[:i])))[:2]
  assert len(set(names[5:])) > 1
  with pytest.raises(ValueError, match="separator"):
    synthetic.SyntheticConfig(separator="x")
  with pytest.raises(ValueError, match="recent_share"):
    synthetic.SyntheticConfig(recent_share=1.5)


def test_repeat_name_format():
  #        012345678901
  text = "aKa;bTb;aKa;"
  assert synthetic.annotate(text) == [
      synthetic.Recall(1, -1, "K"), synthetic.Recall(5, -1, "T"), synthetic.Recall(9, 1, "K")]
  config = synthetic.SyntheticConfig(num_names=3, num_uses=4, repeat_name=True,
                                     recent_names=2)
  statements = synthetic.generate_document(config, "train", 0).split(";")[:-1]
  assert config.statement_length == 4 and config.value_index == 1
  assert all(len(s) == 3 and s[0] == s[2] and s[1].isupper() for s in statements)


def test_num_documents_is_train_documents_for_train_and_eval_documents_otherwise():
  config = synthetic.SyntheticConfig(train_documents=7, eval_documents=2)
  assert [config.num_documents(s) for s in ("train", "validation", "test")] == [7, 2, 2]
  reader = synthetic.SyntheticReader(config)
  assert [len(list(reader.documents(s))) for s in ("train", "validation", "test")] == [7, 2, 2]
