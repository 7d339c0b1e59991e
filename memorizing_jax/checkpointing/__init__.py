"""Checkpoints on disk: the one reader, which training, inference and the study share.

  discovery  the steps in a folder; a workdir, `checkpoints/` folder or step folder
             resolved to one step; the gin config a run was trained with;
  reader     restoring the state, the parameters, or the parameters that fit
             another model, onto any mesh;
  trees      leaf names as orbax stores them, and how a stored tree differs from a model's;
  digests    a digest of every saved array, checked again on restore;
  fallback   restoring the newest intact one of several steps;
  items      the items of a step, and reading the JSON ones (config, data, digests,
             vocabulary) as files.

Writing (and keeping, and moving aside damaged steps) is the trainer's
(`train/checkpoints.py`); it and inference read through `reader`.
"""
