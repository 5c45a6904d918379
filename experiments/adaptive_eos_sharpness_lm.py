"""Adaptive Gradient Methods at the Edge of Stability (Cohen et al., 2022) at laptop scale: does
Adam's preconditioned sharpness on lm_tiny rise to its stability threshold (2 + 2 b1) /
((1 - b1) lr) = 38 / lr and hover there, as the paper reports for full-batch training of larger
models?

Adam (lm_tiny's: b1 0.9, b2 0.95, clip 1, warmup 10% + cosine) at four peak learning rates, 300
steps each, with the trainer's sharpness instrument (`config.monitor.sharpness_every`): every 20
steps, Lanczos (20 iterations) on Hessian-vector products of the training loss on a fixed batch
(the first one trained on) gives lambda_max(H) and lambda_max(P^-1 H), P = diag(sqrt(v_hat) +
eps) from the optimizer's state; `sharpness/threshold` is 38 / lr at that step's (scheduled) lr.

    python experiments/adaptive_eos_sharpness_lm.py [--out DIR] [--runs runs/eos]

Writes sharpness.csv (every measurement), eos.md (per lr: the preconditioned sharpness over its
threshold, median over the second half of training, and its maximum) and eos.png.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import _common

from optaxlab import configs
from optaxlab.train import metrics as metrics_lib
from optaxlab.train import train

LRS = (1e-3, 3.16e-3, 1e-2, 3.16e-2)
STEPS, EVERY = 300, 20


def run(lr: float, workdir: Path) -> list[dict]:
    c = configs.get_config("lm_tiny")
    c.steps, c.eval_every, c.checkpoint_every, c.log_every = STEPS, 0, STEPS, 10
    c.progress_bar = False
    c.monitor.every, c.monitor.sharpness_every, c.monitor.sharpness_iters = 0, EVERY, 20
    c.optimizer.learning_rate = lr
    train(c, workdir)
    return [r for r in metrics_lib.read_jsonl(workdir / "metrics.jsonl")
            if "sharpness/precond_lambda_max" in r]


def main() -> None:
    p = _common.parser(__file__, __doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, default=_common.REPO / "runs" / "eos")
    args = p.parse_args()
    out = _common.out_dir(args.out)
    t0 = time.perf_counter()
    rows, curves = [], {}
    for lr in LRS:
        recs = run(lr, args.runs / f"lr={lr:g}")
        curves[lr] = recs
        rows += [(lr, r["step"], r["loss"], r["sharpness/lambda_max"],
                  r["sharpness/precond_lambda_max"], r["sharpness/threshold"],
                  r["sharpness/precond_lambda_max"] / r["sharpness/threshold"]) for r in recs]
    files = [_common.write_csv(out / "sharpness.csv", ["peak_lr", "step", "loss", "lambda_max",
                                                       "precond_lambda_max", "threshold",
                                                       "ratio"], rows)]
    lines = ["# Adam's preconditioned sharpness on lm_tiny vs 38 / lr", "",
             f"{STEPS} steps per lr, measured every {EVERY} steps on a fixed batch; ratio = "
             "lambda_max(P^-1 H) / (38 / lr(t)). Wall time: "
             f"{time.perf_counter() - t0:.0f} s.", "",
             "| peak lr | final loss | lambda_max(H), last | precond, last | 38 / lr, last | "
             "ratio: median of 2nd half | ratio: max |", "|---|---|---|---|---|---|---|"]
    for lr, recs in curves.items():
        ratios = [r["sharpness/precond_lambda_max"] / r["sharpness/threshold"] for r in recs]
        half = ratios[len(ratios) // 2:]
        last = recs[-1]
        lines.append(f"| {lr:g} | {last['loss']:.3f} | {last['sharpness/lambda_max']:.3g} | "
                     f"{last['sharpness/precond_lambda_max']:.3g} | "
                     f"{last['sharpness/threshold']:.3g} | {statistics.median(half):.3g} | "
                     f"{max(ratios):.3g} |")
    (out / "eos.md").write_text("\n".join(lines) + "\n")
    files.append(out / "eos.md")
    plt = _common.plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for lr, recs in curves.items():
        steps = [r["step"] for r in recs]
        line, = axes[0].plot(steps, [r["sharpness/precond_lambda_max"] for r in recs],
                             label=f"lr {lr:g}")
        axes[0].plot(steps, [r["sharpness/threshold"] for r in recs], ls="--",
                     color=line.get_color())
        axes[1].plot(steps, [r["sharpness/lambda_max"] for r in recs], label=f"lr {lr:g}")
    axes[0].set(yscale="log", xlabel="step", title="lambda_max(P^-1 H) (solid) vs 38 / lr (dashed)")
    axes[1].set(yscale="log", xlabel="step", title="lambda_max(H)")
    axes[0].legend(fontsize=8)
    files.append(_common.save_fig(fig, out / "eos.png"))
    print("\n".join(lines))
    _common.done(out, files)


if __name__ == "__main__":
    main()
