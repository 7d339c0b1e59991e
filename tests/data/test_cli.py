"""`python -m memorizing_jax.data`: JSON statistics and a decoded sample."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from memorizing_jax.data import __main__ as cli
from memorizing_jax.data import tasks
from tests.data.corpora import write_tree
from tests.data.test_pipeline import EXPECTED_TRAIN


def run_cli(capsys, *argv):
  assert cli.main(list(argv)) == 0
  return json.loads(capsys.readouterr().out)


def test_stats_count_documents_and_tokens(capsys, tiny_task, data_dir):
  result = run_cli(capsys, "--task", tiny_task, "--stats", "--split", "train",
                   "--data_dir", str(data_dir), "--no_progress")
  lengths = sorted(len(text.encode("utf-8")) for text in EXPECTED_TRAIN.values())
  train = result["splits"]["train"]
  assert train["documents"] == 4 and train["tokens"] == sum(lengths)
  assert train["tokens_per_document"]["q00"] == lengths[0]
  assert train["tokens_per_document"]["q100"] == lengths[-1]
  assert train["tokens_per_document"]["mean"] == np.mean(lengths)
  assert train["read_report"]["skipped_empty"] == 0
  assert result["vocabulary"] == {"kind": "byte", "size": 259, "fingerprint": "byte-extra0"}


def test_sample_decodes_the_first_segment(capsys, tiny_task, data_dir):
  result = run_cli(capsys, "--task", tiny_task, "--sample", "--split", "train",
                   "--sample_length", "12", "--data_dir", str(data_dir))
  assert result["sample"]["train"]["text"] == EXPECTED_TRAIN["alpha"][:12]


def test_corpus_dir_points_a_folder_task_at_a_folder(capsys, tmp_path, data_dir):
  write_tree(tmp_path / "repos" / "train", {"r1": {"a.py": b"x = 1\n"}, "r2": {"b.py": b"y\n"}})
  for split in ("validation", "test"):
    (tmp_path / "repos" / split).mkdir()
  try:
    result = run_cli(capsys, "--task", "github", "--corpus_dir", str(tmp_path / "repos"),
                     "--stats", "--split", "train", "--data_dir", str(data_dir))
  finally:
    tasks.register_default_tasks()  # --corpus_dir re-registered github in this process.
  assert result["splits"]["train"]["documents"] == 2
  assert result["splits"]["train"]["tokens"] == len("x = 1\n") + len("y\n")


def test_python_stdlib_stats_from_the_command_line(tmp_path):
  env = dict(os.environ, MEMORIZING_JAX_DATA_DIR=str(tmp_path))
  out = subprocess.run(
      [sys.executable, "-m", "memorizing_jax.data", "--task", "python_stdlib", "--stats",
       "--split", "validation"], env=env, capture_output=True, text=True, check=True).stdout
  stats = json.loads(out)["splits"]["validation"]
  assert stats["documents"] > 0 and stats["tokens"] > stats["documents"]
  assert stats["cache"].startswith(str(tmp_path))


def test_read_steps_counts_what_the_training_stream_reads(capsys, tiny_task, data_dir):
  # One row of 8 targets reads a document of n bytes (plus its EOS) in ceil((n + 1) / 8)
  # steps, one document after another: the whole first epoch takes the sum of those.
  lengths = {name: len(text.encode("utf-8")) + 1 for name, text in EXPECTED_TRAIN.items()}
  epoch = sum(-(-n // 8) for n in lengths.values())
  common = ("--task", tiny_task, "--data_dir", str(data_dir), "--batch_size", "1",
            "--segment_length", "8")
  reading = run_cli(capsys, *common, "--read_steps", str(epoch))["reading"]
  assert reading["documents"] == 4 and reading["tokens"] == sum(lengths.values())
  assert {d["name"]: d["tokens"] for d in reading["top"]} == lengths
  assert reading["top"][0]["tokens"] == max(lengths.values())
  assert sum(d["share"] for d in reading["top"]) == pytest.approx(1.0)
  # The last step alone: one segment of the epoch's last document.
  last = run_cli(capsys, *common, "--read_steps", str(epoch), "--read_from",
                 str(epoch - 1))["reading"]
  assert last["steps"] == [epoch - 1, epoch] and last["documents"] == 1
  assert 1 <= last["tokens"] <= 8


def test_repeats_share_the_tokens_by_how_far_back_copying_finds_them(capsys, tiny_task,
                                                                    data_dir):
  from tests.data.test_repeats import naive_copy  # pylint: disable=g-import-not-at-top
  result = run_cli(capsys, "--task", tiny_task, "--data_dir", str(data_dir), "--repeats",
                   "--split", "train", "--repeat_context", "1", "--repeat_edges", "10,3")
  found = result["repeats"]["train"]
  # Brute force over the documents' bytes (copying does not depend on the ids' offset).
  right, wrong, total = [0, 0, 0], [0, 0, 0], 0
  for text in EXPECTED_TRAIN.values():
    tokens = list(text.encode("utf-8"))
    total += len(tokens)
    for t in range(len(tokens)):
      distance, correct = naive_copy(tokens, t, 1)
      if distance > 0:
        band = 0 if distance <= 3 else 1 if distance <= 10 else 2
        (right if correct else wrong)[band] += 1
  assert found["context"] == 1 and found["tokens"] == total
  names = ["<=3", "3-10", ">10"]
  assert [found["copied_right"][n] for n in names] == pytest.approx([c / total for c in right])
  assert [found["copied_wrong"][n] for n in names] == pytest.approx([c / total for c in wrong])
  assert sum(right) > 0 and sum(wrong) > 0
  # Every token is counted once: without a guess, or guessed right or wrong in one band.
  assert found["copied_right"]["none"] == found["copied_wrong"]["none"]
  assert found["copied_right"]["none"] + (sum(right) + sum(wrong)) / total == pytest.approx(1)
  assert sum(found["repeated"].values()) == pytest.approx(1)


@pytest.mark.parametrize("argv,message", [
    (("--read_steps", "5", "--read_from", "5"), "--read_from must be in [0, --read_steps)"),
    (("--read_steps", "5", "--batch_size", "0"), "--batch_size and --segment_length must"),
    (("--read_from", "2"), "nothing to do"),
    (("--repeats", "--repeat_edges", "1,x"), "--repeat_edges must be comma-separated"),
    (("--repeats", "--repeat_context", "-1"), "--repeat_context must be >= 0")])
def test_read_steps_bad_arguments(capsys, argv, message):
  with pytest.raises(SystemExit) as raised:
    cli.main(list(argv))
  assert raised.value.code == 2
  assert message in capsys.readouterr().err


def one_line_error(capsys, argv, exit_code):
  """Runs the CLI expecting a failure: its stderr, checked to be one line, no traceback."""
  assert cli.main(list(argv)) == exit_code
  captured = capsys.readouterr()
  assert captured.out == ""
  lines = captured.err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("python -m memorizing_jax.data: error: ")
  return lines[0]


def test_an_unknown_task_is_a_one_line_usage_error(capsys, data_dir):
  line = one_line_error(capsys, ["--task", "no_such_task", "--stats",
                                 "--data_dir", str(data_dir)], 2)
  assert "unknown task 'no_such_task'" in line and "'python_stdlib'" in line


def test_a_missing_corpus_folder_is_a_one_line_error(capsys, tmp_path, monkeypatch, data_dir):
  missing = tmp_path / "not_here"
  line = one_line_error(capsys, ["--task", "github", "--corpus_dir", str(missing), "--stats"], 2)
  assert line.endswith(f"--corpus_dir {missing} is not a folder")
  monkeypatch.setenv("MEMORIZING_JAX_GITHUB_DIR", str(missing))
  line = one_line_error(capsys, ["--task", "github", "--stats", "--vocab", "byte",
                                 "--data_dir", str(data_dir)], 1)
  assert f"corpus folder for task 'github' not found: {missing}" in line
  assert "$MEMORIZING_JAX_GITHUB_DIR" in line


def test_errors_from_the_command_line_have_no_traceback(tmp_path):
  """The entry point itself, in a new process (about 7 s: TensorFlow's import), on an
  error found while running; the usage errors' lines are checked in-process above."""
  env = dict(os.environ, MEMORIZING_JAX_DATA_DIR=str(tmp_path),
             MEMORIZING_JAX_ARXIV_DIR=str(tmp_path / "missing"))
  done = subprocess.run([sys.executable, "-m", "memorizing_jax.data", "--task", "arxiv",
                         "--stats", "--vocab", "byte"], env=env, capture_output=True, text=True)
  assert done.returncode == 1
  assert "Traceback" not in done.stderr and "corpus folder for task 'arxiv'" in done.stderr


def test_keep_binary_files_counts_and_reads_them(capsys, tmp_path, data_dir):
  folder = tmp_path / "corpus"
  write_tree(folder / "train", {"r": {"a.py": b"x = 1\n", "b.so": bytes(range(256)) * 4}})
  for split in ("validation", "test"):
    (folder / split).mkdir()
  tasks.register_folder_task("tiny_binary", "directory", root=folder)
  argv = ["--task", "tiny_binary", "--stats", "--split", "train", "--data_dir", str(data_dir)]
  skipped = run_cli(capsys, *argv)["splits"]["train"]
  assert skipped["tokens"] == len(b"x = 1\n")
  assert skipped["read_report"]["skipped_binary"] == 1
  kept = run_cli(capsys, *argv, "--keep_binary_files")["splits"]["train"]
  # a.py, a newline, then b.so decoded: 128 * 4 U+FFFD of 3 bytes and 128 * 4 ASCII bytes.
  assert kept["tokens"] == len(b"x = 1\n") + 128 * 4 * 3 + 128 * 4
  assert kept["read_report"]["skipped_binary"] == 0
  assert kept["read_report"]["replaced_characters"] == 128 * 4


def test_fail_prints_one_argparse_style_line_and_returns_the_exit_code(capsys):
  error = FileNotFoundError("corpus folder not found:\n  /data/x  (from\t$X)")
  assert cli.fail(error, 1) == 1
  assert cli.fail("bad\nusage", 2) == 2
  captured = capsys.readouterr()
  assert captured.out == ""
  assert captured.err == ("python -m memorizing_jax.data: error: corpus folder not found: "
                          "/data/x (from $X)\n"
                          "python -m memorizing_jax.data: error: bad usage\n")
