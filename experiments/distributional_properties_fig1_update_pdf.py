"""On the Distributional Properties of Adaptive Gradients, Fig. 1: the law of Adam's normalized
update, closed form vs Monte Carlo.

Left: the pdf family f_m for m = 2, 3, 5, 10, 50 and the normal limit. Right: histograms of the
theory model (no momentum, eps = 0, simple-average preconditioner, g ~ N(0, 1)) at m = 2, 3, 5, 20
over f_m, with the Kolmogorov-Smirnov statistic of each against the closed-form cdf.

    python experiments/distributional_properties_fig1_update_pdf.py [--out DIR] [--n 200000]
"""

from __future__ import annotations

import math

import _common
import jax
import numpy as np
from scipy import stats

from optaxlab import theory

MS = (2, 3, 5, 20)


def main() -> None:
    p = _common.parser(__file__, __doc__)
    p.add_argument("--n", type=int, default=200_000, help="Monte Carlo coordinates")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = _common.out_dir(args.out)
    plt = _common.plt()

    res = theory.simulate("theory", n=args.n, steps=max(MS), key=args.seed, keep_steps=MS)
    rows = []
    fig, axes = plt.subplots(1, 5, figsize=(22, 4))
    theory.plot_pdf_family(axes[0])
    axes[0].set_title("closed form f_m (Thm. 1)")
    for ax, row, m in zip(axes[1:], range(len(MS)), MS, strict=True):
        x = np.asarray(res.samples[row], np.float64)
        with jax.enable_x64(True):
            ks = stats.kstest(x, lambda v, m=m: np.asarray(theory.update_cdf(v, float(m))))
            var_abs_theory = float(theory.abs_update_variance(m))
        crit = 1.63 / math.sqrt(args.n)
        rows.append([m, args.n, float(ks.statistic), float(ks.pvalue), crit, float(np.var(x)), 1.0,
                     float(np.var(np.abs(x))), var_abs_theory])
        edge = math.sqrt(m)
        ax.hist(x, bins=120, range=(-edge, edge), density=True, alpha=0.55, label="Monte Carlo")
        grid = np.linspace(-edge, edge, 801)[1:-1]
        ax.plot(grid, np.asarray(theory.update_pdf(grid, float(m))), "k", lw=1.5, label="f_m")
        ax.set_ylim(0, 1.2 if m == 2 else 0.6)
        ax.set_title(f"m = {m}: KS D = {ks.statistic:.4f} (p = {ks.pvalue:.2f})")
        ax.set_xlabel(r"$\Delta$")
        ax.legend(loc="lower center" if m == 2 else "upper right", fontsize=8)
    fig.suptitle(f"Distributional properties, Fig. 1: update law of the theory model, "
                 f"{args.n} coordinates")
    files = [_common.save_fig(fig, out / "fig1_update_pdf.png")]
    header = ["m", "n", "ks_stat", "ks_pvalue", "ks_crit_1pct", "var_mc", "var_theory",
              "abs_var_mc", "abs_var_theory"]
    files.append(_common.write_csv(out / "ks.csv", header, rows))
    print("m    KS D     p      crit(1%)  Var[D] MC  Var|D| MC  Var|D| theory")
    for r in rows:
        print(f"{r[0]:<4d} {r[2]:.5f}  {r[3]:.3f}  {r[4]:.5f}   {r[5]:.4f}     {r[7]:.4f}     "
              f"{r[8]:.4f}")
    _common.done(out, files)


if __name__ == "__main__":
    main()
