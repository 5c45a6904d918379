"""An Empirical Model of Large-Batch Training (McCandlish et al., 2018) on lm_tiny: the gradient
noise scale B_simple = tr(Sigma) / |G|^2 measured during Adam training, read against the batch
sizes of the SGD-Adam gap study (Kunstner et al., ICLR 2023; experiments/noise_batch_size_gap.py:
batch 8, 32, 128). Is the gap smaller where the batch exceeds the critical batch size?

Adam (lm_tiny's settings) at batch 64 split into k = 8 microbatches of 8 sequences
(`grad_accum_steps=8`) for 300 steps, with the trainer's noise instrument every 5 steps
(`config.monitor.noise_every`): unbiased |G|^2 and tr(Sigma) from the 8 microbatch gradients,
their ratio per step (`noise/b_simple`) and the ratio of their EMAs (`noise/critical_batch`, the
estimate to read), plus the microbatch SNR and the noise's tail index.

    python experiments/noise_critical_batch_lm.py [--out DIR] [--runs runs/critical_batch]

Writes noise.csv, critical_batch.md and critical_batch.png.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import _common

from optaxlab import configs
from optaxlab.train import metrics as metrics_lib
from optaxlab.train import train

BATCH, K, STEPS, EVERY = 64, 8, 300, 5
GAP = {8: 0.36, 32: 0.49, 128: 0.31}  # SGD-m minus Adam, best of each grid (results page)


def main() -> None:
    p = _common.parser(__file__, __doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, default=_common.REPO / "runs" / "critical_batch")
    args = p.parse_args()
    out = _common.out_dir(args.out)
    t0 = time.perf_counter()
    c = configs.get_config("lm_tiny")
    c.steps, c.batch_size, c.grad_accum_steps = STEPS, BATCH, K
    c.eval_every, c.checkpoint_every, c.log_every, c.progress_bar = 0, STEPS, 10, False
    c.monitor.every, c.monitor.noise_every = 0, EVERY
    train(c, args.runs)
    recs = [r for r in metrics_lib.read_jsonl(args.runs / "metrics.jsonl")
            if "noise/b_simple" in r]
    keys = ("loss", "noise/g2", "noise/trace", "noise/b_simple", "noise/critical_batch",
            "noise/snr", "noise/tail_index")
    files = [_common.write_csv(out / "noise.csv", ["step", *keys],
                               [(r["step"], *(r.get(k, float("nan")) for k in keys))
                                for r in recs])]
    crit = [(r["step"], r["noise/critical_batch"]) for r in recs]
    thirds = [crit[: len(crit) // 3], crit[len(crit) // 3: 2 * len(crit) // 3],
              crit[2 * len(crit) // 3:]]
    lines = ["# The critical batch size of lm_tiny under Adam", "",
             f"Batch {BATCH} = {K} microbatches of {BATCH // K} sequences of 64 bytes, {STEPS} "
             f"steps, measured every {EVERY} steps; wall time {time.perf_counter() - t0:.0f} s.",
             "", "| steps | B_crit (EMA ratio), median | B_simple per step, median | SNR, median | "
             "tail index, median | loss at the end |", "|---|---|---|---|---|---|"]
    for part in thirds:
        steps = {s for s, _ in part}
        rr = [r for r in recs if r["step"] in steps]
        lines.append(
            f"| {min(steps)}-{max(steps)} | {statistics.median(v for _, v in part):.3g} | "
            f"{statistics.median(r['noise/b_simple'] for r in rr):.3g} | "
            f"{statistics.median(r['noise/snr'] for r in rr):.3g} | "
            f"{statistics.median(r['noise/tail_index'] for r in rr):.3g} | "
            f"{rr[-1]['loss']:.3f} |")
    lines += ["", "The SGD-Adam gap of the batch-size study (equal token budget), against it:",
              "", "| batch | gap (SGD-m - Adam) | batch / B_crit (last third) |", "|---|---|---|"]
    b_end = statistics.median(v for _, v in thirds[-1])
    for b, gap in GAP.items():
        lines.append(f"| {b} | +{gap} | {b / b_end:.2g} |")
    (out / "critical_batch.md").write_text("\n".join(lines) + "\n")
    files.append(out / "critical_batch.md")
    plt = _common.plt()
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    ax[0].plot([r["step"] for r in recs], [r["noise/b_simple"] for r in recs], ".", ms=3,
               alpha=0.5, label="B_simple (per step)")
    ax[0].plot(*zip(*crit, strict=True), label="B_crit (EMA ratio)")
    for b in GAP:
        ax[0].axhline(b, ls=":", color="0.5")
    ax[0].set(yscale="symlog", xlabel="step", ylabel="sequences",
              title="gradient noise scale (dotted: the gap study's batches)")
    ax[0].legend(fontsize=8)
    ax[1].plot([r["step"] for r in recs], [r["noise/snr"] for r in recs])
    ax[1].set(yscale="log", xlabel="step", title="microbatch SNR")
    files.append(_common.save_fig(fig, out / "critical_batch.png"))
    print("\n".join(lines))
    _common.done(out, files)


if __name__ == "__main__":
    main()
