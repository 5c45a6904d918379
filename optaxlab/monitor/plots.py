"""Matplotlib figures shared by the TensorBoard images (`write`) and the static report.

Figures are built with `matplotlib.figure.Figure` (no pyplot state, Agg canvas), so they work
headless and in threads.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def figure(ncols: int, nrows: int, width: float = 3.2, height: float = 2.4):
    """A headless Figure with an nrows x ncols grid of axes (returned as a flat list)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows))
    FigureCanvasAgg(fig)
    # Fixed margins (in inches, converted to fractions): constrained layout costs seconds.
    w, h = width * ncols, height * nrows
    fig.subplots_adjust(
        left=0.55 / w,
        right=1 - 0.2 / w,
        bottom=0.5 / h,
        top=1 - 0.55 / h,
        wspace=0.28,
        hspace=0.55,
    )
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    return fig, axes


def to_rgb(fig) -> np.ndarray:
    """uint8[H, W, 3] pixels of a figure."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def theory_density(x: np.ndarray, m: float) -> np.ndarray:
    """f_m(x) on a grid (host copy of `optaxlab.theory.update_pdf`)."""
    import jax

    from optaxlab import theory

    with jax.default_device(jax.devices("cpu")[0]):
        return np.asarray(theory.update_pdf(np.asarray(x, np.float32), np.float32(m)))


def hist_panel(
    ax,
    counts: np.ndarray,
    edges: np.ndarray,
    m_eff: float | None,
    title: str,
    color: str = "C0",
    label: str | None = None,
    noise: np.ndarray | None = None,
) -> None:
    """One histogram (density over the in-range bins) with the theory curve f_{m_eff} and, when
    given, the pure-noise reference (its bins + 2 masses, drawn as a step line).

    `counts` are the bins + 2 counts (underflow, bins, overflow); the density is normalized by
    all coordinates, so mass outside the range lowers the bars instead of being hidden.
    """
    counts = np.asarray(counts, np.float64)
    total = max(counts.sum(), 1.0)
    width = np.diff(edges)
    dens = counts[1:-1] / (total * width)
    ax.stairs(dens, edges, fill=True, alpha=0.55, color=color, label=label or "observed")
    top = np.nanmax(dens) if dens.size else 1.0
    if noise is not None:
        ref = np.asarray(noise, np.float64)[1:-1] / width
        ax.stairs(ref, edges, color="C1", lw=1.2, label="pure noise (same optimizer)")
        top = max(top, np.nanmax(ref))
    if m_eff is not None:
        lim = min(np.sqrt(m_eff), edges[-1]) if m_eff > 1 + 1e-6 else None
        if lim is None:  # m = 1: atoms at +-1, drawn as their bin's mass / width
            w = width[0]
            ax.vlines([-1.0, 1.0], 0, 0.5 / w, colors="k", lw=1.5, label="theory (m=1)")
        else:
            x = np.linspace(-lim, lim, 401)[1:-1]
            ax.plot(x, theory_density(x, m_eff), "k-", lw=1.2, label=f"f_m, m={m_eff:.2f}")
    if m_eff is not None or noise is not None:
        ax.set_ylim(0, max(1.15 * top, 0.5))
    ax.set_xlim(edges[0], edges[-1])
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=7)


def layer_grid(
    hists: dict[str, np.ndarray],
    edges: np.ndarray,
    m_eff: float | None,
    step: int,
    tvs: dict[str, tuple[float | None, float | None]] | None = None,
    max_layers: int = 12,
    noise: np.ndarray | None = None,
):
    """Figure: one panel per layer (at most max_layers) of Delta's histogram vs f_{m_eff} and
    the pure-noise reference; `tvs` maps a layer to its (theory_tv, noise_tv)."""
    names = list(hists)[:max_layers]
    ncols = min(4, max(len(names), 1))
    nrows = max(1, -(-len(names) // ncols))
    fig, axes = figure(ncols, nrows)
    for ax, name in zip(axes, names, strict=False):
        tv, ntv = (tvs or {}).get(name, (None, None))
        title = f"{name}\nstep {step}" + (f", TV f_m {tv:.3f}" if tv is not None else "") + (
            f", noise {ntv:.3f}" if ntv is not None else "")
        hist_panel(ax, hists[name], edges, m_eff, title, noise=noise)
    for ax in axes[len(names) :]:
        ax.set_axis_off()
    if names:
        axes[0].legend(fontsize=6, loc="upper right")
    return fig


def steps_grid(
    series: dict[int, np.ndarray],
    edges: np.ndarray,
    m_effs: dict[int, float | None],
    layer: str,
    steps: Sequence[int],
):
    """Figure: one layer's Delta histogram at several steps vs theory (the style of Figs. 2/4 of
    "On the Distributional Properties of Adaptive Gradients")."""
    steps = [t for t in steps if t in series]
    ncols = min(5, max(len(steps), 1))
    nrows = max(1, -(-len(steps) // ncols))
    fig, axes = figure(ncols, nrows, width=2.6, height=2.1)
    for ax, t in zip(axes, steps, strict=False):
        m = m_effs.get(t)
        hist_panel(ax, series[t], edges, m, f"step {t}" + (f", m_eff={m:.2f}" if m else ""))
    for ax in axes[len(steps) :]:
        ax.set_axis_off()
    against = ("vs theory" if any(m_effs.get(t) for t in steps)
               else "(no theory for this optimizer)")
    fig.suptitle(f"{layer}: update Delta = (theta_t - theta_(t-1))/lr {against}", fontsize=9)
    return fig
