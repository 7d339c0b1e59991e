"""Document readers: folder modes, splits, the Python stdlib, bad input."""
import errno
import hashlib
import os
import pathlib
import sysconfig

import pytest

from memorizing_jax.data import documents
from memorizing_jax.data import sources
from tests.data.corpora import TINY_REPOS, write_tree


def _texts(reader, split, **kwargs):
  return {d.name: d.text for d in reader.documents(split, **kwargs)}


def test_directory_mode_joins_files_in_walk_order(tiny_repos):
  reader = sources.FolderReader("t", "directory", root=tiny_repos)
  docs = _texts(reader, "train")
  assert list(docs) == ["alpha", "beta", "epsilon", "gamma"]
  # Hand-written: README, then src/ (main.py, then util/), then tests/; newline added
  # after the file that lacks one.
  assert docs["alpha"] == ("# alpha\n" "def main():\n\treturn 1\n"
                           "X = 'é€'  # unicode\n" "assert True")
  assert docs["beta"] == "\\section{Intro}\n$\\alpha^2 + \\beta_i$\n\\begin{equation} x \\end{equation}\n"
  assert list(_texts(reader, "validation")) == ["delta"]
  assert list(_texts(reader, "test")) == ["gamma"]


def test_file_mode_makes_each_file_a_document(tiny_repos):
  reader = sources.FolderReader("t", "file", root=tiny_repos)
  docs = _texts(reader, "train")
  assert docs["alpha/tests/test_main.py"] == "assert True"
  assert docs["beta/b.tex"] == "\\begin{equation} x \\end{equation}\n"
  assert len(docs) == sum(len(TINY_REPOS[k]) for k in ("alpha", "beta", "gamma", "epsilon"))


def test_ordered_mode_concatenates_in_the_listed_order(tmp_path):
  write_tree(tmp_path, {"lib": {"A.thy": b"theory A\n", "B.thy": b"theory B\n",
                                "sub/C.thy": b"theory C", "ROOT": b"unlisted\n",
                                "ORDER": b"# dependency order\nsub/C.thy\n\nB.thy\nA.thy\n"}})
  reader = sources.FolderReader("t", "ordered", root=tmp_path)
  names = [n for s in sources.SPLITS for n in _texts(reader, s)]
  assert names == ["lib"]
  text = next(d.text for s in sources.SPLITS for d in reader.documents(s))
  assert text == "theory C\ntheory B\ntheory A\n"


def test_ordered_mode_errors_name_the_missing_files(tmp_path):
  write_tree(tmp_path, {"lib": {"A.thy": b"x"}})
  reader = sources.FolderReader("t", "ordered", root=tmp_path)
  with pytest.raises(FileNotFoundError, match=r"lib/ORDER is missing"):
    reader.fingerprint(sources.split_of("lib"))
  (tmp_path / "lib" / "ORDER").write_text("A.thy\nB.thy\n")
  with pytest.raises(FileNotFoundError, match=r"lists 'B.thy'"):
    reader.fingerprint(sources.split_of("lib"))


def test_without_split_folders_documents_split_by_name_hash(tmp_path):
  tree = {f"repo{i}": {"f.py": b"x = %d\n" % i} for i in range(60)}
  write_tree(tmp_path, tree)
  reader = sources.FolderReader("t", "directory", root=tmp_path)
  by_split = {s: list(_texts(reader, s)) for s in sources.SPLITS}
  all_names = [n for s in sources.SPLITS for n in by_split[s]]
  assert sorted(all_names) == sorted(tree)  # disjoint and complete
  for split, names in by_split.items():
    assert all(sources.split_of(n) == split for n in names)
  assert len(by_split["train"]) > len(by_split["validation"])


def test_missing_folder_error_names_the_path_and_the_fix(tmp_path, monkeypatch):
  missing = tmp_path / "no_such_corpus"
  with pytest.raises(FileNotFoundError, match=str(missing)):
    list(sources.FolderReader("t", "file", root=missing).documents("train"))
  monkeypatch.setenv("MEMORIZING_JAX_MYCORPUS_DIR", str(missing))
  with pytest.raises(FileNotFoundError, match=r"MEMORIZING_JAX_MYCORPUS_DIR"):
    sources.FolderReader("mycorpus", "file").fingerprint("train")
  monkeypatch.delenv("MEMORIZING_JAX_MYCORPUS_DIR")
  with pytest.raises(FileNotFoundError, match=str(tmp_path / "corpora" / "mycorpus")):
    sources.FolderReader("mycorpus", "file").fingerprint("train", data_dir=tmp_path)


