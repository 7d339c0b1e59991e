"""DataConfig reaches the data pipeline: binary files of a folder corpus are skipped
unless the run asks to keep them."""
from memorizing_jax.data import tasks, vocab
from memorizing_jax.train import inputs


def test_keep_binary_files_reaches_the_stream(tmp_path):
  root = tmp_path / "corpus"
  for split in ("train", "validation", "test"):
    (root / split).mkdir(parents=True)
  (root / "train" / "a.py").write_bytes(b"x = 1\n")
  (root / "train" / "b.so").write_bytes(bytes(range(256)) * 4)
  tasks.register_folder_task("inputs_binary", "file", root=str(root))
  byte_vocabulary = vocab.get_vocabulary("inputs_binary", kind="byte")

  def documents(keep):
    config = inputs.DataConfig(task="inputs_binary", vocabulary="byte", batch_size=1,
                               eval_batch_size=1, data_dir=str(tmp_path / f"data_{keep}"),
                               keep_binary_files=keep)
    (stream,) = inputs.make_stream(config, 8, byte_vocabulary, "train").streams.values()
    return sorted(stream.document_names)

  assert documents(False) == ["a.py"]
  assert documents(True) == ["a.py", "b.so"]
