"""Decoding, directory walks and joining files (pure Python)."""
import pytest

from memorizing_jax.data import documents


def test_decode_utf8_valid_text_is_unchanged():
  text = "tabs\tand\nnewlines, unicode é€😀 and a genuine \ufffd"
  assert documents.decode_utf8(text.encode("utf-8")) == (text, 0)


@pytest.mark.parametrize("data,expected_text,expected_replaced", [
    (b"ab\xffcd", "ab\ufffdcd", 1),
    (b"\xff\xfe", "\ufffd\ufffd", 2),
    (b"x\xe2\x82", "x\ufffd", 1),  # a truncated 3-byte sequence is one replacement
    (b"\xef\xbf\xbd\xff", "\ufffd\ufffd", 1),  # the genuine U+FFFD is not counted
])
def test_decode_utf8_replaces_and_counts_undecodable_bytes(data, expected_text,
                                                           expected_replaced):
  assert documents.decode_utf8(data) == (expected_text, expected_replaced)


def test_walk_files_keeps_subdirectories_together(tmp_path):
  for rel in ["b.py", "a.py", "z/one.py", "z/deep/two.py", "m/three.py", "m/four.txt",
              ".hidden/x.py", "__pycache__/c.pyc", ".dotfile"]:
    (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / rel).write_text(rel)
  assert documents.walk_files(tmp_path) == [
      "a.py", "b.py", "m/four.txt", "m/three.py", "z/one.py", "z/deep/two.py"]
  assert documents.walk_files(tmp_path, (".py",)) == [
      "a.py", "b.py", "m/three.py", "z/one.py", "z/deep/two.py"]


def test_join_files_puts_a_newline_between_files_that_need_one():
  assert documents.join_files(["a\n", "b", "", "c\n\n", "d"]) == "a\nb\nc\n\nd"
  assert documents.join_files(["no newline"]) == "no newline"


def test_iter_nonempty_skips_and_counts_empty_documents():
  report = documents.ReadReport()
  named = [("a", lambda: "x"), ("b", lambda: ""), ("c", lambda: " \n\t"), ("d", lambda: "y")]
  kept = list(documents.iter_nonempty(named, report))
  assert [d.name for d in kept] == ["a", "d"]
  assert report.documents == 2 and report.skipped_empty == 2


@pytest.mark.parametrize("name,skipped", [
    (".git", True), (".hg", True), (".svn", True), ("__pycache__", True),
    (".hidden", True), (".env.py", True),
    ("git", False), ("src", False), ("a.py", False), ("__init__.py", False),
    ("_private.py", False), ("pycache", False)])
def test_is_skipped_name(name, skipped):
  assert documents.is_skipped_name(name) is skipped


def test_read_joined_joins_the_files_kept_in_the_given_order(tmp_path):
  (tmp_path / "a.txt").write_bytes(b"one")  # no trailing newline
  (tmp_path / "b.so").write_bytes(b"\x7fELF" + b"\0" * 60)
  (tmp_path / "sub").mkdir()
  (tmp_path / "sub" / "c.txt").write_bytes(b"two\n")
  report = documents.ReadReport()
  text = documents.read_joined(tmp_path, ["sub/c.txt", "b.so", "a.txt"], report)
  assert text == "two\none"
  assert report.skipped_binary == 1 and report.replaced_characters == 0
  kept = documents.read_joined(tmp_path, ["a.txt", "b.so"], documents.ReadReport(),
                               keep_binary_files=True)
  assert kept == "one\n\x7fELF" + "\0" * 60


def test_read_joined_is_none_only_when_every_file_was_skipped(tmp_path, caplog):
  (tmp_path / "b.so").write_bytes(b"\0" * 10)
  report = documents.ReadReport()
  assert documents.read_joined(tmp_path, ["b.so", "missing.txt"], report) is None
  assert (report.skipped_binary, report.skipped_unreadable) == (1, 1)
  assert "missing.txt" in caplog.text
  assert documents.read_joined(tmp_path, [], report) == ""  # no files: an empty document


@pytest.mark.parametrize("counts, problems", [
    ({}, False),
    ({"documents": 5, "skipped_empty": 2, "skipped_short": 3}, False),  # not about bytes
    ({"skipped_binary": 1}, True),
    ({"skipped_undecodable": 1}, True),
    ({"skipped_unreadable": 1}, True),
    ({"replaced_characters": 2, "documents_with_replacements": 1}, True),
])
def test_read_report_has_problems_only_for_skipped_or_replaced_bytes(counts, problems):
  assert documents.ReadReport(**counts).has_problems is problems
