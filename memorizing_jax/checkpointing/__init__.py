"""What training and inference share about checkpoints on disk.

  trees      leaf names as orbax stores them, and how a stored tree differs from a model's;
  digests    a digest of every saved array, checked again on restore;
  fallback   the steps in a folder, and restoring the newest intact one of them;
  items      the JSON items of a step (config, data, digests, vocabulary), read as files.

Training (`train/checkpoints.py`) and inference (`inference/checkpoint.py`) both
import these; neither imports the other for them.
"""