def test_folder_is_found_through_the_environment(tmp_path, monkeypatch):
  write_tree(tmp_path / "train", {"r": {"a.txt": b"hello\n"}})
  for split in ("validation", "test"):
    (tmp_path / split).mkdir()
  monkeypatch.setenv("MEMORIZING_JAX_MYCORPUS_DIR", str(tmp_path))
  assert _texts(sources.FolderReader("mycorpus", "directory"), "train") == {"r": "hello\n"}


def test_env_var_is_the_upper_cased_task_name_and_names_the_folder(tmp_path, monkeypatch):
  assert sources.FolderReader("github", "directory").env_var == "MEMORIZING_JAX_GITHUB_DIR"
  reader = sources.FolderReader("My_Corpus2", "file")
  assert reader.env_var == "MEMORIZING_JAX_MY_CORPUS2_DIR"
  monkeypatch.setenv("MEMORIZING_JAX_MY_CORPUS2_DIR", str(tmp_path))
  assert str(reader.folder()) == str(tmp_path)
  # A root given at registration wins over the variable.
  root = tmp_path / "given"
  root.mkdir()
  assert str(sources.FolderReader("My_Corpus2", "file", root=root).folder()) == str(root)


def test_empty_and_undecodable_documents_are_counted(tmp_path):
  # "bad": 2 undecodable bytes in 212, under documents.UNDECODABLE_SHARE: kept, replaced.
  padding = b"fine line\n" * 20
  write_tree(tmp_path / "train", {"empty": {"a.txt": b""}, "blank": {"b.txt": b" \n\n"},
                                  "bad": {"c.txt": b"ok \xff\xfe ok\n" + padding},
                                  "good": {"d.txt": b"x"}})
  report = documents.ReadReport()
  docs = _texts(sources.FolderReader("t", "directory", root=tmp_path), "train", report=report)
  assert docs == {"bad": "ok \ufffd\ufffd ok\n" + padding.decode(), "good": "x"}
  assert report.as_dict() == dict(documents=2, skipped_empty=2, skipped_short=0,
                                  skipped_binary=0, skipped_undecodable=0,
                                  skipped_unreadable=0, documents_with_replacements=1,
                                  replaced_characters=2)


def test_unknown_split_and_mode_are_errors(tiny_repos):
  with pytest.raises(ValueError, match="unknown split 'dev'"):
    sources.FolderReader("t", "file", root=tiny_repos).fingerprint("dev")
  with pytest.raises(ValueError, match="unknown folder mode 'tree'"):
    sources.FolderReader("t", "tree", root=tiny_repos)


def test_fingerprint_changes_when_a_file_changes(tmp_path):
  write_tree(tmp_path, {"r": {"a.txt": b"one\n"}})
  reader = sources.FolderReader("t", "directory", root=tmp_path)
  split = sources.split_of("r")
  before = reader.fingerprint(split)
  assert reader.fingerprint(split) == before
  (tmp_path / "r" / "a.txt").write_bytes(b"three\n")
  assert reader.fingerprint(split) != before


def test_python_stdlib_one_document_per_package_and_module():
  reader = sources.PythonStdlibReader()
  stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
  # Independent listing: packages (folders with __init__.py) and top-level modules.
  expected = set()
  for entry in os.listdir(stdlib):
    path = stdlib / entry
    if entry == "test" or entry.startswith("."):
      continue
    if (path / "__init__.py").is_file() or (path.is_file() and entry.endswith(".py")):
      expected.add(entry)
  by_split = {s: list(_texts(reader, s)) for s in sources.SPLITS}
  names = [n for s in sources.SPLITS for n in by_split[s]]
  assert len(names) == len(set(names))
  empty = {n for n in expected if n.endswith(".py") and not (stdlib / n).read_text().strip()}
  assert set(names) == expected - empty
  assert all(by_split[s] for s in sources.SPLITS)
  assert "json" in names and "os.py" in names
  json_doc = next(d.text for s in sources.SPLITS for d in reader.documents(s) if d.name == "json")
  files = ["__init__.py", "decoder.py", "encoder.py", "scanner.py", "tool.py"]
  assert json_doc == documents.join_files((stdlib / "json" / f).read_text() for f in files)


