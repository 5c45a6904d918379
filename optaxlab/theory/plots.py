"""Matplotlib helpers for the closed forms ("On the Distributional Properties of Adaptive
Gradients", Figs. 1 and 3);
matplotlib loaded lazily."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from optaxlab.theory import update_law

__all__ = ["plot_pdf_family", "plot_variance_curves"]


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6, 4))
    return ax


def plot_pdf_family(ax=None, ms: Sequence[float] = (2, 3, 5, 10, 50), normal: bool = True,
                    xlim: float = 3.5):
    """Draws f_m for each m ("On the Distributional Properties of Adaptive Gradients", Fig. 1) and,
    optionally, the standard
    normal limit.

    The m = 2 arcsine density is infinite at +-sqrt(2); the curve is drawn up to 1e-3 inside.
    Returns the axes.
    """
    ax = _axes(ax)
    for m in ms:
        edge = min(np.sqrt(m), xlim)
        x = np.linspace(-edge, edge, 801) * (1 - 1e-3 if np.sqrt(m) <= xlim else 1.0)
        ax.plot(x, np.asarray(update_law.update_pdf(x, float(m))), label=f"m = {m:g}")
    if normal:
        x = np.linspace(-xlim, xlim, 801)
        ax.plot(x, np.exp(-x * x / 2) / np.sqrt(2 * np.pi), "k--", label="N(0, 1)")
    ax.set_xlim(-xlim, xlim)
    ax.set_ylim(0, 1.0)
    ax.set_xlabel(r"normalized update $\Delta$")
    ax.set_ylabel("density")
    ax.legend(loc="upper right", fontsize=8)
    return ax


def plot_variance_curves(ax=None, m_max: float = 50, student_t: bool = True):
    """Var[Delta] = 1, Var[|Delta|] (Corollary 2) and Student-t m/(m-2) against m
    ("On the Distributional Properties of Adaptive Gradients", Fig. 3).

    Returns the axes.
    """
    ax = _axes(ax)
    m = np.linspace(2, m_max, 600)
    ax.plot(m, np.asarray(update_law.update_variance(m)), label=r"Var[$\Delta$] = 1")
    ax.plot(m, np.asarray(update_law.abs_update_variance(m)), label=r"Var[$|\Delta|$]")
    ax.axhline(1 - 2 / np.pi, color="gray", ls=":", lw=1, label=r"$1 - 2/\pi$")
    if student_t:
        mt = m[m > 2.05]
        ax.plot(mt, np.asarray(update_law.student_t_variance(mt)), "--",
                label=r"Student-t $m/(m-2)$")
    ax.set_ylim(0, 3)
    ax.set_xlabel("m (samples in the second-moment average)")
    ax.set_ylabel("variance")
    ax.legend(loc="upper right", fontsize=8)
    return ax
