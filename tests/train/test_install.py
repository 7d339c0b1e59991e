"""The built wheel, installed away from the checkout, trains through its console script.

The wheel goes into a throwaway venv whose only view of the test environment's
packages is a `.pth` line (its dependencies; the test environment's editable
install of this package is not activated that way), and the command runs from an
empty directory with a gin file the wheel ships.
"""
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig

import pytest

from tiny_runs import entry_point_bindings  # pylint: disable=g-bad-import-order

CHECKOUT = pathlib.Path(__file__).resolve().parents[2]


def _build_wheel(tmp_path: pathlib.Path) -> pathlib.Path:
  """Builds the wheel from a copy of what it is made of (the checkout stays clean)."""
  source = tmp_path / "source"
  source.mkdir()
  shutil.copy(CHECKOUT / "setup.py", source)
  for folder in ("memorizing_jax", "gin"):
    shutil.copytree(CHECKOUT / folder, source / folder,
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
  subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                  "--no-build-isolation", "--wheel-dir", str(tmp_path / "dist"), str(source)],
                 check=True, capture_output=True, text=True)
  (wheel,) = (tmp_path / "dist").glob("memorizing_jax-*.whl")
  return wheel


def _throwaway_venv(tmp_path: pathlib.Path, wheel: pathlib.Path) -> pathlib.Path:
  """A venv holding the wheel, with the test environment's packages behind it."""
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
  python = venv / "bin" / "python"
  site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                         "['purelib'])"], check=True, capture_output=True, text=True)
  pathlib.Path(site.stdout.strip(), "test_environment.pth").write_text(
      sysconfig.get_paths()["purelib"] + "\n")
  subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                  "--no-deps", "--no-index", "--ignore-installed", str(wheel)],
                 check=True, capture_output=True, text=True)
  return venv


@pytest.mark.skipif(sys.platform == "win32", reason="venv layout of POSIX systems")
def test_installed_wheel_trains_from_another_directory(github_corpus, tmp_path):
  wheel = _build_wheel(tmp_path)
  venv = _throwaway_venv(tmp_path, wheel)
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

  where = subprocess.run([str(venv / "bin" / "python"), "-c",
                          "import memorizing_jax; print(memorizing_jax.__file__)"],
                         cwd=elsewhere, env=env, check=True, capture_output=True, text=True)
  assert pathlib.Path(where.stdout.strip()).is_relative_to(venv), where.stdout  # not the checkout

  workdir = tmp_path / "run"
  bindings = entry_point_bindings(2, 2, eval_batches=1, keep_checkpoints=1)
  done = subprocess.run([str(venv / "bin" / "memorizing-jax-train"), "--gin_file=train.gin",
                         f"--workdir={workdir}", *[f"--gin_param={b}" for b in bindings]],
                        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
  assert "final evaluation at step 2: perplexity" in done.stdout
  assert (workdir / "checkpoints" / "2").is_dir()
  assert "include 'train.gin'" not in (workdir / "config.gin").read_text()  # the operative config
  assert list(elsewhere.iterdir()) == []  # nothing written where it ran
