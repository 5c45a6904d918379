"""Beyond the papers: is it the noise? (Kunstner et al., ICLR 2023), the full-batch half: Adam,
SGD with momentum 0.9 and Signum on the digits CNN (optaxlab/configs/cnn_digits.py, 500
steps) at batch 64
and at full batch (all 1437 training images every step: no gradient noise), each tuned over its own
learning-rate grid, seed 0, ranked by the final training loss (the question is optimization, not
generalization, so no evaluation: the 360 validation images are fewer than one full batch; at
batch 64 the logged train loss is that of the last mini-batch).

    python -m optaxlab.sweep sweeps/noise_full_batch_digits.py --workdir runs/full_batch \
        --workers 2
"""

from optaxlab.sweep import product, sweep

GRIDS = {"adam": [1e-3, 3.16e-3, 1e-2], "signum": [3.16e-4, 1e-3, 3.16e-3],
         "momentum": [0.0316, 0.1, 0.316]}


def get_sweep():
    points = []
    for name, lrs in GRIDS.items():
        points += product({"optimizer.name": [name], "batch_size": [64, 1437],
                           "optimizer.learning_rate": lrs})
    return sweep(
        config="cnn_digits",
        overrides={"monitor.every": 0, "eval_every": 0, "checkpoint_every": 500,
                   "keep_checkpoints": 1},
        points=points,
        seeds=[0],
        group_by=["optimizer.name", "batch_size"],
        tune=["optimizer.learning_rate"],
        metric="final_train_loss",
        name="Is it the noise? Adam / SGD-m / Signum on the digits CNN, batch 64 vs full batch",
    )
