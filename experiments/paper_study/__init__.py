"""The paper-claims study at small scale: trains its runs through the ordinary entry
point, scores them, and writes docs/results/. It uses `memorizing_jax` as a library
(public modules only; tests/test_layering.py checks) and the package imports nothing
from it.

  plan.py       the runs: gin files and bindings, and the settings their records and
                the report's header state, read from the parsed configuration
  run.py        the runner: trains, scores and records each run, rewrites the report
  evaluate.py   scores a run's checkpoint on its eval split (perplexity; on the
                synthetic task also recall accuracy by kind and retrieval hits)
  report.py     result records -> markdown table, claim checks and plots
  gin/          the study's gin files, layered on the package's gin/ (train.gin, models/,
                memory/, data/)

    .venv/bin/python experiments/paper_study/run.py [--report_only] ...
"""