# A corpus folder with what real folders hold besides text: a compiled library, a
# Latin-1 text, a UTF-8 text with one stray Latin-1 byte, a dangling symlink and a
# symlink loop (bytes(range(256)) * 100: 100 NULs in 25600 bytes, and 12800 bytes
# that are not UTF-8, one U+FFFD each: 0x80-0xff never start a valid sequence
# followed by the next byte value).
BINARY = bytes(range(256)) * 100
LATIN1_LINE = "Ça coûte très cher à Noël, déjà.\n"  # 7 characters beyond ASCII
LATIN1 = (LATIN1_LINE * 50).encode("latin-1")
STRAY = b"caf\xe9\n" + b"plain ascii line\n" * 10  # 1 undecodable byte in 175


def _write_awkward_files(folder):
  folder.mkdir(parents=True)
  (folder / "code.py").write_bytes(b"print('hi')\n")
  (folder / "lib.so").write_bytes(BINARY)
  (folder / "latin1.txt").write_bytes(LATIN1)
  (folder / "stray.txt").write_bytes(STRAY)
  os.symlink(folder / "nowhere.txt", folder / "dangling.txt")
  os.symlink(folder / "loop.txt", folder / "loop.txt")


def _empty_splits(root, *splits):
  for split in splits:
    (root / split).mkdir()


def test_binary_undecodable_and_unreadable_files_are_skipped_and_counted(tmp_path, caplog):
  _write_awkward_files(tmp_path / "train")
  _empty_splits(tmp_path, "validation", "test")
  reader = sources.FolderReader("awkward", "file", root=tmp_path)
  report = documents.ReadReport()
  with caplog.at_level("INFO"):
    docs = _texts(reader, "train", report=report)
  assert docs == {"code.py": "print('hi')\n",
                  "stray.txt": "caf\ufffd\n" + "plain ascii line\n" * 10}
  assert report.as_dict() == dict(documents=2, skipped_empty=0, skipped_short=0,
                                  skipped_binary=1, skipped_undecodable=1,
                                  skipped_unreadable=2, documents_with_replacements=1,
                                  replaced_characters=1)
  warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
  assert any("dangling.txt" in w and "No such file" in w for w in warnings)
  assert any("loop.txt" in w and "symbolic links" in w for w in warnings)
  summary = [w for w in warnings if w.startswith("read awkward/train:")]
  assert summary == [
      "read awkward/train: 2 documents; skipped 1 binary, 1 undecodable and 2 unreadable "
      "files, 0 empty and 0 short documents; 1 undecodable bytes replaced by U+FFFD in 1 "
      "documents"]
  # The fingerprint (which stats every file) does not trip over the symlinks either.
  assert len(reader.fingerprint("train")) == 16


def test_keep_binary_files_reads_them_with_replacements(tmp_path):
  _write_awkward_files(tmp_path / "train")
  _empty_splits(tmp_path, "validation", "test")
  report = documents.ReadReport()
  docs = _texts(sources.FolderReader("awkward", "file", root=tmp_path), "train",
                report=report, keep_binary_files=True)
  assert sorted(docs) == ["code.py", "latin1.txt", "lib.so", "stray.txt"]
  assert docs["lib.so"] == BINARY.decode("utf-8", errors="replace")
  assert docs["latin1.txt"] == LATIN1.decode("ascii", errors="replace")
  assert report.as_dict() == dict(documents=4, skipped_empty=0, skipped_short=0,
                                  skipped_binary=0, skipped_undecodable=0,
                                  skipped_unreadable=2, documents_with_replacements=3,
                                  replaced_characters=12800 + 7 * 50 + 1)


