"""In Search of Adam's Secret Sauce, Tables 2-3 at laptop scale: ablations of Adam with equal betas
(b1 = b2 = 0.95) and of Signum with a fixed mollifier, on lm_tiny in the setting of
sweeps/secret_sauce_table1_lm_tiny.py (300 steps, wd 0.1 decoupled, clip 1), three seeds each.

- Adam eps in {1e-8, 1e-12, 1e-15, 0} (zero-initialized moments, bias correction): Table 2.
- Adam without bias correction (ZI), and with gradient-initialized moments (GI: m_1 = g_1,
  v_1 = g_1^2; the registry refuses GI with bias correction, which GI does not need): Table 3.
- Signum with a fixed mollifier m / sqrt(m^2 + sigma^2), sigma^2 = 1e-8 (the registry's default;
  the paper's value was lost in our copy of its text), ZI and GI: Tables 2-3.
Learning rates: Table 1's best for Adam (3.16e-3) and Signum (1e-3); not re-tuned per ablation.

    python -m optaxlab.sweep sweeps/secret_sauce_ablations_lm_tiny.py --workdir runs/ablations \
        --workers 2
"""

from optaxlab.sweep import sweep

ADAM = {"optimizer.name": "adam", "optimizer.learning_rate": 3.16e-3, "optimizer.b1": 0.95,
        "optimizer.b2": 0.95}
MOLLIFIER = {"optimizer.name": "signum_fixed_mollifier", "optimizer.learning_rate": 1e-3,
             "optimizer.beta": 0.9, "optimizer.variance": 1e-8,
             "optimizer.max_norm": 1.0}  # as it ran: lm_tiny's clip (not its registry default)


def get_sweep():
    points = [dict(ADAM, **{"optimizer.eps": eps}) for eps in (1e-8, 1e-12, 1e-15, 0.0)]
    points += [
        dict(ADAM, **{"optimizer.bias_correction": False}),
        dict(ADAM, **{"optimizer.init": "first", "optimizer.bias_correction": False}),
        dict(MOLLIFIER, **{"optimizer.init": "zero"}),
        dict(MOLLIFIER, **{"optimizer.init": "first"}),
    ]
    return sweep(
        config="lm_tiny",
        overrides={"monitor.every": 0, "eval_every": 300, "eval_batches": 32,
                   "checkpoint_every": 300, "keep_checkpoints": 1, "optimizer.weight_decay": 0.1},
        points=points,
        seeds=[0, 1, 2],
        group_by=["optimizer.name", "optimizer.eps", "optimizer.bias_correction",
                  "optimizer.init"],
        tune=[],
        name="Secret Sauce Tables 2-3 ablations on lm_tiny",
    )
