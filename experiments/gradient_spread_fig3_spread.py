"""Gradient Spread as an Intuition for the Adam Optimizer, Fig. 3: gradient spread on f(x) = x^2
(full batch), Adam b1 = b2 = 0.99 vs vanilla gradient descent vs SGD+momentum.

Both optimizers start at x0 = 1. For each step we measure the normalized step |Delta_t| =
|x_t - x_{t-1}| / lr, the gradient |f'(x_t)| and the spread gamma_t = sqrt(v_t - m_t^2)/|m_t| from
bias-corrected EMAs (beta = 0.99) of the gradient. For Adam with b1 = b2 and eps = 0 the step is
exactly 1/sqrt(1 + gamma^2) (the paper's Section 2); for GD and SGD it tracks the gradient
instead. All variation in the gradient comes from the parameter's own motion: Adam oscillates
around the optimum; the paper says vanilla GD "zips straight to 0" (run here at Adam's lr).

    python experiments/gradient_spread_fig3_spread.py [--out DIR] [--steps 1500]
"""

from __future__ import annotations

import _common
import jax.numpy as jnp
import numpy as np

from optaxlab import theory

BETA = 0.99


def run(name, lr, hparams, steps):
    res = theory.simulate(name, lambda key, t, p: 2.0 * p, n=1, steps=steps, learning_rate=lr,
                          hparams=hparams, spread_beta=BETA, params0=jnp.ones(1),
                          bins=10, value_range=(-2.0, 2.0))
    m = {k: np.asarray(v) for k, v in res.moments.items()}
    return {
        "loss": m["param_sq_mean"],  # f(x_t) = x_t^2 after step t
        "step": m["abs_mean"],
        "grad": m["grad_abs_mean"],  # |f'(x_{t-1})|, the gradient used at step t
        "spread": m["spread_mean"],
        "pred": m["step_pred_mean"],
    }


def main() -> None:
    p = _common.parser(__file__, __doc__)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--adam-lr", type=float, default=0.01)
    p.add_argument("--sgd-lr", type=float, default=0.001)
    p.add_argument("--gd-lr", type=float, default=0.01)
    args = p.parse_args()
    out = _common.out_dir(args.out)
    plt = _common.plt()

    runs = {
        "Adam b1=b2=0.99": run("adam", args.adam_lr, dict(b1=BETA, b2=BETA, eps=0.0), args.steps),
        "GD (no momentum)": run("sgd", args.gd_lr, {}, args.steps),
        "SGD momentum 0.99": run("momentum", args.sgd_lr, dict(momentum=BETA), args.steps),
    }
    t = np.arange(1, args.steps + 1)
    fig, axes = plt.subplots(len(runs), 3, figsize=(16, 4.5 * len(runs)))
    rows = []
    for r, (name, d) in enumerate(runs.items()):
        ax = axes[r, 0]
        ax.semilogy(t, np.maximum(d["loss"], 1e-30))
        ax.set_title(f"{name}: loss f(x_t)")
        ax.set_xlabel("step t")
        ax = axes[r, 1]
        sc = ax.scatter(d["grad"], d["step"], c=t, s=4, cmap="viridis")
        ax.set_xscale("log")
        ax.set_xlabel("|mean gradient| |f'(x)|")
        ax.set_ylabel(r"step $|\Delta_t|$")
        ax.set_title(f"{name}: gradient vs step")
        ax = axes[r, 2]
        ax.scatter(d["spread"], d["step"], c=t, s=4, cmap="viridis")
        g = np.geomspace(1e-3, 1e3, 400)
        ax.plot(g, theory.predicted_step(g), "k:", label=r"$1/\sqrt{1+\gamma^2}$")
        ax.set_xscale("log")
        ax.set_xlabel(r"spread $\gamma_t$")
        ax.set_ylabel(r"step $|\Delta_t|$")
        ax.legend()
        ax.set_title(f"{name}: spread vs step")
        fig.colorbar(sc, ax=axes[r, 1], label="step t")
        err = np.abs(d["step"] - d["pred"])
        corr_grad = np.corrcoef(np.log(d["grad"] + 1e-30), np.log(d["step"] + 1e-30))[0, 1]
        rows.append([name, float(d["loss"][-1]), float(np.max(err[1:])), float(np.median(err)),
                     float(corr_grad)])
        print(f"{name:20s} final f = {d['loss'][-1]:.3e}; max |step - 1/sqrt(1+gamma^2)| "
              f"(t >= 2) = {np.max(err[1:]):.2e}, median = {np.median(err):.2e}; "
              f"corr(log|g|, log step) = {corr_grad:+.3f}")
    fig.suptitle("Gradient spread, Fig. 3: f(x) = x^2, full batch (color = step)")
    fig.tight_layout()
    files = [_common.save_fig(fig, out / "fig3_spread.png")]
    files.append(_common.write_csv(
        out / "summary.csv",
        ["optimizer", "final_loss", "max_abs_step_minus_pred", "median_abs_step_minus_pred",
         "corr_log_grad_log_step"], rows))
    files.append(_common.write_csv(
        out / "trajectories.csv",
        ["optimizer", "t", "loss", "step", "grad_abs", "spread", "pred_step"],
        [[name, int(i + 1), float(d["loss"][i]), float(d["step"][i]), float(d["grad"][i]),
          float(d["spread"][i]), float(d["pred"][i])]
         for name, d in runs.items() for i in range(args.steps)]))
    _common.done(out, files)


if __name__ == "__main__":
    main()
