"""Documents to batches: document sources, seqio tasks, vocabularies and segment streams.

Importing this package is cheap: TensorFlow and seqio are imported only by the
modules that need them (`tasks`, `vocab`, `pipeline`).

Entry points:
  - `memorizing_jax.data.config.DataConfig`: which task, vocabulary and batch sizes a
    run reads (gin: `data_config.DataConfig`).
  - `memorizing_jax.data.pipeline.make_stream(task, split, batch_size, segment_length,
    vocabulary=...)` -> `SegmentStream` of `[B, L]` segment batches.
  - `memorizing_jax.data.vocab.get_vocabulary(task, kind=..., size=...)` -> seqio vocabulary.
  - `python -m memorizing_jax.data --task python_stdlib --stats` prints corpus statistics.
"""
