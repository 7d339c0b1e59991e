"""The docs name tests as evidence (docs/reliability.md's table, the README): every
`tests/...py` and `tests/...py::test_name` they name exists, so a moved or renamed test
cannot leave a claim pointing at nothing."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))
REFERENCE = re.compile(r"\b(tests/[\w/]+\.py)(?:::(\w+))?")


def test_every_test_the_docs_name_exists():
  references = {(doc.relative_to(ROOT).as_posix(), path, name)
                for doc in DOCS for path, name in REFERENCE.findall(doc.read_text())}
  assert sum(doc == "docs/reliability.md" for doc, _, _ in references) > 20
  dangling = []
  for doc, path, name in sorted(references):
    source = ROOT / path
    if not source.is_file():
      dangling.append(f"{doc} names {path}, which does not exist")
    elif name and not re.search(rf"^def {name}\(", source.read_text(), re.M):
      dangling.append(f"{doc} names {path}::{name}, which {path} does not define")
  assert not dangling, "\n".join(dangling)
