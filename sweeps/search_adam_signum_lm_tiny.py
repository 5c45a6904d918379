"""Adam vs Signum on lm_tiny at an equal tuning budget: 8 quasi-random trials each over the
learning rate and the first momentum, two seeds per trial, and the steps each needs to reach an
eval loss of 2.6.

python -m optaxlab.sweep sweeps/search_adam_signum_lm_tiny.py --workdir runs/search --workers 2

32 points of 300 steps; each optimizer's 16 run as one vectorized program. summary.md compares
the two at equal budgets (the best of N trials with a bootstrap interval, "Equal tuning
budgets"), pairs the seeds (seed s reads the same batches for both), and ranks by time to
target. To double the budget, set TRIALS = 16 and rerun the same command: the first 8 trials
of each optimizer are the same points (a Sobol sequence's prefix) and are reused, not rerun.
Signum's steps are sign(m) * lr, so its search range sits a decade below Adam's.
"""

from optaxlab.sweep import linear, log, quasirandom, sweep

TRIALS = 8


def get_sweep():
    adam = {"optimizer.learning_rate": log(1e-3, 1e-1), "optimizer.b1": linear(0.8, 0.95)}
    signum = {"optimizer.learning_rate": log(1e-4, 1e-2), "optimizer.beta": linear(0.8, 0.95)}
    points = (quasirandom(adam, TRIALS, fixed={"optimizer.name": "adam"})
              + quasirandom(signum, TRIALS, fixed={"optimizer.name": "signum",
                                                    "optimizer.max_norm": 1.0}))  # Adam's clip
    return sweep(config="lm_tiny", overrides={"monitor.every": 0}, points=points,
                 seeds=[0, 1], target={"eval_loss": 2.6})
