"""cnn_digits: the small CNN of "Gradient Spread as an Intuition for the Adam Optimizer"
(conv -> pool -> conv -> pool -> fc -> fc, BatchNorm + ReLU) on scikit-learn's bundled 8x8 digits. For CIFAR-10 from local files:
  --config.data.name=cifar10 --config.data.path=/data/cifar10 --config.model.input_shape='(32, 32, 3)'
"""

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
    c.optimizer = optimizer_config("adam", 1e-3, b1=0.9, b2=0.999)
    c.optimizer.warmup_fraction = 0.0
    c.model = model_config("cnn", num_classes=10, channels=(32, 64), hidden=128,
                           input_shape=(8, 8, 1))
    c.data = data_config("digits")
    c.monitor.every = 10
    return c
