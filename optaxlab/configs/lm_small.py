"""lm_small: a 4-layer, d_model 256 byte-level transformer LM (CPU-trainable in an hour, fast
on one GPU).

python -m optaxlab.train --config lm_small --workdir runs/lm_small
"""

import ml_collections

from optaxlab.train.config import data_config, default_config, model_config, optimizer_config


def get_config() -> ml_collections.ConfigDict:
    c = default_config()
    c.seed = 0
    c.steps = 5000
    c.batch_size = 16
    c.seq_len = 256
    c.log_every = 20
    c.eval_every = 500
    c.eval_batches = 32
    c.checkpoint_every = 500
    c.keep_checkpoints = 3
    c.optimizer = optimizer_config("adamw", 1e-3, b2=0.95, weight_decay=0.1, max_norm=1.0)
    c.model = model_config("transformer", vocab_size=256, d_model=256, n_layers=4, n_heads=4,
                           max_len=256)
    c.data = data_config("stdlib_text")
    c.monitor.every = 20
    return c
