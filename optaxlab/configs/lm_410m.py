"""lm_410m: the Pythia-410M shape of "In Search of Adam's Secret Sauce" (24 layers x 1024,
16 heads, seq 2048, batch 256, bf16 compute, AdamW wd 0.1, warmup 10% + cosine, global-norm clip 1). See lm_160m.py for data.

Sized for several accelerators: e.g. --config.mesh.fsdp=-1 (or data=2, fsdp=-1 across hosts).
"""

import ml_collections

from optaxlab.train.config import data_config, default_config, model_config, optimizer_config


def get_config() -> ml_collections.ConfigDict:
    c = default_config()
    c.seed = 0
    c.steps = 15600  # ~8.2B tokens (20 tokens/param) at 256 x 2048
    c.batch_size = 256
    c.seq_len = 2048
    c.log_every = 50
    c.eval_every = 1000
    c.eval_batches = 50
    c.checkpoint_every = 1000
    c.keep_checkpoints = 3
    c.optimizer = optimizer_config("adamw", 6e-4, b2=0.95, weight_decay=0.1, max_norm=1.0)
    c.model = model_config("transformer", vocab_size=256, d_model=1024, n_layers=24, n_heads=16,
                           max_len=2048, compute_dtype="bfloat16")
    c.data = data_config("stdlib_text")
    c.mesh.data = 1
    c.mesh.fsdp = -1
    c.monitor.every = 100
    return c
