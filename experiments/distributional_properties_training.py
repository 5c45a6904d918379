"""On the Distributional Properties of Adaptive Gradients, Figs. 2-4 on real training at laptop
scale: per-layer distributions of the normalized update over the first 20 steps of the CNN on
digits (optaxlab/configs/cnn_digits.py) and of the byte-level LM
(optaxlab/configs/lm_tiny.py), three seeds, against
the closed-form law f_{m_eff(t)}, and Var[Delta], Var[|Delta|] against Corollaries 1 and 2.

Each run is an ordinary trainer run (`optaxlab.train.train`, monitor every step, constant
learning rate, no eval) in RUNS/<model>/<optimizer>/seed<k>; the analysis reads the monitor's
TensorBoard histograms (`optaxlab.monitor.read_histograms`) and its scalars from metrics.jsonl.
Optimizers:
  rmsprop   Adam with b1 = 0, b2 = 0.999, eps = 1e-12, bias-corrected: the paper's theory model
            (no momentum) with an EMA preconditioner, m_eff(t) ~ t over 20 steps; theory_tv (the
            total variation distance to f_{m_eff(t)}) is the test.
  adam      (0.9, 0.999): f_m has no momentum, so the test is noise_tv, the distance to the same
            Adam fed iid N(0, 1) gradients.
A layer "follows the theory" when its distance, averaged over steps 2-20 and seeds, is below
FOLLOW_TV; otherwise the shape diagnostics name the Section-6 mechanism: |skew| > 0.3 -> a non-zero
gradient mean (Sec. 6.2); kurtosis > theory + 1 -> heavy tails (Sec. 6.3); bimodality above the
theory's -> a growing variance (Sec. 6.1); mean Var[Delta] < 0.7 -> a shrinking gradient scale
(Sec. 6.1's N(0, 1/t^2): early large gradients dominate the denominator); more than 10% of the
coordinates in the bin around 0 (f_m puts ~4-5% there) -> a spike at 0 (Cauchy-like trimodality,
Sec. 6.3, or coordinates whose gradient is exactly 0: dead ReLU inputs, unseen embedding rows).
For adam the shape statistics are not compared (f_m has no momentum); only noise_tv is.

    python experiments/distributional_properties_training.py [--out DIR] [--runs DIR]
        [--seeds 0 1 2] [--steps 20] [--optimizers rmsprop adam]

Writes per_step.csv, per_layer.csv, summary.md and figures (hist_<model>_<opt>.png: a few layers
x steps 1, 2, 3, 5, 10, 20, the three seeds overlaid on f_m; variance_<model>_<opt>.png).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import _common
import numpy as np

FOLLOW_TV = 0.1
MODELS = {"cnn": "optaxlab/configs/cnn_digits.py", "lm": "optaxlab/configs/lm_tiny.py"}
OPTIMIZERS = {
    "rmsprop": dict(name="rmsprop", learning_rate=1e-3, b2=0.999, eps=1e-12),
    "adam": dict(name="adam", learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-12),
}
SHOW_STEPS = (1, 2, 3, 5, 10, 20)


def make_config(model: str, opt: str, seed: int, steps: int):
    import importlib.util

    spec = importlib.util.spec_from_file_location("cfg", _common.REPO / MODELS[model])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config()
    from optaxlab.train.config import switch_optimizer

    o = dict(OPTIMIZERS[opt])
    name = o.pop("name")
    c.optimizer = switch_optimizer(c.optimizer, name, o)
    c.optimizer.schedule = "constant"
    c.optimizer.warmup_fraction = 0.0
    if "max_norm" in c.optimizer:
        c.optimizer.max_norm = None  # no global clipping: it rescales steps against each other
    c.seed = seed
    c.steps = steps
    c.log_every = 1
    c.eval_every = 0
    c.checkpoint_every = steps
    c.keep_checkpoints = 1
    c.progress_bar = False
    c.monitor.every = 1
    c.monitor.image_steps = ()
    return c


def train_all(runs: Path, seeds, steps: int, optimizers) -> dict:
    from optaxlab.train import train

    dirs, costs = {}, {}
    for model in MODELS:
        for opt in optimizers:
            costs[(model, opt)] = 0.0
            for seed in seeds:
                wd = runs / model / opt / f"seed{seed}"
                cost = wd / "study_train_seconds.txt"
                if _finished(wd, steps) and cost.exists():  # an earlier run: analyse it again
                    print(f"reusing {wd}", flush=True)
                else:
                    t0 = time.perf_counter()
                    train(make_config(model, opt, seed, steps), wd)
                    cost.write_text(f"{time.perf_counter() - t0:.1f}\n")
                costs[(model, opt)] += float(cost.read_text())
                dirs[(model, opt, seed)] = wd
            print(f"trained {model}/{opt}: {costs[(model, opt)]:.0f} s", flush=True)
    return dirs, costs


def _finished(wd: Path, steps: int) -> bool:
    import json

    try:
        st = json.loads((wd / "status.json").read_text())
    except (OSError, ValueError):
        return False
    return st.get("status") == "finished" and st.get("step") == steps


def load(wd: Path):
    from optaxlab import monitor

    return monitor.read_scalars(wd), monitor.read_histograms(wd)


def layer_value(scalars, metric: str, layer: str, step: int) -> float:
    steps, vals = scalars.get(f"{metric}/{layer}", (np.array([]), np.array([])))
    i = np.searchsorted(steps, step)
    return float(vals[i]) if i < len(steps) and steps[i] == step else float("nan")


def glob_value(scalars, tag: str, step: int) -> float:
    return layer_value({tag + "/x": scalars[tag]} if tag in scalars else {}, tag, "x", step)


def main() -> None:
    p = _common.parser(__file__, __doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, default=None,
                   help="trainer workdirs (default: "
                   "runs/distributional_properties_training/<time>)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS), choices=list(OPTIMIZERS))
    args = p.parse_args()
    out = _common.out_dir(args.out)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    runs = args.runs or _common.REPO / "runs" / "distributional_properties_training" / stamp
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_common.REPO / "runs" / "jax_cache"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    t0 = time.perf_counter()
    dirs, costs = train_all(runs, args.seeds, args.steps, args.optimizers)
    plt = _common.plt()
    from optaxlab.monitor import plots

    step_rows, layer_rows, files = [], [], []
    for model in MODELS:
        for opt in args.optimizers:
            data = {s: load(dirs[(model, opt, s)]) for s in args.seeds}
            sc0, h0 = data[args.seeds[0]]
            layers = sorted(h0)
            for seed, (sc, hi) in data.items():
                for layer in layers:
                    for t in range(1, args.steps + 1):
                        counts, edges = hi[layer][t]
                        centre = (len(counts) - 2) // 2 + 1  # the bin holding 0 (odd bins)
                        step_rows.append([
                            model, opt, seed, layer, t, int(counts.sum()),
                            glob_value(sc, "theory/m_eff", t),
                            layer_value(sc, "update_var", layer, t),
                            layer_value(sc, "update_var_abs", layer, t),
                            glob_value(sc, "theory/update_var_abs", t),
                            layer_value(sc, "theory_tv", layer, t),
                            layer_value(sc, "noise_tv", layer, t),
                            layer_value(sc, "shape_skew", layer, t),
                            layer_value(sc, "shape_kurtosis", layer, t),
                            glob_value(sc, "theory/shape_kurtosis", t),
                            layer_value(sc, "shape_bimodality", layer, t),
                            glob_value(sc, "theory/shape_bimodality", t),
                            float(counts[centre] / max(counts.sum(), 1)),
                        ])
            # per-layer verdict over steps 2..T and seeds
            for layer in layers:
                rr = [r for r in step_rows if r[0] == model and r[1] == opt and r[3] == layer
                      and r[4] >= 2]
                a = lambda i, rr=rr: np.nanmean([r[i] for r in rr])
                tv = a(10) if opt == "rmsprop" else a(11)
                skew, kurt, kurt_th = a(12), a(13), a(14)
                bim, bim_th = a(15), a(16)
                zero_bin = a(17)
                var_err = np.nanmean([abs(r[7] - 1.0) for r in rr])
                var_mean = np.nanmean([r[7] for r in rr])
                varabs_err = np.nanmean([r[8] - r[9] for r in rr])
                if opt != "rmsprop":  # f_m's shape statistics do not apply with momentum
                    verdict = ("like pure noise" if tv < FOLLOW_TV else
                               "departs from the pure-noise reference")
                elif tv < FOLLOW_TV:
                    verdict = "follows"
                else:
                    why = []
                    if abs(skew) > 0.3:
                        why.append("non-zero mean (skew)")
                    if kurt > kurt_th + 1.0:
                        why.append("heavy tails (kurtosis)")
                    if bim > bim_th + 0.05:
                        why.append("growing variance (bimodal)")
                    if var_mean < 0.7:
                        why.append(f"shrinking gradient scale (Var[Delta] {var_mean:.2f} < 1)")
                    if zero_bin > 0.1:
                        why.append(f"spike at 0 ({zero_bin:.0%} in the 0 bin)")
                    verdict = "departs: " + (", ".join(why) or "none of the Sec. 6 signatures")
                layer_rows.append([model, opt, layer, int(rr[0][5]), tv, var_err, varabs_err, skew,
                                   kurt, kurt_th, bim, bim_th, zero_bin, verdict])
            # figures: histograms (seeds overlaid) and variances
            show = _pick_layers(layers, model)
            fig, axes = plt.subplots(len(show), len(SHOW_STEPS),
                                     figsize=(2.4 * len(SHOW_STEPS), 2.0 * len(show)),
                                     squeeze=False)
            for i, layer in enumerate(show):
                for j, t in enumerate(SHOW_STEPS):
                    if t > args.steps:
                        axes[i, j].set_axis_off()
                        continue
                    for k, (seed, (sc, hi)) in enumerate(data.items()):
                        counts, edges = hi[layer][t]
                        m = glob_value(sc, "theory/m_eff", t) if opt == "rmsprop" else None
                        plots.hist_panel(axes[i, j], counts, edges, m if k == 0 else None,
                                         f"{layer} t={t}", color=f"C{k}", label=f"seed {seed}")
                        for patch in axes[i, j].patches[-1:]:
                            patch.set_alpha(0.3)
            axes[0, 0].legend(fontsize=5)
            fig.suptitle(f"{model}, {opt}: Delta histograms (3 seeds)"
                         + (" vs f_m(eff)" if opt == "rmsprop" else " (f_m has no momentum)"))
            fig.tight_layout()
            files.append(_common.save_fig(fig, out / f"hist_{model}_{opt}.png"))
            plt.close(fig)
            fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
            t = np.arange(1, args.steps + 1)
            for k, (sc, _) in enumerate(data.values()):
                for layer in layers:
                    for ax, met in zip(axes, ("update_var", "update_var_abs"), strict=True):
                        ax.plot(t, [layer_value(sc, met, layer, s) for s in t], color=f"C{k}",
                                lw=0.6, alpha=0.6)
            axes[0].axhline(1.0, color="k", ls="--", label="Corollary 1: 1")
            axes[1].plot(t, [glob_value(sc0, "theory/update_var_abs", s) for s in t], "k--",
                         label="Corollary 2 at m_eff(t)")
            axes[0].set(xlabel="step", ylabel="Var[Delta]", title=f"{model}, {opt}: every layer,"
                        " 3 seeds (colours)")
            axes[1].set(xlabel="step", ylabel="Var[|Delta|]")
            for ax in axes:
                ax.legend(fontsize=7)
            fig.tight_layout()
            files.append(_common.save_fig(fig, out / f"variance_{model}_{opt}.png"))
            plt.close(fig)
    head = ["model", "optimizer", "seed", "layer", "step", "coords", "m_eff", "var", "var_abs",
            "var_abs_theory", "theory_tv", "noise_tv", "skew", "kurtosis", "kurtosis_theory",
            "bimodality", "bimodality_theory", "zero_bin_fraction"]
    files.append(_common.write_csv(out / "per_step.csv", head, step_rows))
    lhead = ["model", "optimizer", "layer", "coords", "tv_mean", "mean_abs_var_minus_1",
             "mean_var_abs_minus_theory", "skew", "kurtosis", "kurtosis_theory", "bimodality",
             "bimodality_theory", "zero_bin_fraction", "verdict"]
    files.append(_common.write_csv(out / "per_layer.csv", lhead, layer_rows))
    wall = time.perf_counter() - t0
    md = ["# On the Distributional Properties of Adaptive Gradients, Figs. 2-4: CNN and LM", "",
          f"Command: `python experiments/distributional_properties_training.py` (seeds "
          f"{args.seeds}, {args.steps} steps). This invocation: {wall:.0f} s wall clock on "
          "the shared 2-core CPU (nice 19); training per model/optimizer (all seeds, measured "
          "when trained; an invocation on finished runs only analyses them): "
          + ", ".join(f"{m}/{o} {c:.0f} s" for (m, o), c in costs.items()) + ".", "",
          f"Averages over steps 2-{args.steps} and the seeds. tv = theory_tv (rmsprop) or "
          f"noise_tv (adam); a layer follows when tv < {FOLLOW_TV}. Shapes: skew and kurtosis "
          "of Delta, Sarle's bimodality, "
          "the fraction of coordinates in the histogram bin around 0 (f_m: ~0.04-0.05); the "
          "theory columns are f_m's (no momentum: not the reference for adam).", "",
          "| model | opt | layer | coords | tv | mean\\|Var-1\\| | Var\\|D\\| - Cor.2 | skew | "
          "kurt (theory) | bimod (theory) | 0-bin | verdict |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in layer_rows:
        md.append(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.3f} | {r[5]:.3f} | {r[6]:+.3f} |"
                  f" {r[7]:+.2f} | {r[8]:.2f} ({r[9]:.2f}) | {r[10]:.2f} ({r[11]:.2f}) | "
                  f"{r[12]:.2f} | {r[13]} |")
    (out / "summary.md").write_text("\n".join(md) + "\n")
    files.append(out / "summary.md")
    _common.done(out, files)
    print(f"wall clock {wall:.0f} s")


def _pick_layers(layers: list[str], model: str) -> list[str]:
    want = (("convs/0/kernel", "convs/1/kernel", "fc/kernel", "out/kernel") if model == "cnn"
            else ())
    picked = [x for x in want if x in layers]
    if not picked:  # LM: embedding, first attention and mlp kernels, head
        import re

        for pat in (r"embed", r"attn.*(q|qkv|query).*kernel", r"mlp.*kernel", r"(head|out).*"):
            hit = [x for x in layers if re.search(pat, x) and x not in picked]
            if hit:
                picked.append(hit[0])
    return picked[:4] or layers[:4]


if __name__ == "__main__":
    main()
