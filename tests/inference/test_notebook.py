"""examples/quickstart.ipynb runs top to bottom against a freshly trained checkpoint."""
import pathlib

import nbclient
import nbformat

NOTEBOOK = pathlib.Path(__file__).resolve().parents[2] / "examples" / "quickstart.ipynb"


def test_quickstart_notebook_executes(trained_workdir, tmp_path, monkeypatch):
  monkeypatch.setenv("MEMORIZING_JAX_WORKDIR", trained_workdir)
  monkeypatch.setenv("MEMORIZING_JAX_PLOTS", str(tmp_path))
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
  outputs = "".join(o.get("text", "") for cell in notebook.cells
                    for o in cell.get("outputs", []))
  assert "nats/token" in outputs
  assert outputs.count("perplexity") >= 3  # the batch's three scores
  assert "streamed:" in outputs
  images = [o for cell in notebook.cells for o in cell.get("outputs", [])
            if "image/png" in o.get("data", {})]
  assert len(images) == 2  # both plots shown inline
  assert (tmp_path / "top_gains.png").is_file() and (tmp_path / "distances.png").is_file()
