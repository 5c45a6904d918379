"""mlp_digits: a 2-hidden-layer MLP on scikit-learn's bundled 8x8 digits."""

import ml_collections

from optaxlab.train.config import data_config, default_config, model_config, optimizer_config


def get_config() -> ml_collections.ConfigDict:
    c = default_config()
    c.seed = 0
    c.steps = 500
    c.batch_size = 64
    c.log_every = 10
    c.eval_every = 100
    c.eval_batches = 0  # the whole validation split
    c.checkpoint_every = 250
    c.keep_checkpoints = 2
    c.optimizer = optimizer_config("adam", 1e-3)
    c.optimizer.warmup_fraction = 0.0
    c.model = model_config("mlp", num_classes=10, hidden=(256, 256), input_shape=(8, 8, 1))
    c.data = data_config("digits")
    c.monitor.every = 10
    return c
