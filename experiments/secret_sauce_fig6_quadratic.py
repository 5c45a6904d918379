"""In Search of Adam's Secret Sauce, Fig. 6: heterogeneous vs homogeneous toy quadratic; tuned
SGD-momentum / Signum / Adam.

The 9-dim quadratics of its App. D (three 3x3 blocks, Haar-rotated; heterogeneous spectrum
[[1,2,3],[99,100,101],[4998,4999,5000]] vs homogeneous [[1,99,4998],[2,100,4999],[3,101,5000]]),
stochastic gradients from `--batch-size` sampled rows of A = H^(1/2) (0: full batch). Each optimizer
(`optaxlab.optimizers`: momentum, signum, adam_equal_betas) is tuned over a learning-rate x beta
grid by the geometric mean, over seeds, of the loss averaged over the last 5% of steps. Top row:
loss curves of the tuned configurations (median over seeds, band = min..max). Bottom row: the
per-block mean of Adam's variance estimate s_t^2 = v^_t - m^_t^2 over time for the tuned Adam.
The paper expects Adam(b1=b2) < Signum < SGD on the heterogeneous problem, a closed gap on the
homogeneous one.

    python experiments/secret_sauce_fig6_quadratic.py [--out DIR] [--steps 2000] [--seeds 8]
"""

from __future__ import annotations

import _common
import numpy as np

from optaxlab import optimizers, theory

LRS = np.geomspace(1e-6, 1e-1, 21)
BETAS = (0.0, 0.5, 0.8, 0.9, 0.95, 0.99)
OPTS = {  # label -> (registry name, beta keyword)
    "SGD-momentum": ("momentum", "momentum"),
    "Signum": ("signum", "beta"),
    "Adam(b1=b2)": ("adam_equal_betas", "beta"),
}


def tune(q, name, beta_kw, steps, seeds, batch_size, tail):
    cfg = np.array([(lr, b) for lr in LRS for b in BETAS], np.float32)
    out = theory.run_quadratic(
        q, lambda c: optimizers.create(name, c[0], **{beta_kw: c[1]}), cfg, steps=steps,
        seeds=seeds, batch_size=batch_size, record_every=10)
    loss = np.asarray(out["loss"], np.float64)  # (configs, seeds, records)
    n_tail = max(1, int(round(tail * (loss.shape[-1] - 1))))
    with np.errstate(invalid="ignore", divide="ignore"):
        final = np.mean(loss[:, :, -n_tail:], axis=-1)  # (configs, seeds)
        score = np.mean(np.log(np.where(np.isfinite(final), final, np.inf)), axis=1)
    score[~np.isfinite(score)] = np.inf
    best = int(np.argmin(score))
    return dict(lr=float(cfg[best, 0]), beta=float(cfg[best, 1]), score=float(np.exp(score[best])),
                final=final[best], curves=loss[best], steps=np.asarray(out["steps"]),
                lr_edge=best // len(BETAS) in (0, len(LRS) - 1))


def main() -> None:
    p = _common.parser(__file__, __doc__)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=3, help="rows per gradient; 0 = full batch")
    p.add_argument("--problem-seed", type=int, default=0, help="seed of the Haar rotations")
    args = p.parse_args()
    out = _common.out_dir(args.out)
    plt = _common.plt()
    batch = args.batch_size or None
    seeds = tuple(range(args.seeds))

    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    rows = []
    for col, kind in enumerate(("heterogeneous", "homogeneous")):
        q = theory.toy_quadratic(kind, key=args.problem_seed)
        results = {}
        for label, (name, beta_kw) in OPTS.items():
            r = tune(q, name, beta_kw, args.steps, seeds, batch, tail=0.05)
            results[label] = r
            rows.append([kind, label, r["lr"], r["beta"], r["score"], float(np.median(r["final"])),
                         float(np.max(r["final"])), r["lr_edge"]])
            ax = axes[0, col]
            med = np.median(r["curves"], axis=0)
            ax.semilogy(r["steps"], med, label=f"{label} (lr {r['lr']:.1e}, beta {r['beta']:g})")
            ax.fill_between(r["steps"], r["curves"].min(0), r["curves"].max(0), alpha=0.2)
        ax = axes[0, col]
        ax.set_title(f"{kind} (batch {args.batch_size or 'full'}), tuned, {args.seeds} seeds")
        ax.set_xlabel("step")
        ax.set_ylabel("loss f(w) - f*")
        ax.legend(fontsize=8)
        # Adam's per-block variance estimate for the tuned configuration.
        ra = results["Adam(b1=b2)"]
        track = theory.run_quadratic(
            q, lambda lr: optimizers.create("adam_equal_betas", lr, beta=ra["beta"]),
            [ra["lr"]], steps=args.steps, seeds=seeds, batch_size=batch, track_beta=ra["beta"],
            record_every=10)
        bv = np.median(np.asarray(track["block_var"])[0], axis=0)  # (records, blocks)
        ax = axes[1, col]
        lam = np.asarray(q.eigenvalues)
        for b in range(bv.shape[1]):
            ax.semilogy(np.asarray(track["steps"])[1:], bv[:, b],
                        label=f"block {b + 1}: eigenvalues {lam[b].astype(int).tolist()}")
        ax.set_title(f"{kind}: Adam(b1=b2={ra['beta']:g}) variance estimate per block")
        ax.set_xlabel("step")
        ax.set_ylabel(r"mean $\hat s_t^2 = \hat v_t - \hat m_t^2$ (median over seeds)")
        ax.legend(fontsize=8)
    fig.suptitle("Secret Sauce Fig. 6: toy quadratics (App. D)")
    fig.tight_layout()
    files = [_common.save_fig(fig, out / "fig6_quadratic.png")]
    files.append(_common.write_csv(
        out / "tuned.csv",
        ["problem", "optimizer", "lr", "beta", "geomean_final_loss", "median_final_loss",
         "worst_final_loss", "lr_at_grid_edge"], rows))
    print(f"{'problem':14s} {'optimizer':13s} {'lr':>9s} {'beta':>5s} {'geomean':>10s} "
          f"{'median':>10s} {'worst':>10s}")
    for r in rows:
        edge = "  (lr at grid edge)" if r[7] else ""
        print(f"{r[0]:14s} {r[1]:13s} {r[2]:9.2e} {r[3]:5.2f} {r[4]:10.3e} {r[5]:10.3e} "
              f"{r[6]:10.3e}{edge}")
    _common.done(out, files)


if __name__ == "__main__":
    main()
