"""Static report of a run's update statistics: PNG figures and one HTML page.

    python -m optaxlab.report WORKDIR [--out DIR] [--layers REGEX] [--max-layers N]

Reads WORKDIR/tensorboard (the monitor's histograms, with TensorBoard's EventAccumulator) and the
scalars from WORKDIR/metrics.jsonl (or, without it, from the TensorBoard events), and writes to
DIR (default WORKDIR/report) figures in the style of "On the Distributional Properties of
Adaptive Gradients" (DP) and "Gradient Spread as an Intuition for the Adam Optimizer" (GS):

  update_hist_<layer>.png  per-layer distribution of Delta = (theta_t - theta_{t-1})/lr over the
                           first steps, with the theory density f_{m_eff(t)} (DP Fig. 2/4)
  variance.png             Var[Delta] and Var[|Delta|] vs step with the theory curves: 1
                           (Corollary 1) and Corollary 2 at m_eff(t) (DP Fig. 3)
  spread.png               spread gamma vs step size, coloured by step (GS Fig. 1-2)
  diagnostics.png          the distances to f_{m_eff(t)} and to the pure-noise reference, and the
                           shape diagnostics vs step
  loss.png                 the training loss (when metrics.jsonl has it)
  index.html               all of the above with captions
"""

from __future__ import annotations

import argparse
import html
import json
import math
import re
import sys
from pathlib import Path

import numpy as np

from optaxlab.monitor import plots
from optaxlab.monitor.read import accumulator as _accumulator
from optaxlab.monitor.read import load_histograms, load_scalars

