"""On the Distributional Properties of Adaptive Gradients, Section 6 (Figs. 5-7): the update law
when the gradient is not iid N(0, 1).

The theory model (no momentum, eps = 0, simple-average preconditioner) fed with
g_t ~ N(0, t^2), N(0, 1/t^2) (Fig. 5, bimodality), N(-1, 1), N(-t, 1) (Fig. 6, skew) and the
standard Cauchy (Fig. 7, trimodality); histograms of Delta = (theta_t - theta_{t-1}) / lr at
t = 1..20 over many iid coordinates. Modes are counted on a lightly smoothed histogram (peaks with
a prominence of at least 3% of the highest smoothed bin).

    python experiments/distributional_properties_sec6_simulations.py [--out DIR] [--n 200000]
        [--steps 20]
"""

from __future__ import annotations

import _common
import numpy as np
from scipy import signal

from optaxlab import theory

PROCESSES = {
    "N(0, t^2)": theory.gaussian(std=lambda t: t),
    "N(0, 1/t^2)": theory.gaussian(std=lambda t: 1.0 / t),
    "N(-1, 1)": theory.gaussian(mean=-1.0),
    "N(-t, 1)": theory.gaussian(mean=lambda t: -t),
    "Cauchy": theory.cauchy(),
}
SHOW = (2, 3, 5, 10, 20)


def count_modes(counts: np.ndarray, smooth: int = 5, prominence: float = 0.03) -> int:
    """Number of peaks of the moving-average-smoothed histogram (zero-padded at both ends)."""
    c = np.convolve(counts.astype(float), np.ones(smooth) / smooth, mode="same")
    c = np.concatenate([[0.0], c, [0.0]])
    peaks, _ = signal.find_peaks(c, prominence=prominence * c.max())
    return len(peaks)


def main() -> None:
    p = _common.parser(__file__, __doc__)
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = _common.out_dir(args.out)
    plt = _common.plt()

    bins, lim = 200, 5.0
    fig, axes = plt.subplots(len(PROCESSES), 2, figsize=(13, 3.0 * len(PROCESSES)))
    rows, summary = [], []
    for i, (name, proc) in enumerate(PROCESSES.items()):
        res = theory.simulate("theory", proc, n=args.n, steps=args.steps, key=args.seed + i,
                              bins=bins, value_range=(-lim, lim))
        counts = np.asarray(res.counts)
        edges = np.asarray(res.edges)
        width = edges[1] - edges[0]
        mom = {k: np.asarray(v) for k, v in res.moments.items()}
        modes = [count_modes(counts[t]) for t in range(args.steps)]
        for t in range(args.steps):
            rows.append([name, t + 1, modes[t], float(mom["mean"][t]), float(mom["var"][t]),
                         float(mom["skew"][t]), float(mom["kurt"][t]), float(mom["abs_mean"][t]),
                         int(res.underflow[t] + res.overflow[t])])
        multi = [t + 1 for t in range(args.steps) if modes[t] >= 2]
        tri = [t + 1 for t in range(args.steps) if modes[t] >= 3]
        summary.append((name, modes, mom["skew"], multi, tri))
        dens = counts / (args.n * width)
        ax = axes[i, 0]
        ax.imshow(dens, aspect="auto", origin="lower", cmap="viridis",
                  extent=(-lim, lim, 0.5, args.steps + 0.5), vmax=np.quantile(dens, 0.995))
        ax.set_ylabel(f"{name}\nstep t")
        ax.set_xlabel(r"$\Delta$")
        ax.set_title(f"{name}: density of Delta over t (modes: {modes[:10]}...)", fontsize=9)
        ax = axes[i, 1]
        centers = 0.5 * (edges[1:] + edges[:-1])
        for t in SHOW:
            if t <= args.steps:
                ax.plot(centers, dens[t - 1], lw=1.2,
                        label=f"t={t}: {modes[t - 1]} mode(s), skew {mom['skew'][t - 1]:+.2f}")
        ax.set_ylim(0, min(np.max(dens[[t - 1 for t in SHOW if t <= args.steps]]) * 1.05, 3.0))
        ax.set_xlabel(r"$\Delta$")
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Distributional properties, Section 6: theory-model update, {args.n} coordinates")
    fig.tight_layout()
    files = [_common.save_fig(fig, out / "sec6_histograms.png")]
    files.append(_common.write_csv(
        out / "sec6_moments.csv",
        ["process", "t", "modes", "mean", "var", "skew", "excess_kurt", "abs_mean", "out_of_range"],
        rows))
    for name, modes, skew, multi, tri in summary:
        print(f"{name:12s} modes t=1..{args.steps}: {modes}")
        print(f"{'':12s} >= 2 modes at t = {multi};  >= 3 modes at t = {tri}")
        print(f"{'':12s} skew at t = 2, 5, 10, 20: "
              + ", ".join(f"{skew[t - 1]:+.3f}" for t in (2, 5, 10, 20) if t <= args.steps))
    _common.done(out, files)


if __name__ == "__main__":
    main()
