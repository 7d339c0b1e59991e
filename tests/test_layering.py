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

The top-level modules (`main`, `evaluate`, `compile`, ...) are entry points: they
may import anything, and only other entry points import them.

Studies live outside the package (`experiments/`) and use it as a library: nothing in
the package imports them, and they import only the package's public modules and names
(no `_private` ones).
"""
import ast
import pathlib
from typing import Dict, Iterator, List, Set, Tuple

PACKAGE = "memorizing_jax"
ROOT = pathlib.Path(__file__).resolve().parents[1] / PACKAGE
EXPERIMENTS = ROOT.parent / "experiments"
LAYERS = ("memory", "checkpointing", "model", "data", "train", "inference")
ENTRY_POINTS = "entry points"  # the package's top-level modules
# Which other parts each part may import.
ALLOWED: Dict[str, Set[str]] = {
    "memory": set(),
    "checkpointing": set(),
    "model": {"memory"},
    "data": {"checkpointing"},
    "train": {"memory", "checkpointing", "model", "data"},
    "inference": {"memory", "checkpointing", "model", "data"},
    ENTRY_POINTS: {*LAYERS, ENTRY_POINTS},
}


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> Dict[str, pathlib.Path]:
  return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(path: pathlib.Path, package: str) -> Iterator[Tuple[str, List[str]]]:
  """(module, names) for every import in `path`'s source, also those inside functions:
  ("a.b", []) for `import a.b`, ("a.b", ["c", "d"]) for `from a.b import c, d`; relative
  imports resolved against `package`, the one `path` belongs to."""
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield alias.name, []
    elif isinstance(node, ast.ImportFrom):
      if node.level:  # relative: from .x import y
        base = package.split(".")[:len(package.split(".")) - node.level + 1]
        source = ".".join(base + ([node.module] if node.module else []))
      else:
        source = node.module or ""
      yield source, [alias.name for alias in node.names]


def _in_package(name: str, package: str = PACKAGE) -> bool:
  return name == package or name.startswith(package + ".")


def _imported(module: str, path: pathlib.Path, modules: Dict[str, pathlib.Path]
              ) -> Iterator[str]:
  """The package's modules that `module` imports, anywhere in its source."""
  package = module if path.name == "__init__.py" else module.rpartition(".")[0]
  for source, names in _imports(path, package):
    if not _in_package(source):
      continue
    if not names:
      yield source
    for name in names:  # `from pkg import submodule` imports the submodule
      submodule = f"{source}.{name}"
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


def test_the_package_imports_no_experiment():
  found = [(module, source) for module, path in _modules().items()
           for source, _ in _imports(path, module.rpartition(".")[0])
           if _in_package(source, "experiments")]
  assert not found, f"the package imports a study: {found}"


def _experiment_imports() -> List[Tuple[str, str]]:
  """(file, what) for every import of the package in experiments/: the module, or
  `module.name` for a name imported from it."""
  found = []
  for path in sorted(EXPERIMENTS.rglob("*.py")):
    relative = path.relative_to(EXPERIMENTS.parent)
    file, package = str(relative), ".".join(relative.parent.parts)
    for source, names in _imports(path, package):
      if _in_package(source):
        found += [(file, f"{source}.{name}") for name in names] or [(file, source)]
  return found


def _library_violations(found: List[Tuple[str, str]], modules: Dict[str, pathlib.Path]
                        ) -> List[str]:
  """What in `found` ((file, module or module.name) pairs) is not the package's public
  interface: a module it does not have, or a private (`_name`) module or name."""
  problems = []
  for file, what in found:
    module = what if what in modules else what.rpartition(".")[0]
    if module not in modules:
      problems.append(f"{file}: {what}: no such module in the package")
    elif any(part.startswith("_") for part in what.split(".")):
      problems.append(f"{file}: {what} is private to the package")
  return problems


def test_experiments_import_only_the_public_package():
  """A study uses the package as a library: the modules it imports exist, and neither
  they nor the names it takes from them are private (`_name`)."""
  found = _experiment_imports()
  assert ("experiments/paper_study/plan.py", "memorizing_jax.main") in found  # inside a function
  assert not _library_violations(found, _modules())


def test_the_library_check_finds_private_and_missing_modules():
  modules = _modules()
  found = [("a.py", "memorizing_jax.main._not_gin_include_search"),
           ("a.py", "memorizing_jax.train._private.x"),
           ("a.py", "memorizing_jax.data.config.DataConfig"), ("a.py", "memorizing_jax")]
  assert _library_violations(found, modules) == [
      "a.py: memorizing_jax.main._not_gin_include_search is private to the package",
      "a.py: memorizing_jax.train._private.x: no such module in the package"]
