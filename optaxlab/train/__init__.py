"""optaxlab.train: sharded Flax NNX training with Orbax checkpoints and TensorBoard logging.

  train(config, workdir)   run (or resume) a training config; returns RunResult
  default_config()         every trainer field with its default (optaxlab/configs/*.py build on it)
  validate(config, ...)    the one-line-error config check, done before the workdir is touched
  python -m optaxlab.train --config lm_tiny --workdir runs/x --config.steps=200
  python -m optaxlab.train.memory --config lm_160m   what fits on which device

Files: config (schema, validation), optim (registry optimizer + schedule), mesh (mesh,
shardings, batches, multi-host), state (model split, sharded init), step (train/eval step),
checkpoint (Orbax, checksums, the three restore outcomes), metrics (metrics.jsonl, TensorBoard),
workdir (lock, status.json, --restart), signals (SIGTERM/SIGINT agreement), errors (exit
codes), loop (the loop), memory (the memory estimate).
"""

from optaxlab.train.config import default_config, validate
from optaxlab.train.errors import (
    ConfigError,
    DataError,
    IncompatibleCheckpointError,
    IOFailure,
    NonFiniteError,
    WorkdirLockedError,
)
from optaxlab.train.loop import RunResult, train

__all__ = ["ConfigError", "DataError", "IOFailure", "IncompatibleCheckpointError",
           "NonFiniteError", "RunResult", "WorkdirLockedError", "default_config", "train",
           "validate"]
