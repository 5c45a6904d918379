"""Demo: every optimizer of `optaxlab.optimizers` on the heterogeneous toy quadratic of
"In Search of Adam's Secret Sauce".

The 9-dim heterogeneous quadratic of its App. D (Hessian blocks with eigenvalues ~1, ~100,
~5000, Haar-rotated), stochastic gradients from 3 sampled rows of A = H^(1/2), w0 ~ N(0, I),
1000 steps, 3 seeds. Each optimizer runs with its default hyperparameters (weight decay 0) over a
small learning-rate grid (1e-5 .. 1e-1, vmapped: one compile per optimizer); the best learning
rate is the one with the lowest median (over seeds) loss averaged over the last 5% of steps.
Prints the table sorted by that final loss and writes a PNG of the loss curves.

    python experiments/demo_quadratic.py [--out DIR] [--steps 1000] [--seeds 3]
"""

from __future__ import annotations

import time

import _common
import numpy as np

from optaxlab import optimizers, theory

LRS = np.geomspace(1e-5, 1e-1, 9)


def main() -> None:
    p = _common.parser(__file__, __doc__)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=3, help="rows per gradient; 0 = full batch")
    p.add_argument("--kind", default="heterogeneous", choices=("heterogeneous", "homogeneous"))
    args = p.parse_args()
    out = _common.out_dir(args.out)
    plt = _common.plt()
    start = time.perf_counter()

    q = theory.toy_quadratic(args.kind, key=0)
    results = []
    for name in optimizers.names():
        res = theory.run_quadratic(
            q, lambda lr, name=name: optimizers.create(name, lr, weight_decay=0.0), LRS,
            steps=args.steps, seeds=tuple(range(args.seeds)), batch_size=args.batch_size or None,
            record_every=10)
        loss = np.asarray(res["loss"], np.float64)  # (lrs, seeds, records)
        n_tail = max(1, int(round(0.05 * (loss.shape[-1] - 1))))
        final = np.mean(loss[:, :, -n_tail:], axis=-1)  # (lrs, seeds)
        # Median over seeds: robust to a seed that diverged (inf/nan) or hit exactly 0.
        score = np.median(np.where(np.isfinite(final), final, np.inf), axis=1)
        best = int(np.argmin(score))
        results.append((float(score[best]), name, float(LRS[best]), loss[best],
                        np.asarray(res["steps"]), best in (0, len(LRS) - 1)))
    results.sort(key=lambda r: r[0])

    fig, ax = plt.subplots(figsize=(11, 6.5))
    cmap = plt.get_cmap("tab20")
    for i, (score, name, lr, curves, steps, _) in enumerate(results):
        ax.semilogy(steps, np.maximum(np.median(curves, axis=0), 1e-30), color=cmap(i % 20),
                    ls="-" if i < 10 else "--", label=f"{name} (lr {lr:.0e}): {score:.2e}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss f(w) - f* (median over seeds)")
    ax.set_title(f"All optimizers on the {args.kind} toy quadratic (Secret Sauce App. D), "
                 f"batch {args.batch_size or 'full'}, best lr of {len(LRS)}")
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    files = [_common.save_fig(fig, out / "demo_quadratic.png")]
    files.append(_common.write_csv(
        out / "demo_quadratic.csv", ["rank", "optimizer", "lr", "final_loss", "lr_at_grid_edge"],
        [[i + 1, r[1], r[2], r[0], r[5]] for i, r in enumerate(results)]))
    print(f"{'rank':>4s}  {'optimizer':24s} {'best lr':>8s}  final loss (median of {args.seeds})")
    for i, (score, name, lr, _, _, edge) in enumerate(results):
        note = "  (lr at grid edge)" if edge else ""
        print(f"{i + 1:4d}  {name:24s} {lr:8.0e}  {score:.3e}{note}")
    print(f"({time.perf_counter() - start:.0f} s)")
    _common.done(out, files)


if __name__ == "__main__":
    main()
