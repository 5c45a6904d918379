"""lm_tiny: a 2-layer byte-level transformer LM that trains on 2 CPU cores in about a minute.

python -m optaxlab.train --config lm_tiny --workdir runs/lm_tiny
"""

import ml_collections

from optaxlab.train.config import data_config, default_config, model_config, optimizer_config


def get_config() -> ml_collections.ConfigDict:
    c = default_config()
    c.seed = 0
    c.steps = 300
    c.batch_size = 16
    c.seq_len = 64
    c.log_every = 10
    c.eval_every = 100
    c.eval_batches = 8
    c.checkpoint_every = 100
    c.keep_checkpoints = 2
    c.optimizer = optimizer_config("adam", 3e-3, b2=0.95, max_norm=1.0)
    c.model = model_config("transformer", vocab_size=256, d_model=64, n_layers=2, n_heads=4,
                           max_len=64)
    c.data = data_config("stdlib_text")
    c.monitor.every = 1  # per-step update histograms (the demo shows them; sweeps set 0)
    return c
