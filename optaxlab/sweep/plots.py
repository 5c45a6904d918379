"""PNG plots of a sweep (matplotlib, Agg): what `optaxlab.sweep.report` links from summary.md.

  lr_tuning.png        the metric vs the learning rate, one line per group: each seed a dot, the
                       mean over seeds with +-std error bars; at each learning rate the best
                       setting of the other tuned fields; diverged points as x, stalled ones
                       as hollow squares, at the top edge
  heatmap_A_B.png      the metric over two tuned fields (e.g. b1 x b2, "In Search of Adam's
                       Secret Sauce" Fig. 2 style), one panel per group; each cell is the best
                       over the other tuned fields (the learning rate included); diverged cells
                       grey, the best cell outlined
  best_curves.png      train loss (lines) and eval loss (dots) vs step of each group's best
                       setting, every seed
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from optaxlab.sweep import outcome, stats  # noqa: E402
from optaxlab.sweep.spec import LR_FIELD, Plan, format_value  # noqa: E402
from optaxlab.train import metrics as metrics_lib  # noqa: E402

if TYPE_CHECKING:  # report imports plots (when it draws): no import back
    from optaxlab.sweep.report import Group, Setting


def _value(plan: Plan, s: float) -> float:
    """A score back in the metric's units."""
    return s if plan.goal == "min" else -s


def _best_by(group: Group, fields: Sequence[str]) -> dict[tuple, Setting]:
    """For each combination of `fields` values, the setting with the best mean over the
    remaining tuned fields (a setting without results only when none has one)."""
    out: dict[tuple, Setting] = {}
    for s in group.settings.values():
        key = tuple(repr(s.values.get(f)) for f in fields)
        cur = out.get(key)
        if cur is None or (s.mean is not None and (cur.mean is None or s.mean < cur.mean)):
            out[key] = s
    return out


