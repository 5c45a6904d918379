"""Adam vs Signum on lm_tiny, each tuned over its own learning-rate grid, two seeds per setting.

python -m optaxlab.sweep sweeps/lr_optimizer_lm_tiny.py --workdir runs/sweep --workers 2

20 points of 300 steps each. They run vectorized by default (docs/sweeps.md, "Vectorized
sweeps"): the 10 Adam points (5 learning rates x 2 seeds) share one compiled program, the 10
Signum points another;
with --workers 2 each group runs in its own process on its own core (--no-vectorize: one trainer
process per point, ~15-20 s each on one core of a laptop CPU, most of it JAX import and
compiles). The grids are log-spaced, 2 values per decade, one decade apart: Signum's steps are
sign(m) * lr, so its good learning rates sit lower than Adam's.
"""

from optaxlab.sweep import log_grid, product, sweep


def get_sweep():
    points = (
        product({"optimizer.name": ["adam"],
                 "optimizer.learning_rate": log_grid(1e-3, 1e-1, per_decade=2)})
        + product({"optimizer.name": ["signum"],
                   "optimizer.learning_rate": log_grid(1e-4, 1e-2, per_decade=2),
                   "optimizer.max_norm": [1.0]})  # lm_tiny's clip, as Adam has it
    )
    return sweep(
        config="lm_tiny",
        overrides={"monitor.every": 0},  # no per-step histograms: a sweep compares end results
        points=points,
        seeds=[0, 1],
    )