def test_directory_mode_skips_files_inside_a_document_and_bad_top_level_entries(tmp_path):
  _write_awkward_files(tmp_path / "train" / "repo")
  root = tmp_path / "train"
  os.symlink(tmp_path / "gone", root / "broken_repo")  # dangling, at the top level
  os.symlink(root / "looping_repo", root / "looping_repo")  # a loop, at the top level
  (root / "only_binary").mkdir()
  (root / "only_binary" / "a.so").write_bytes(BINARY)
  _empty_splits(tmp_path, "validation", "test")
  report = documents.ReadReport()
  docs = _texts(sources.FolderReader("awkward", "directory", root=tmp_path), "train",
                report=report)
  # repo: its readable text files in walk order (code.py, then stray.txt), joined.
  assert docs == {"repo": "print('hi')\n" "caf\ufffd\n" + "plain ascii line\n" * 10}
  # A document whose every file was skipped counts by why, not as empty.
  assert report.as_dict() == dict(documents=1, skipped_empty=0, skipped_short=0,
                                  skipped_binary=2, skipped_undecodable=1,
                                  skipped_unreadable=4, documents_with_replacements=1,
                                  replaced_characters=1)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files without permission")
def test_a_file_without_read_permission_is_skipped(tmp_path):
  write_tree(tmp_path / "train", {"r": {"ok.txt": b"ok\n", "secret.txt": b"hidden\n"}})
  _empty_splits(tmp_path, "validation", "test")
  (tmp_path / "train" / "r" / "secret.txt").chmod(0)
  report = documents.ReadReport()
  docs = _texts(sources.FolderReader("t", "directory", root=tmp_path), "train", report=report)
  assert docs == {"r": "ok\n"} and report.skipped_unreadable == 1


def test_binary_kind_thresholds():
  text = b"a" * 1000
  assert documents.binary_kind(text, 0) is None
  assert documents.binary_kind(text + b"\0", 0) is None  # 1 NUL in 1001: at most 0.1%
  assert documents.binary_kind(text + b"\0\0", 0) == "binary"
  assert documents.binary_kind(text, 10) is None  # 10 of 1000 replaced: at most 1%
  assert documents.binary_kind(text, 11) == "undecodable"


def test_check_split_names_the_splits_expected():
  sources.check_split("validation", sources.SPLITS)
  with pytest.raises(ValueError, match=r"unknown split 'dev'; expected one of \['a', 'b'\]"):
    sources.check_split("dev", ("a", "b"))


def _hand_fingerprint(parts, described):
  """sha256 of the extra parts, then of "<path>\\0<size>\\0<mtime ns>\\0" per file."""
  digest = hashlib.sha256()
  for part in parts:
    digest.update(part.encode() + b"\0")
  for rel, what in described:
    digest.update(f"{rel}\0{what}\0".encode())
  return digest.hexdigest()[:16]


def test_stat_fingerprint_hashes_paths_sizes_and_times(tmp_path):
  write_tree(tmp_path, {"r": {"a.txt": b"one\n", "b.txt": b"two!\n"}})
  rels = ["r/a.txt", "r/b.txt"]
  os.utime(tmp_path / "r/a.txt", ns=(1, 1_000_000_000))
  os.utime(tmp_path / "r/b.txt", ns=(1, 2_000_000_007))
  fingerprint = sources.stat_fingerprint(tmp_path, rels, "task", "train")
  assert fingerprint == _hand_fingerprint(
      ["task", "train"], [("r/a.txt", "4\x001000000000"), ("r/b.txt", "5\x002000000007")])
  assert sources.stat_fingerprint(tmp_path, rels[::-1], "task", "train") != fingerprint
  assert sources.stat_fingerprint(tmp_path, rels, "task", "test") != fingerprint
  os.utime(tmp_path / "r/b.txt", ns=(1, 2_000_000_008))  # only the time changes
  assert sources.stat_fingerprint(tmp_path, rels, "task", "train") != fingerprint


def test_stat_fingerprint_of_an_unreadable_file_is_its_error_number(tmp_path):
  (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
  assert sources.stat_fingerprint(tmp_path, ["dangling"]) == _hand_fingerprint(
      [], [("dangling", f"unreadable {errno.ENOENT}")])