def lr_tuning(plan: Plan, groups: dict[str, Group], path: Path) -> Path | None:
    if LR_FIELD not in plan.tune:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    finite_all: list[float] = []
    placed: list[tuple[float, float, str]] = []
    diverged_marks: list[tuple[float, str]] = []
    stalled_marks: list[tuple[float, str]] = []
    plotted = False
    for i, g in enumerate(groups.values()):
        color = colors[i % len(colors)]
        per_lr = _best_by(g, [LR_FIELD])
        xs, means, stds = [], [], []
        for s in sorted(per_lr.values(), key=lambda s: s.values[LR_FIELD]):
            lr = float(s.values[LR_FIELD])
            vals = [_value(plan, v) for v in s.finite]
            if vals:
                ax.scatter([lr] * len(vals), vals, s=14, color=color, alpha=0.55, zorder=3)
                finite_all += vals
                placed += [(lr, v, color) for v in vals]
            if s.diverged:
                diverged_marks.append((lr, color))
            if s.stalled:
                stalled_marks.append((lr, color))
            if s.mean is not None and math.isfinite(s.mean):
                xs.append(lr)
                means.append(_value(plan, s.mean))
                stds.append(s.std or 0.0)
        if xs:
            ax.errorbar(xs, means, yerr=stds, color=color, marker="o", ms=4, capsize=3, lw=1.5,
                        label=g.name, zorder=4)
            plotted = True
            best = g.best
            if best is not None and best.mean is not None and math.isfinite(best.mean):
                ax.scatter([best.values[LR_FIELD]], [_value(plan, best.mean)], marker="*",
                           s=160, color=color, edgecolor="black", zorder=5)
        elif any(s.diverged or s.stalled for s in per_lr.values()):
            ax.plot([], [], color=color, label=f"{g.name} (all diverged or stalled)")
            plotted = True
    if not plotted:
        plt.close(fig)
        return None
    # The bulk of the results sets the y range: a blown-up point (a loss of 1e5 beside losses of
    # 2) is marked at the top edge, not allowed to flatten every other point; log axis when wide.
    if plan.goal == "min":
        lo, hi, log_axis, off = stats.robust_range(finite_all)
    else:
        lo, hi = (min(finite_all), max(finite_all)) if finite_all else (0.0, 1.0)
        log_axis, off = False, []
    if log_axis:
        ax.set_yscale("log")
        span = math.log10(hi / lo) or 1.0
        at = lambda k: hi * 10 ** (k * 0.08 * span)  # k pads above hi, in log units
        bottom = lo / 10 ** (0.08 * span)
    else:
        pad = 0.08 * (hi - lo or 1.0)
        at = lambda k: hi + k * pad
        bottom = lo - pad
    off_marks = [(lr, v, c) for lr, v, c in placed if v in off]
    for lr, _, color in off_marks:
        ax.scatter([lr], [at(2.5)], marker="^", s=60, color=color, zorder=5, clip_on=False)
    for lr, color in diverged_marks:
        ax.scatter([lr], [at(2.5)], marker="x", s=70, color=color, linewidths=2, zorder=5,
                   clip_on=False)
    for lr, color in stalled_marks:
        ax.scatter([lr], [at(2.5)], marker="s", s=60, facecolors="none", edgecolors=color,
                   linewidths=1.5, zorder=5, clip_on=False)
    ax.set_ylim(bottom, at(3.5))
    if diverged_marks or stalled_marks or off_marks:
        ax.axhline(at(1.5), color="0.75", lw=0.8, ls=":")
    if diverged_marks:
        ax.scatter([], [], marker="x", color="0.3", label="diverged (any seed)")
    if stalled_marks:
        ax.scatter([], [], marker="s", facecolors="none", edgecolors="0.3",
                   label="stalled (any seed)")
    if off_marks:
        ax.scatter([], [], marker="^", color="0.3",
                   label=f"off scale (up to {max(v for _, v, _ in off_marks):.3g})")
    ax.scatter([], [], marker="*", s=100, color="0.6", edgecolor="black", label="best of group")
    ax.set_xscale("log")
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel(f"{plan.metric} ({'lower' if plan.goal == 'min' else 'higher'} is better)")
    others = [plan.short(f) for f in plan.tune if f != LR_FIELD]
    ax.set_title(f"{plan.name}: learning-rate tuning curves"
                 + (f"\n(best over {', '.join(others)} at each lr)" if others else ""),
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def heatmap(plan: Plan, groups: dict[str, Group], fields: Sequence[str], path: Path
            ) -> Path | None:
    fx, fy = fields
    panels = [g for g in groups.values()
              if len(g.grid(fx)) > 1 and len(g.grid(fy)) > 1]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 0.8, 4.2),
                             squeeze=False)
    finite = [_value(plan, s.mean) for g in panels for s in g.settings.values()
              if s.mean is not None and math.isfinite(s.mean)]
    vmin, vmax = (min(finite), max(finite)) if finite else (0.0, 1.0)
    cmap = plt.get_cmap("viridis_r" if plan.goal == "min" else "viridis").with_extremes(
        bad="0.85")
    im = None
    for ax, g in zip(axes[0], panels, strict=True):
        xs, ys = g.grid(fx), g.grid(fy)
        cells = _best_by(g, [fx, fy])
        grid = np.full((len(ys), len(xs)), np.nan)
        best = g.best
        for (kx, ky), s in cells.items():
            j = [repr(v) for v in xs].index(kx)
            i = [repr(v) for v in ys].index(ky)
            if s.mean is None:
                ax.text(j, i, "-", ha="center", va="center", fontsize=8)
            elif math.isinf(s.mean):
                ax.text(j, i, "div", ha="center", va="center", fontsize=8, color="firebrick")
            else:
                grid[i, j] = _value(plan, s.mean)
                ax.text(j, i, f"{grid[i, j]:.3g}", ha="center", va="center", fontsize=8,
                        color="white" if (grid[i, j] - vmin) / ((vmax - vmin) or 1) > 0.5
                        and plan.goal == "min" else "black")
            if best is not None and s is best:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2.5,
                                           edgecolor="red"))
        im = ax.imshow(np.ma.masked_invalid(grid), origin="lower", cmap=cmap, vmin=vmin,
                       vmax=vmax, aspect="auto")
        ax.set_xticks(range(len(xs)), [format_value(v) for v in xs], fontsize=8)
        ax.set_yticks(range(len(ys)), [format_value(v) for v in ys], fontsize=8)
        ax.set_xlabel(plan.short(fx))
        ax.set_ylabel(plan.short(fy))
        ax.set_title(g.name, fontsize=9)
    if im is not None:
        fig.colorbar(im, ax=axes[0].tolist(), label=plan.metric, shrink=0.85)
    others = [plan.short(f) for f in plan.tune if f not in (fx, fy)]
    fig.suptitle(f"{plan.name}: {plan.short(fx)} x {plan.short(fy)}"
                 + (f" (best over {', '.join(others)})" if others else ""), fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def best_curves(plan: Plan, groups: dict[str, Group], sweep_dir: Path, path: Path
                ) -> Path | None:
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    plotted = False
    for i, g in enumerate(groups.values()):
        best = g.best
        if best is None or best.mean is None or math.isinf(best.mean):
            continue
        color = colors[i % len(colors)]
        label = f"{g.name}: {', '.join(f'{plan.short(f)}={format_value(v)}' for f, v in best.values.items())}"  # noqa: E501
        for k, row in enumerate(best.rows):
            records = metrics_lib.read_jsonl(Path(sweep_dir) / row["workdir"] / outcome.METRICS)
            steps = [r["step"] for r in records if isinstance(r.get("loss"), (int, float))]
            loss = [r["loss"] for r in records if isinstance(r.get("loss"), (int, float))]
            ax.plot(steps, loss, color=color, lw=1, alpha=0.7, label=label if k == 0 else None)
            ev = [(r["step"], r["eval_loss"]) for r in records
                  if isinstance(r.get("eval_loss"), (int, float))]
            if ev:
                ax.plot(*zip(*ev, strict=True), color=color, ls="--", marker="o", ms=4, lw=1,
                        label=f"{g.name} eval" if k == 0 else None)
            plotted = True
    if not plotted:
        plt.close(fig)
        return None
    ax.set_xlabel("step")
    ax.set_ylabel("loss (train: lines, eval: dashed with dots)")
    ax.set_title(f"{plan.name}: each group's best setting (every seed)", fontsize=10)
    ax.grid(True, alpha=0.25)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_all(plan: Plan, rows: list[dict[str, Any]], groups: dict[str, Group],
              sweep_dir: Path, out_dir: Path) -> list[Path]:
    del rows
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [lr_tuning(plan, groups, out_dir / "lr_tuning.png")]
    for fx, fy in plan.heatmaps:
        name = f"heatmap_{plan.short(fx)}_{plan.short(fy)}.png".replace("/", "_")
        written.append(heatmap(plan, groups, (fx, fy), out_dir / name))
    written.append(best_curves(plan, groups, sweep_dir, out_dir / "best_curves.png"))
    return [p for p in written if p is not None]
