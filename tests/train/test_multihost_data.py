"""Two real processes (`jax.distributed` on 127.0.0.1), each with a data directory of
its own as separate hosts have: each tokenises only its own shard of the split.

The reference is independent of the shard caches: the whole split tokenised here
(`token_cache.load_or_build`) and read as before shard caches existed, every
process taking every second document of it (`SegmentStream` with process_index).
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from memorizing_jax.data import streams, tasks, token_cache, vocab

SEGMENT, ROWS, STEPS = 16, 4, 12

# One process: the train stream's first STEPS batches and the whole eval stream,
# built by the trainer's `inputs.make_stream`, saved to <out>/process_<i>.npz.
WORKER = """
import sys
import numpy as np
from memorizing_jax.data.config import DataConfig
from memorizing_jax.train import inputs, multihost
address, index, data_dir, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
multihost.initialize(multihost.DistributedConfig(coordinator_address=address,
                                                 num_processes=2, process_id=index))
from memorizing_jax.data import vocab
config = DataConfig(task="github", vocabulary="byte", batch_size={rows},
                    eval_batch_size={rows}, data_dir=data_dir)
train = inputs.make_stream(config, {segment}, vocab.byte_vocabulary(), "train")
batches = [next(train) for _ in range({steps})]
evaluation = list(inputs.make_stream(config, {segment}, vocab.byte_vocabulary(), "eval"))
np.savez(f"{{out}}/process_{{index}}.npz",
         train_ids=np.stack([b["document_id"] for b in batches]),
         train_targets=np.stack([b["targets"] for b in batches]),
         eval_ids=np.stack([b["document_id"] for b in evaluation]),
         eval_targets=np.stack([b["targets"] for b in evaluation]))
""".format(rows=ROWS, segment=SEGMENT, steps=STEPS)


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(corpus, tmp_path_factory):
  """(folder of the processes' outputs and data dirs): the test corpus as the `github`
  task, read by 2 processes of 1 CPU device each."""
  root = tmp_path_factory.mktemp("multihost_data")
  env = dict(os.environ, MEMORIZING_JAX_GITHUB_DIR=str(tasks.get_reader(corpus[0]).root),
             XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")
  address = f"127.0.0.1:{_free_port()}"
  processes = [subprocess.Popen(
      [sys.executable, "-c", WORKER, address, str(i), str(root / f"data_{i}"), str(root)],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in (0, 1)]
  outputs = [p.communicate(timeout=300)[0] for p in processes]
  for process, output in zip(processes, outputs):
    assert process.returncode == 0, output[-3000:]
  return root


@pytest.fixture(scope="module")
def github_task(corpus):
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv("MEMORIZING_JAX_GITHUB_DIR", str(tasks.get_reader(corpus[0]).root))
    yield "github"


def _caches(data_dir):
  """{folder name: (meta, names)} of the token caches under a data dir."""
  folder = data_dir / "tokens" / "github"
  return {p.name: (json.loads((p / "meta.json").read_text()),
                   json.loads((p / "names.json").read_text())) for p in folder.iterdir()}


@pytest.mark.parametrize("split", ["train", "validation"])
def test_each_process_tokenises_only_its_shard_and_together_the_split(
    two_processes, github_task, split):
  documents = [d.name for d in tasks.get_reader(github_task).documents(split)]
  names = []
  for index in (0, 1):
    caches = {name: cached for name, cached in _caches(two_processes / f"data_{index}").items()
              if name.startswith(f"{split}-")}
    ((folder, (meta, shard_names)),) = caches.items()  # this process's shard, nothing else
    assert folder.endswith(f"-{index:05d}-of-00002")
    assert (meta["shard"], meta["num_shards"], meta["split_documents"]) == (
        index, 2, len(documents))
    assert meta["num_documents"] == len(shard_names) == len(documents[index::2])
    names.append(shard_names)
  assert not set(names[0]) & set(names[1])
  assert sorted(names[0] + names[1]) == sorted(documents)


def test_the_processes_read_what_they_read_when_each_tokenised_the_whole_split(
    two_processes, github_task, tmp_path):
  byte_vocabulary = vocab.byte_vocabulary()
  whole = {split: token_cache.load_or_build(github_task, split, byte_vocabulary, tmp_path,
                                            progress=False)
           for split in ("train", "validation")}
  outputs = [np.load(two_processes / f"process_{i}.npz") for i in (0, 1)]
  eval_steps = []
  for index, output in enumerate(outputs):
    for mode, split in (("train", "train"), ("eval", "validation")):
      cache = whole[split]
      reference = streams.SegmentStream(
          cache.tokens, cache.offsets, ROWS // 2, SEGMENT, mode=mode, process_index=index,
          process_count=2, pad_id=byte_vocabulary.pad_id, eos_id=byte_vocabulary.eos_id)
      want = [next(reference) for _ in range(STEPS if mode == "train" else
                                              reference.num_steps)]
      np.testing.assert_array_equal(output[f"{mode}_ids"],
                                    np.stack([b["document_id"] for b in want]))
      np.testing.assert_array_equal(output[f"{mode}_targets"],
                                    np.stack([b["targets"] for b in want]))
    eval_steps.append(len(output["eval_ids"]))
  # Each knew only its own documents; they agreed on the most either needed.
  lengths = whole["validation"].lengths
  assert eval_steps == [max(streams.steps_to_read(lengths[p::2], ROWS // 2, SEGMENT)
                            for p in (0, 1))] * 2
