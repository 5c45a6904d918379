"""lm_160m: the Pythia-160M shape of "In Search of Adam's Secret Sauce" (12 layers x 768,
12 heads, seq 2048, batch 256, bf16 compute, AdamW wd 0.1, warmup 10% + cosine, global-norm clip 1).

Byte-level (vocab 256) on the bundled corpus by default; for the paper's setting point
config.data at your own tokenized nanoGPT-style .bin files and set the vocabulary, e.g.
  --config.data.name=memmap --config.data.path=/data/slimpajama --config.model.vocab_size=50304
Needs accelerators: e.g. --config.mesh.fsdp=-1 shards parameters and optimizer state over all
devices (batch over data x fsdp).
"""

import ml_collections

from optaxlab.train.config import data_config, default_config, model_config, optimizer_config


def get_config() -> ml_collections.ConfigDict:
    c = default_config()
    c.seed = 0
    c.steps = 6100  # ~3.2B tokens (Chinchilla-optimal 20 tokens/param) at 256 x 2048
    c.batch_size = 256
    c.seq_len = 2048
    c.log_every = 50
    c.eval_every = 1000
    c.eval_batches = 50
    c.checkpoint_every = 1000
    c.keep_checkpoints = 3
    c.optimizer = optimizer_config("adamw", 1e-3, b2=0.95, weight_decay=0.1, max_norm=1.0)
    c.model = model_config("transformer", vocab_size=256, d_model=768, n_layers=12, n_heads=12,
                           max_len=2048, compute_dtype="bfloat16")
    c.data = data_config("stdlib_text")
    c.monitor.every = 100
    return c
