"""On the Distributional Properties of Adaptive Gradients, Fig. 3 (theory half): Var[Delta] and
Var[|Delta|] vs m, Monte Carlo vs closed form.

The theory model's update has Var[Delta] = 1 for every m (Corollary 1) and
Var[|Delta|] = 1 - 4m Gamma(m/2)^2 / ((m-1)^2 pi Gamma((m-1)/2)^2) (Corollary 2), rising from
1 - 8/pi^2 at m = 2 to 1 - 2/pi. With a denominator independent of the numerator the ratio is
Student-t with m dof, whose variance m/(m-2) diverges at m = 2 (eq. 34).

Monte Carlo: the theory model simulated for M steps (step m uses the first m gradients), and the
independent-denominator ratio g_0 / sqrt(mean_{i<=m} g_i^2) for comparison.

    python experiments/distributional_properties_fig3_variance.py [--out DIR] [--n 200000]
        [--m-max 50]
"""

from __future__ import annotations

import _common
import jax
import jax.numpy as jnp
import numpy as np

from optaxlab import theory


def main() -> None:
    p = _common.parser(__file__, __doc__)
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--m-max", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = _common.out_dir(args.out)
    plt = _common.plt()

    res = theory.simulate("theory", n=args.n, steps=args.m_max, key=args.seed)
    m = np.arange(1, args.m_max + 1)
    var_mc = np.asarray(res.moments["var"])
    abs_var_mc = np.asarray(res.moments["abs_var"])
    with jax.enable_x64(True):
        abs_var = np.asarray(theory.abs_update_variance(m.astype(np.float64)))
        t_var = np.asarray(theory.student_t_variance(m.astype(np.float64)))

    # Independent denominator: numerator g_0 independent of the m gradients averaged below.
    @jax.jit
    def student_var(key):
        k0, k1 = jax.random.split(key)
        g0 = jax.random.normal(k0, (args.n,))
        g = jax.random.normal(k1, (args.m_max, args.n))
        mean_sq = jnp.cumsum(g * g, axis=0) / jnp.arange(1, args.m_max + 1)[:, None]
        return jnp.var(g0[None] / jnp.sqrt(mean_sq), axis=1)

    t_var_mc = np.asarray(student_var(jax.random.key(args.seed + 1)))

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    theory.plot_variance_curves(axes[0], m_max=args.m_max)
    sel = m >= 2
    axes[0].plot(m[sel], var_mc[sel], "o", ms=3, color="C0", label=r"MC Var[$\Delta$]")
    axes[0].plot(m[sel], abs_var_mc[sel], "s", ms=3, color="C1", label=r"MC Var[$|\Delta|$]")
    ok = m >= 5  # the Student-t sample variance needs a finite 4th moment (m > 4) to settle
    axes[0].plot(m[ok], t_var_mc[ok], "^", ms=3, color="C2", label="MC independent denominator")
    axes[0].legend(fontsize=8, loc="upper right")
    axes[0].set_title("Distributional properties, Fig. 3 (theory): variances vs m")
    axes[1].plot(m[sel], abs_var_mc[sel] - abs_var[sel], "s-", ms=3, label=r"MC $-$ Cor. 2")
    axes[1].plot(m[sel], var_mc[sel] - 1.0, "o-", ms=3, label=r"MC $-$ Cor. 1")
    se = np.sqrt(2.0 / args.n)
    axes[1].axhspan(-2 * se, 2 * se, color="gray", alpha=0.2, label=r"$\pm 2\sqrt{2/n}$")
    axes[1].set_xlabel("m")
    axes[1].set_ylabel("Monte Carlo minus closed form")
    axes[1].legend(fontsize=8)
    axes[1].set_title(f"residuals ({args.n} coordinates)")
    files = [_common.save_fig(fig, out / "fig3_variance.png")]
    rows = [[int(mi), float(var_mc[i]), 1.0, float(abs_var_mc[i]), float(abs_var[i]),
             float(t_var_mc[i]), float(t_var[i])] for i, mi in enumerate(m)]
    files.append(_common.write_csv(
        out / "variance.csv",
        ["m", "var_mc", "var_theory", "abs_var_mc", "abs_var_theory", "student_var_mc",
         "student_var_theory"], rows))
    print("m    Var[D] MC  Var|D| MC  Var|D| Cor.2  Student-t MC  m/(m-2)")
    for r in rows:
        if r[0] in (1, 2, 3, 4, 5, 10, 20, 50):
            print(f"{r[0]:<4d} {r[1]:.4f}     {r[3]:.4f}     {r[4]:.4f}       {r[5]:<12.4g}  "
                  f"{r[6]:.4g}")
    _common.done(out, files)


if __name__ == "__main__":
    main()
