"""In Search of Adam's Secret Sauce, Takeaway 2 at laptop scale: Adam over a b1 x b2 grid on
lm_tiny at the best learning rate of sweeps/secret_sauce_table1_lm_tiny.py (3.16e-3, found at
(0.9, 0.95)), in that sweep's setting (300 steps, wd 0.1 decoupled, clip 1). Is b1 = b2
near-optimal here?

The paper tunes the learning rate in every cell; here it is fixed (budget), which favours cells
near (0.9, 0.95). Stage 1: seed 0 in every cell; stage 2: seeds 1 and 2 in the best cell and in
the best equal-beta cell, to measure their distance in seed standard deviations.

    python -m optaxlab.sweep sweeps/secret_sauce_betas_lm_tiny.py --workdir runs/betas \
        --workers 2 --only seed=0
    python -m optaxlab.sweep sweeps/secret_sauce_betas_lm_tiny.py --workdir runs/betas \
        --workers 2 --only 'b1=<best>,b2=<best>' --only 'b1=<diag>,b2=<diag>'

The report draws plots/heatmap_b1_b2.png.
"""

from optaxlab.sweep import product, sweep

# First run with [0.8, 0.9, 0.95, 0.975], where the best b1 sat on the lower edge: 0.65 added.
BETAS = [0.65, 0.8, 0.9, 0.95, 0.975]


def get_sweep():
    return sweep(
        config="lm_tiny",
        overrides={"monitor.every": 0, "eval_every": 300, "eval_batches": 32,
                   "checkpoint_every": 300, "keep_checkpoints": 1,
                   "optimizer.learning_rate": 3.16e-3, "optimizer.weight_decay": 0.1},
        points=product({"optimizer.b1": BETAS, "optimizer.b2": BETAS}),
        seeds=[0, 1, 2],
        tune=["optimizer.b1", "optimizer.b2"],
        heatmaps=[["optimizer.b1", "optimizer.b2"]],
        name="Secret Sauce Takeaway 2: Adam b1 x b2 on lm_tiny at lr 3.16e-3",
    )
