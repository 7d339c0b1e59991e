"""docs/results/results.md is what the study's report makes of the committed records,
byte for byte (nothing is trained or scored: the figures come from the records)."""
import pathlib

from experiments.paper_study import plan
from experiments.paper_study import run

RESULTS = pathlib.Path(plan.ROOT) / "docs" / "results"
PLOTS = ("synthetic_accuracy.png", "perplexity_vs_memory.png", "perplexity_by_position.png")


def test_results_md_is_rendered_from_the_records(tmp_path):
  specs = plan.runs()
  # Every committed record is a run of the plan (none is left out of the table).
  assert sorted(p.name for p in (RESULTS / "records").glob("*.json")) == sorted(
      pathlib.Path(run.record_path(str(RESULTS), s)).name for s in specs)
  path = run.write_report(str(tmp_path), specs, records_dir=str(RESULTS))
  assert pathlib.Path(path) == tmp_path / "results.md"
  assert (tmp_path / "results.md").read_bytes() == (RESULTS / "results.md").read_bytes()
  for name in PLOTS:  # the plots it links are drawn (their bytes depend on matplotlib)
    assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"]({name})" in (tmp_path / "results.md").read_text()
  assert not (tmp_path / "records").exists()  # records are read, never written
