"""Why Adam Beats SGD for Attention Models at laptop scale: ACClip on lm_tiny, tuned over its
learning rate and its threshold decay b2, in the setting of sweeps/secret_sauce_table1_lm_tiny.py
(same base config, same overrides, same seeds), so its results compare directly with that sweep's
Adam, SGD+Gclip and SGD.

Every ACClip hparam is set here, none is inherited from lm_tiny's Adam block: the paper's b1 0.9,
alpha 1, eps 1e-5, weight decay 1e-5, plus lm_tiny's global-norm clip to 1 of the raw gradient (as
every other method of the comparison but vanilla SGD). b2 (the EMA of |g| that sets the clipping
threshold) is swept: the paper's 0.99, and 0.95 / 0.999 around it. ACClip clips the momentum per
coordinate at that threshold, so its steps are in gradient units and its learning rates SGD-like.

Stage 1: python -m optaxlab.sweep sweeps/acclip_lm_tiny.py --workdir runs/acclip --workers 2 \
    --only seed=0
Stage 2: the two other seeds of each b2's best stage-1 learning rate.
(experiments/why_adam_beats_sgd_acclip_lm.py runs both.)
"""

from optaxlab.sweep import log_grid, product, sweep


def get_sweep():
    return sweep(
        config="lm_tiny",
        overrides={"monitor.every": 0, "eval_every": 300, "eval_batches": 32,
                   "checkpoint_every": 300, "keep_checkpoints": 1,
                   "optimizer.name": "acclip", "optimizer.b1": 0.9, "optimizer.alpha": 1.0,
                   "optimizer.eps": 1e-5, "optimizer.weight_decay": 1e-5,
                   "optimizer.max_norm": 1.0},
        points=product({"optimizer.b2": [0.95, 0.99, 0.999],
                        "optimizer.learning_rate": log_grid(1e-2, 10, per_decade=2)}),
        seeds=[0, 1, 2],
        group_by=["optimizer.b2"],
        name="ACClip on lm_tiny (300 steps), the Table 1 setting, b2 swept",
    )
