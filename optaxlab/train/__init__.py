"""optaxlab.train: sharded Flax NNX training with Orbax checkpoints and TensorBoard logging.

  train(config, workdir)   run (or resume) a training config; returns RunResult
  default_config()         every trainer field with its default (configs/*.py build on it)
  validate(config, ...)    the one-line-error config check, done before the workdir is touched
  python -m optaxlab.train --config configs/lm_tiny.py --workdir runs/x --config.steps=200

Files: config (schema, validation), optim (registry optimizer + schedule), mesh (mesh,
shardings, batches, multi-host), state (model split, sharded init), step (train/eval step),
checkpoint (Orbax), metrics (metrics.jsonl, TensorBoard), loop (the loop).
"""

from optaxlab.train.config import default_config, validate
from optaxlab.train.loop import NonFiniteError, RunResult, train

__all__ = ["NonFiniteError", "RunResult", "default_config", "train", "validate"]