FIRST_STEPS = (1, 2, 3, 4, 5, 7, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


class ReportError(ValueError):
    """The workdir has nothing to report (missing, or no monitor output)."""


def _per_layer(scalars, metric: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    p = f"{metric}/"
    return {k[len(p) :]: v for k, v in scalars.items() if k.startswith(p)}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "layer"


def pick_layers(hists, pattern: str | None, max_layers: int) -> list[str]:
    """Layers for the histogram figures: those matching `pattern`, else the largest ones."""
    names = sorted(hists)
    if pattern:
        names = [n for n in names if re.search(pattern, n)]
        return names[:max_layers]
    size = {n: max(float(c.sum()) for c, _ in hists[n].values()) for n in names}
    big = sorted(names, key=lambda n: (-size[n], n))[:max_layers]
    return sorted(big)


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path


def figure_histograms(hists, scalars, layer: str, out: Path) -> Path:
    """One layer's Delta histogram at the first steps vs theory (DP Fig. 2/4 style)."""
    series = hists[layer]
    steps = [t for t in FIRST_STEPS if t in series][:10]
    if len(steps) < 10:  # short or sparsely logged runs: fill with the earliest logged steps
        steps = sorted(set(steps) | set(sorted(series)[: 10 - len(steps)]))
    m_eff = dict(zip(*scalars["theory/m_eff"], strict=True)) if "theory/m_eff" in scalars else {}
    counts = {t: series[t][0] for t in steps}
    edges = series[steps[0]][1]
    fig = plots.steps_grid(counts, edges, {t: m_eff.get(t) for t in steps}, layer, steps)
    return _save(fig, out / f"update_hist_{_safe(layer)}.png")


def _layer_lines(ax, per_layer, label_pooled, pooled=None):
    for i, (_, (s, v)) in enumerate(sorted(per_layer.items())):
        ax.plot(s, v, color="C0", alpha=0.25, lw=0.8, label="layers" if i == 0 else None)
    if pooled is not None:
        ax.plot(*pooled, color="C3", lw=1.8, label=label_pooled)


def figure_variance(scalars, out: Path) -> Path | None:
    """Var[Delta] and Var[|Delta|] vs step with the theory curves (DP Fig. 3 style)."""
    var, var_abs = _per_layer(scalars, "update_var"), _per_layer(scalars, "update_var_abs")
    if not var:
        return None
    fig, (a, b) = plots.figure(2, 1, width=4.6, height=3.4)
    _layer_lines(a, var, "all layers (pooled)", scalars.get("monitor/update_var"))
    _layer_lines(b, var_abs, "all layers (pooled)", scalars.get("monitor/update_var_abs"))
    steps = next(iter(var.values()))[0]
    a.axhline(1.0, color="k", ls="--", lw=1.2, label="theory: Var = 1 (Cor. 1)")
    if "theory/update_var_abs" in scalars:
        b.plot(*scalars["theory/update_var_abs"], "k--", lw=1.2, label="theory: Cor. 2 at m_eff(t)")
    for ax, title in ((a, "Var[Delta]"), (b, "Var[|Delta|]")):
        ax.set_xscale("log" if steps.max() > 20 else "linear")
        ax.set_xlabel("step t")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    a.set_ylim(0, max(1.3, 1.1 * np.nanmax([np.nanmax(v) for _, v in var.values()])))
    return _save(fig, out / "variance.png")


def _layer_mean(per_layer, exclude: str):
    """Mean over layers (first within each layer, then across, as GS does) per step."""
    acc: dict[int, list[float]] = {}
    for name, (s, v) in per_layer.items():
        if exclude and re.search(exclude, name):
            continue
        for t, x in zip(s, v, strict=True):
            acc.setdefault(int(t), []).append(x)
    steps = np.array(sorted(acc), np.int64)
    return steps, np.array([np.mean(acc[t]) for t in steps])


def figure_spread(scalars, out: Path, exclude: str = r"(bias|scale|norm)") -> Path | None:
    """Spread vs step size per logged step, coloured by step (GS Fig. 1-2 style)."""
    spread = _per_layer(scalars, "spread_geo")
    if not spread:
        return None
    step_size = _per_layer(scalars, "update_mean_abs")
    predicted = _per_layer(scalars, "spread_step")
    t1, gamma = _layer_mean(spread, exclude)
    t2, size = _layer_mean({k: step_size[k] for k in spread if k in step_size}, exclude)
    t3, pred = _layer_mean({k: predicted[k] for k in spread if k in predicted}, exclude)
    common = np.intersect1d(np.intersect1d(t1, t2), t3)
    if common.size == 0:
        return None
    pick = lambda t, v: v[np.searchsorted(t, common)]
    gamma, size, pred = pick(t1, gamma), pick(t2, size), pick(t3, pred)
    fig, (a, b) = plots.figure(2, 1, width=4.6, height=3.6)
    sc = a.scatter(gamma, size, c=common, cmap="viridis", s=12)
    lo, hi = max(np.nanmin(gamma) / 2, 1e-3), max(np.nanmax(gamma) * 2, 1.0)
    g = np.geomspace(lo, hi, 200)
    from optaxlab import theory

    a.plot(g, np.asarray(theory.predicted_step(g)), "k--", lw=1.2, label="1/sqrt(1+gamma^2)")
    a.set_xscale("log")
    a.set_xlabel("spread gamma (geometric mean)")
    a.set_ylabel("step size mean |Delta|")
    a.legend(fontsize=7)
    b.scatter(pred, size, c=common, cmap="viridis", s=12)
    top = max(np.nanmax(pred), np.nanmax(size), 1e-3) * 1.1
    b.plot([0, top], [0, top], "k--", lw=1.0, label="measured = predicted")
    b.set_xlabel("predicted step mean 1/sqrt(1+gamma^2)")
    b.set_ylabel("step size mean |Delta|")
    b.legend(fontsize=7)
    fig.subplots_adjust(right=0.9, wspace=0.3)
    fig.colorbar(sc, cax=fig.add_axes((0.92, 0.15, 0.015, 0.7)), label="step t")
    return _save(fig, out / "spread.png")


def figure_diagnostics(scalars, out: Path) -> Path | None:
    """TV distances to the theory and to pure noise, and skew / kurtosis / bimodality vs their
    theory values."""
    panels = [
        ("theory_tv", "TV distance to f_{m_eff(t)}", None),
        ("noise_tv", "TV distance to pure noise (same optimizer)", None),
        ("shape_skew", "skew (0 = symmetric)", None),
        ("shape_kurtosis", "kurtosis", "theory/shape_kurtosis"),
        ("shape_bimodality", "bimodality coefficient", "theory/shape_bimodality"),
    ]
    panels = [p for p in panels if _per_layer(scalars, p[0])]
    if not panels:
        return None
    fig, axes = plots.figure(2, math.ceil(len(panels) / 2), width=4.6, height=3.2)
    for ax, (metric, title, th) in zip(axes, panels, strict=False):
        per = _per_layer(scalars, metric)
        _layer_lines(ax, per, "all layers", scalars.get(f"monitor/{metric}"))
        if th and th in scalars:
            ax.plot(*scalars[th], "k--", lw=1.2, label="theory")
        if metric == "shape_bimodality":
            ax.axhline(5 / 9, color="grey", ls=":", lw=1, label="5/9 (uniform)")
        steps = next(iter(per.values()))[0]
        ax.set_xscale("log" if steps.max() > 20 else "linear")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step t")
        ax.legend(fontsize=7)
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    return _save(fig, out / "diagnostics.png")


def figure_loss(scalars, out: Path) -> Path | None:
    if "loss" not in scalars:
        return None
    fig, (ax,) = plots.figure(1, 1, width=5.0, height=3.0)
    ax.plot(*scalars["loss"], lw=1.2, label="train loss")
    if "eval_loss" in scalars:
        ax.plot(*scalars["eval_loss"], "o-", lw=1.2, label="eval loss")
    ax.set_xlabel("step")
    ax.legend(fontsize=8)
    return _save(fig, out / "loss.png")


CAPTIONS = {
    "update_hist": (
        "Distribution of the normalized update Delta = (theta_t - theta_(t-1))/lr_t of one layer "
        "at the first steps (bars, density over all coordinates; mass beyond the range lowers "
        "the bars) against the theory f_m with m = m_eff(t) of b2 (black; Theorem 1 of \"On the "
        "Distributional Properties of Adaptive Gradients\": "
        "atoms at +-1 at m = 1, bimodal at m = 2, flat at m = 3, then towards a Gaussian)."
    ),
    "variance": (
        "Var[Delta] (left) and Var[|Delta|] (right) per layer (thin) and pooled over all "
        "coordinates (red), against the theory: Var[Delta] = 1 at every step (Corollary 1) and "
        "Corollary 2 at m_eff(t) (dashed). Values below the curves early on are what that paper's "
        "Fig. 3 calls good agreement; momentum (b1 > 0) narrows Delta."
    ),
    "spread": (
        "\"Gradient Spread as an Intuition for the Adam Optimizer\": per logged step (colour), "
        "the typical spread gamma = sqrt(v - m^2)/|m| "
        "(geometric mean over coordinates, mean over weight layers) against the measured step "
        "size mean |Delta| with the curve 1/sqrt(1 + gamma^2) (left), and the step predicted "
        "coordinate-wise from the spread against the measured one (right; on the diagonal for "
        "b1 = b2, eps = 0)."
    ),
    "diagnostics": (
        "Total variation distances between each layer's Delta histogram and the closed-form "
        "law's bin masses (large for b1 > 0 whatever the gradients: f_m has no momentum) and the "
        "pure-noise reference (the same optimizer on iid N(0, 1) gradients: small = "
        "noise-dominated, large = a consistent gradient signal), and the shape diagnostics of "
        "Section 6 of the distributional-properties paper (skew: non-zero gradient mean; "
        "kurtosis above the theory: heavy-tailed / trimodal; bimodality coefficient above the "
        "theory after the first steps: growing gradient variance)."
    ),
    "loss": "Training loss (and evaluation loss when logged).",
}


def _html(workdir: Path, figures: list[tuple[str, Path]], notes: list[str]) -> str:
    config = workdir / "config.json"
    opt = ""
    if config.exists():
        try:
            c = json.loads(config.read_text())
            o = c.get("optimizer", {})
            hp = ", ".join(f"{k}={v}" for k, v in sorted(o.items()) if k != "name")
            opt = f"<p>optimizer: <b>{html.escape(str(o.get('name')))}</b> ({html.escape(hp)})</p>"
        except (json.JSONDecodeError, AttributeError):
            pass
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>optaxlab report</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "img{max-width:100%;border:1px solid #ddd}figure{margin:2em 0}"
        "figcaption{color:#333;font-size:0.95em}</style></head><body>",
        f"<h1>Update statistics: {html.escape(str(workdir))}</h1>",
        opt,
    ]
    parts += [f"<p><i>{html.escape(n)}</i></p>" for n in notes]
    for kind, path in figures:
        parts.append(
            f"<figure><img src='{html.escape(path.name)}' alt='{html.escape(path.stem)}'>"
            f"<figcaption><b>{html.escape(path.stem)}</b>: {html.escape(CAPTIONS[kind])}"
            "</figcaption></figure>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def render(
    workdir: str | Path,
    out: str | Path | None = None,
    layers: str | None = None,
    max_layers: int = 4,
) -> Path:
    """Writes the figures and index.html for `workdir`; returns the path of index.html."""
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise ReportError(f"workdir {str(workdir)!r} is not a directory")
    if max_layers < 1:
        raise ReportError(f"max_layers={max_layers}: must be >= 1")
    logdir = workdir / "tensorboard"
    acc = _accumulator(logdir) if logdir.is_dir() else None
    scalars = load_scalars(workdir, acc)
    hists = load_histograms(acc, scalars) if acc is not None else {}
    if not hists and not any(k.startswith("update_var/") for k in scalars):
        raise ReportError(
            f"no monitor output in {str(workdir)!r} (no update_hist/* histograms under "
            "tensorboard/ and no update_var/* scalars in metrics.jsonl); train with "
            "--config.monitor.every=1 (or N > 0)"
        )
    out = Path(out) if out is not None else workdir / "report"
    out.mkdir(parents=True, exist_ok=True)
    figures: list[tuple[str, Path]] = []
    notes: list[str] = []
    chosen = pick_layers(hists, layers, max_layers) if hists else []
    if hists and not chosen:
        notes.append(f"no layer matches --layers {layers!r}; layers: {', '.join(sorted(hists))}")
    for layer in chosen:
        figures.append(("update_hist", figure_histograms(hists, scalars, layer, out)))
    if not hists:
        notes.append("no histograms (monitor.histograms=False): histogram figures skipped")
    if "theory/m_eff" not in scalars:
        notes.append("no theory for this optimizer (its registry entry declares no theory "
                     "mapping with a second-moment decay b2): no theory overlay")
    for kind, fn in (
        ("variance", figure_variance),
        ("spread", figure_spread),
        ("diagnostics", figure_diagnostics),
        ("loss", figure_loss),
    ):
        path = fn(scalars, out)
        if path is not None:
            figures.append((kind, path))
        elif kind == "spread":
            notes.append("no spread: the optimizer state has no (mu, nu) or (mean, var)")
    index = out / "index.html"
    index.write_text(_html(workdir, figures, notes))
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m optaxlab.report",
        description="Render PNG figures and an HTML page of a run's update statistics.",
    )
    parser.add_argument("workdir", help="a training workdir (with tensorboard/, metrics.jsonl)")
    parser.add_argument("--out", default=None, help="output folder (default WORKDIR/report)")
    parser.add_argument(
        "--layers",
        default=None,
        help="regex of layers for the histogram figures (default: the largest ones)",
    )
    parser.add_argument("--max-layers", type=int, default=4, help="histogram figures (4)")
    args = parser.parse_args(argv)
    try:
        index = render(args.workdir, args.out, args.layers, args.max_layers)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    pngs = sorted(p.name for p in index.parent.glob("*.png"))
    print(f"report: {index}")
    print(f"figures ({len(pngs)}): {', '.join(pngs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
