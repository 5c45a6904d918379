"""Why Adam Beats SGD for Attention Models at laptop scale: ACClip on lm_tiny, tuned over its
learning rate, in the setting of sweeps/secret_sauce_table1_lm_tiny.py (same base config, same
overrides, same seeds), so its results compare directly with that sweep's Adam, SGD+Gclip and SGD.

ACClip (the registry's `acclip`, the paper's defaults b1 0.9, b2 0.99, alpha 1, eps 1e-5, weight
decay 1e-5; plus lm_tiny's global-norm clip to 1 of the raw gradient, as every other method of the
comparison but vanilla SGD) clips the momentum per coordinate at an EMA of |g|: its steps are in
gradient units, so its learning rates are SGD-like.

Stage 1: python -m optaxlab.sweep sweeps/acclip_lm_tiny.py --workdir runs/acclip --workers 2 \
    --only seed=0
Stage 2: the two other seeds of the best stage-1 learning rate (--only 'lr=<best>').
"""

from optaxlab.sweep import log_grid, product, sweep


def get_sweep():
    return sweep(
        config="configs/lm_tiny.py",
        overrides={"monitor.every": 0, "eval_every": 300, "eval_batches": 32,
                   "checkpoint_every": 300, "keep_checkpoints": 1},
        points=product({"optimizer.name": ["acclip"],
                        "optimizer.learning_rate": log_grid(1e-2, 10**0.5, per_decade=2)}),
        seeds=[0, 1, 2],
        group_by=["optimizer.name"],
        name="ACClip on lm_tiny (300 steps), the Table 1 setting",
    )
