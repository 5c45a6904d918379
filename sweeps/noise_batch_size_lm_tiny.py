"""Beyond the papers: is it the noise? Kunstner et al., "Noise is not the main factor behind the
gap between SGD and Adam on transformers, but sign descent might be" (ICLR 2023), at laptop scale.

Adam, SGD with momentum (the registry's `momentum`, 0.9) and Signum on lm_tiny at batch 8, 32 and
128 sequences of 64 bytes with an equal budget of 4800 sequences (600 / 150 / 38 steps; warmup 10%
+ cosine as in the config), each tuned over its own 4-5-point lr grid, seed 0, no gradient
clipping for any of them (max_norm = 1e9, never binding), no weight decay; every run is evaluated
on the same 1024 validation sequences. If noise made the gap,
it would shrink as the batch grows; Kunstner et al. find it grows, and Signum tracks Adam at large
batch.

    python -m optaxlab.sweep sweeps/noise_batch_size_lm_tiny.py --workdir runs/noise_batch \
        --workers 2
"""

from optaxlab.sweep import product, sweep, zipped

# First run with 3 values each; widened (twice) where a best sat on the grid's edge (Adam and
# Signum upwards at large batch, SGD downwards).
GRIDS = {"adam": [1e-3, 3.16e-3, 1e-2, 3.16e-2],
         "signum": [3.16e-4, 1e-3, 3.16e-3, 1e-2, 3.16e-2],
         "momentum": [0.01, 0.0316, 0.1, 0.316, 1.0]}


def get_sweep():
    # eval_batches x batch_size = 1024 validation sequences for every batch size
    shapes = zipped({"batch_size": [8, 32, 128], "steps": [600, 150, 38],
                     "eval_batches": [128, 32, 8]})
    points = []
    for name, lrs in GRIDS.items():
        for shape in shapes:
            points += [dict(shape, **p) for p in product({"optimizer.name": [name],
                                                          "optimizer.learning_rate": lrs})]
    return sweep(
        config="lm_tiny",
        overrides={"monitor.every": 0, "eval_every": 1000,
                   "checkpoint_every": 1000, "keep_checkpoints": 1, "log_every": 5,
                   "optimizer.max_norm": 1e9},
        points=points,
        seeds=[0],
        group_by=["optimizer.name", "batch_size"],
        tune=["optimizer.learning_rate"],
        name="Is it the noise? Adam / SGD-m / Signum on lm_tiny vs batch size, equal tokens",
    )
