"""Corpus statistics and sample segments of a data task, as JSON.

  python -m memorizing_jax.data --task python_stdlib --stats
  python -m memorizing_jax.data --task python_stdlib --sample --vocab sentencepiece \
      --vocab_size 4096
  python -m memorizing_jax.data --task github --corpus_dir ~/repos --stats
  python -m memorizing_jax.data --task pg19 --prepare_pg19_from ~/pg19_copy --stats
  python -m memorizing_jax.data --task python_stdlib --vocab sentencepiece --vocab_size 1024 \
      --read_steps 3000 --read_from 2000 --batch_size 8 --segment_length 128
  python -m memorizing_jax.data --task python_stdlib --vocab sentencepiece --vocab_size 1024 \
      --repeats --split validation

Nothing is downloaded. The first run for a (task, split, vocabulary) tokenises the
split (with a progress bar) and caches the tokens under the data directory.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

import numpy as np

from memorizing_jax.data import pg19  # no TensorFlow until PG-19 is read
from memorizing_jax.data import repeats  # numpy only, cheap
# The modules that import seqio and TensorFlow (seconds) are imported once the
# arguments are parsed, so that --help and usage errors answer at once.

QUANTILES = (0.0, 0.1, 0.5, 0.9, 1.0)
PROG = "python -m memorizing_jax.data"


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog=PROG, description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--task", default="python_stdlib", help="a task of memorizing_jax.data.tasks")
  parser.add_argument("--split", action="append", choices=("train", "validation", "test"),
                      help="split(s) to report (repeatable; default: all three)")
  parser.add_argument("--stats", action="store_true", help="print corpus statistics")
  parser.add_argument("--sample", action="store_true",
                      help="print the first segment of the split's stream, decoded")
  parser.add_argument("--sample_length", type=int, default=256,
                      help="tokens in the sample segment")
  parser.add_argument("--vocab", choices=("byte", "sentencepiece"), default="byte",
                      help="vocabulary to count tokens in")
  parser.add_argument("--vocab_size", type=int, default=32000, help="SentencePiece size")
  parser.add_argument("--data_dir", default=None,
                      help="data directory (default $MEMORIZING_JAX_DATA_DIR or "
                           "~/.cache/memorizing_jax)")
  parser.add_argument("--corpus_dir", default=None,
                      help="folder of a folder task (arxiv, github, isabelle, c4_4k)")
  parser.add_argument("--prepare_pg19_from", default=None,
                      help="prepare TFDS pg19 from this local copy of the bucket first")
  parser.add_argument("--read_steps", type=int, default=0,
                      help="which documents the training stream reads in its first "
                           "READ_STEPS steps (or from step --read_from), by tokens")
  parser.add_argument("--read_from", type=int, default=0,
                      help="with --read_steps: count only steps from this one on")
  parser.add_argument("--batch_size", type=int, default=8,
                      help="with --read_steps: rows per step, as the training run's")
  parser.add_argument("--segment_length", type=int, default=128,
                      help="with --read_steps: tokens per row per step")
  parser.add_argument("--seed", type=int, default=0,
                      help="with --read_steps: the stream's seed (DataConfig.seed)")
  parser.add_argument("--repeats", action="store_true",
                      help="print, per band of distances (--repeat_edges), the share of "
                           "tokens whose n-gram last occurred that far back in the document, "
                           "and of tokens that copying (the token after the latest earlier "
                           "occurrence of the same context) predicts right or wrong from that "
                           "far back: what a window or memory of that reach could copy")
  parser.add_argument("--repeat_context", type=int, default=repeats.COPY_CONTEXT,
                      help="with --repeats: tokens of context before the repeated token")
  parser.add_argument("--repeat_edges", default="256,1536,8192,32768",
                      help="with --repeats: comma-separated distance band edges, e.g. the "
                           "segment + XL window and the memory sizes")
  parser.add_argument("--keep_binary_files", action="store_true",
                      help="read binary and undecodable files of a folder corpus too "
                           "(skipped by default; see memorizing_jax/data/documents.py)")
  parser.add_argument("--no_progress", action="store_true", help="no progress bars")
  args = parser.parse_args(argv)
  if not (args.stats or args.sample or args.prepare_pg19_from or args.read_steps
          or args.repeats):
    parser.error("nothing to do: pass --stats, --sample, --read_steps, --repeats or "
                 "--prepare_pg19_from")
  try:
    args.repeat_edges = sorted({int(e) for e in args.repeat_edges.split(",") if e.strip()})
  except ValueError:
    parser.error(f"--repeat_edges must be comma-separated integers, got {args.repeat_edges!r}")
  if args.repeat_context < 0 or any(e <= 0 for e in args.repeat_edges):
    parser.error("--repeat_context must be >= 0 and --repeat_edges positive")
  if args.read_steps < 0 or not 0 <= args.read_from < max(args.read_steps, 1):
    parser.error(f"--read_from must be in [0, --read_steps), got --read_from "
                 f"{args.read_from} with --read_steps {args.read_steps}")
  if args.batch_size <= 0 or args.segment_length <= 0:
    parser.error("--batch_size and --segment_length must be positive")
  return args


def _split_stats(cache) -> dict:
  """Documents, tokens and tokens-per-document quantiles of one token cache."""
  lengths = cache.lengths
  stats = dict(documents=int(cache.num_documents), tokens=int(lengths.sum()))
  if len(lengths):
    values = np.quantile(lengths, QUANTILES, method="nearest")
    stats["tokens_per_document"] = {
        f"q{int(q * 100):02d}": int(v) for q, v in zip(QUANTILES, values)}
    stats["tokens_per_document"]["mean"] = float(lengths.mean())
  stats["read_report"] = cache.meta["report"]
  stats["cache"] = str(cache.path)
  return stats


def _sample_segment(task: str, split: str, vocabulary, length: int, data_dir,
                    keep_binary_files: bool = False) -> dict:
  """The first row of the first eval batch of the split, decoded."""
  from memorizing_jax.data import pipeline  # pylint: disable=g-import-not-at-top  (seqio)
  stream = pipeline.make_stream(task, split, 1, length, vocabulary=vocabulary, mode="eval",
                                data_dir=data_dir, progress=False,
                                keep_binary_files=keep_binary_files)
  batch = next(stream)
  mask = batch["loss_mask"][0] > 0
  return dict(document_id=int(batch["document_id"][0]),
              token_offset=int(batch["token_offset"][0]), tokens=int(mask.sum()),
              text=vocabulary.decode(batch["targets"][0][mask].tolist()))


def _split_repeats(cache, context: int, vocab_size: int, edges: Sequence[int]) -> dict:
  """Over all documents of a split, by how far back the source lies (bands of `edges`):
  the share of tokens whose (context + 1)-gram occurred before ("repeated"), and of
  tokens that copying the successor of the context's most recent occurrence would
  predict right ("copied_right") or wrong ("copied_wrong"); see `data.repeats`."""
  documents = [cache.document(i) for i in range(cache.num_documents)]
  joined = lambda arrays: np.concatenate(arrays) if arrays else np.zeros((0,), np.int64)
  repeated = joined([repeats.repeat_distances(d, context, vocab_size) for d in documents])
  copies = [repeats.copy_predictions(d, context, vocab_size) for d in documents]
  distance = joined([c[0] for c in copies])
  correct = joined([c[1] for c in copies]).astype(bool)
  return dict(context=context, tokens=int(len(repeated)),
              repeated=repeats.band_shares(repeated, edges),
              copied_right=repeats.band_shares(distance, edges, correct),
              copied_wrong=repeats.band_shares(distance, edges, ~correct))


def _documents_read(task: str, vocabulary, batch_size: int, segment_length: int, seed: int,
                    steps: int, start: int, data_dir, top: int = 10,
                    keep_binary_files: bool = False) -> dict:
  """Which documents the training stream reads in steps [start, steps): their number,
  the targets read, and the `top` documents by targets read, with their share."""
  from memorizing_jax.data import pipeline  # pylint: disable=g-import-not-at-top  (seqio)
  stream = pipeline.make_stream(task, "train", batch_size, segment_length,
                                vocabulary=vocabulary, mode="train", seed=seed,
                                data_dir=data_dir, progress=False,
                                keep_binary_files=keep_binary_files)
  read = np.zeros(len(stream.document_names), np.int64)
  for step in range(steps):
    batch = next(stream)
    if step >= start:
      rows = batch["document_id"] >= 0
      np.add.at(read, batch["document_id"][rows],
                batch["loss_mask"][rows].sum(axis=1).astype(np.int64))
  total = int(read.sum())
  order = np.argsort(-read, kind="stable")[:top]
  return dict(steps=[start, steps], batch_size=batch_size, segment_length=segment_length,
              seed=seed, documents=int((read > 0).sum()), tokens=total,
              top=[dict(name=stream.document_names[i], tokens=int(read[i]),
                        share=float(read[i] / total) if total else 0.0)
                   for i in order if read[i] > 0])


def fail(message: str, exit_code: int) -> int:
  """Prints `message` as one line on stderr, as argparse does; returns `exit_code`."""
  print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)
  return exit_code


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs the command; a usage error exits 2, a missing file or folder 1, with one
  line on stderr and no traceback."""
  args = _parse_args(argv)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's start-up chatter.
  from memorizing_jax.data import tasks  # pylint: disable=g-import-not-at-top  (TensorFlow)
  try:
    tasks.get_reader(args.task)
  except ValueError as error:  # An unknown task: a usage error.
    return fail(error, 2)
  if args.corpus_dir and not os.path.isdir(os.path.expanduser(args.corpus_dir)):
    return fail(f"--corpus_dir {args.corpus_dir} is not a folder", 2)
  try:
    return run(args)
  except FileNotFoundError as error:
    return fail(error, 1)


