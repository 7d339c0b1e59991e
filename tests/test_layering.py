"""The package's layering, read from the source (every import, also those inside
functions): dependencies point one way (DESIGN.md section 2).

  memory          the external memory: imports no other part
  checkpointing   file formats of checkpoint items: imports no other part
  model           the network: the memory only ("model knows nothing of training,
                  gin or data")
  data            documents to batches: checkpointing only (a vocabulary saved in a
                  checkpoint is read through its item format); no model
  train           composes memory, model, data and checkpointing
  inference       composes memory, model, data and checkpointing; not train
  study           the paper-claims study, on top: anything, entry points included

The top-level modules (`main`, `evaluate`, `compile`, ...) are entry points: they
may import anything, and only the study and other entry points import them.
"""
import ast
import pathlib
from typing import Dict, Iterator, List, Set, Tuple

PACKAGE = "memorizing_jax"
ROOT = pathlib.Path(__file__).resolve().parents[1] / PACKAGE
LAYERS = ("memory", "checkpointing", "model", "data", "train", "inference", "study")
ENTRY_POINTS = "entry points"  # the package's top-level modules
# Which other parts each part may import.
ALLOWED: Dict[str, Set[str]] = {
    "memory": set(),
    "checkpointing": set(),
    "model": {"memory"},
    "data": {"checkpointing"},
    "train": {"memory", "checkpointing", "model", "data"},
    "inference": {"memory", "checkpointing", "model", "data"},
    "study": {"memory", "checkpointing", "model", "data", "train", "inference", ENTRY_POINTS},
    ENTRY_POINTS: {*LAYERS, ENTRY_POINTS},
}


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> Dict[str, pathlib.Path]:
  return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imported(module: str, path: pathlib.Path, modules: Dict[str, pathlib.Path]
              ) -> Iterator[str]:
  """The package's modules that `module` imports, anywhere in its source."""
  package = module if path.name == "__init__.py" else module.rpartition(".")[0]
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
          yield alias.name
    elif isinstance(node, ast.ImportFrom):
      if node.level:  # relative: from .x import y
        base = package.split(".")[:len(package.split(".")) - node.level + 1]
        source = ".".join(base + ([node.module] if node.module else []))
      else:
        source = node.module or ""
      if source != PACKAGE and not source.startswith(PACKAGE + "."):
        continue
      for alias in node.names:  # `from pkg import submodule` imports the submodule
        submodule = f"{source}.{alias.name}"
        yield submodule if submodule in modules else source


def _part(module: str) -> str:
  """The layer a module belongs to, or ENTRY_POINTS for the top-level modules (and
  the package itself)."""
  parts = module.split(".")
  if len(parts) > 1 and parts[1] in LAYERS:
    return parts[1]
  return ENTRY_POINTS


def _violations() -> List[Tuple[str, str]]:
  modules = _modules()
  found = []
  for module, path in modules.items():
    part = _part(module)
    for target in _imported(module, path, modules):
      other = _part(target)
      if other != part and other not in ALLOWED[part]:
        found.append((module, target))
  return sorted(set(found))


def test_every_part_of_the_package_is_classified():
  parts = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
  assert parts <= set(LAYERS), f"add {sorted(parts - set(LAYERS))} to LAYERS and ALLOWED"


def test_imports_point_one_way():
  violations = _violations()
  for module, target in violations:
    print(f"{module} -> {target}")
  assert not violations, "imports against the layering:\n" + "\n".join(
      f"  {module} -> {target} ({_part(module)} may import only "
      f"{sorted(ALLOWED[_part(module)]) or 'itself'})" for module, target in violations)


def test_the_scan_sees_imports_inside_functions(tmp_path):
  """The reader finds an import inside a function, and `from pkg import module`."""
  source = ("def f():\n  from memorizing_jax.train import inputs\n"
            "from memorizing_jax import memory\n")
  path = tmp_path / "probe.py"
  path.write_text(source)
  modules = {"memorizing_jax.memory": path}
  assert sorted(_imported("memorizing_jax.model.probe", path, modules)) == [
      "memorizing_jax.memory", "memorizing_jax.train"]