def run(args: argparse.Namespace) -> int:
  """Prints what `args` ask for as JSON."""
  # seqio and TensorFlow, after the arguments (see the top).
  from memorizing_jax.data import tasks  # pylint: disable=g-import-not-at-top
  from memorizing_jax.data import token_cache  # pylint: disable=g-import-not-at-top
  from memorizing_jax.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top

  if args.prepare_pg19_from:
    out = pg19.prepare_pg19(args.prepare_pg19_from, args.data_dir)
    print(json.dumps({"prepared": "pg19", "tfds_data_dir": str(out)}))
  if args.corpus_dir:
    reader = tasks.get_reader(args.task)
    if not hasattr(reader, "mode"):
      raise SystemExit(f"--corpus_dir applies to folder tasks; {args.task!r} is not one")
    tasks.register_folder_task(args.task, reader.mode, root=args.corpus_dir,
                               suffixes=reader.suffixes, min_tokens=reader.min_tokens)
  if not (args.stats or args.sample or args.read_steps or args.repeats):
    return 0
  vocabulary = vocab_lib.get_vocabulary(args.task, args.vocab, args.vocab_size,
                                        data_dir=args.data_dir)
  result = dict(task=args.task, vocabulary=dict(
      kind=args.vocab, size=vocabulary.vocab_size,
      fingerprint=vocab_lib.vocabulary_fingerprint(vocabulary)))
  splits = args.split or ["train", "validation", "test"]
  if args.stats:
    result["splits"] = {}
  if args.repeats:
    result["repeats"] = {}
  for split in splits if args.stats or args.repeats else ():
    cache = token_cache.load_or_build(args.task, split, vocabulary, args.data_dir,
                                      progress=not args.no_progress,
                                      keep_binary_files=args.keep_binary_files)
    if args.stats:
      result["splits"][split] = _split_stats(cache)
    if args.repeats:
      try:
        result["repeats"][split] = _split_repeats(cache, args.repeat_context,
                                                  vocabulary.vocab_size, args.repeat_edges)
      except ValueError as e:
        raise SystemExit(f"--repeats: {e}") from None
  if args.sample:
    result["sample"] = {split: _sample_segment(args.task, split, vocabulary,
                                               args.sample_length, args.data_dir,
                                               args.keep_binary_files)
                        for split in splits}
  if args.read_steps:
    result["reading"] = _documents_read(args.task, vocabulary, args.batch_size,
                                        args.segment_length, args.seed, args.read_steps,
                                        args.read_from, args.data_dir,
                                        keep_binary_files=args.keep_binary_files)
  print(json.dumps(result, indent=1, ensure_ascii=False))
  return 0


if __name__ == "__main__":
  sys.exit(main())
