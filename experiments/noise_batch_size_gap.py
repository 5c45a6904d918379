"""Beyond the papers: is it the noise? (Kunstner et al., ICLR 2023) Runs
sweeps/noise_batch_size_lm_tiny.py and plots each optimizer's best validation loss and the gap to
Adam against the batch size (equal token budget).

    python experiments/noise_batch_size_gap.py [--out DIR] [--sweep-dir runs/noise_batch]

Writes gap.csv, gap.md, gap.png and copies the sweep's results.csv and summary.md.
"""

from __future__ import annotations

import csv
import math
import subprocess
import sys
import time

import _common

SWEEP = "sweeps/noise_batch_size_lm_tiny.py"


def main() -> None:
    p = _common.sweep_parser(__file__, __doc__.splitlines()[0], "noise_batch")
    args = p.parse_args()
    out = _common.out_dir(args.out)
    t0 = time.perf_counter()
    rc = subprocess.call([sys.executable, "-m", "optaxlab.sweep", SWEEP, "--workdir",
                          str(args.sweep_dir), "--workers", str(args.workers), "--quiet"],
                         cwd=_common.REPO)
    if rc not in (0, 3):
        raise SystemExit(f"sweep exited with {rc}")
    wall = time.perf_counter() - t0
    with open(args.sweep_dir / "results.csv") as f:
        res = list(csv.DictReader(f))
    best: dict[tuple[str, int], tuple[float, float, bool]] = {}
    for name in sorted({r["optimizer.name"] for r in res}):
        for bs in sorted({int(r["batch_size"]) for r in res}):
            rr = [r for r in res if r["optimizer.name"] == name and int(r["batch_size"]) == bs]
            grid = sorted(float(r["optimizer.learning_rate"]) for r in rr)

            def loss(r):
                try:
                    return float(r["final_eval_loss"]) if r["status"] == "finished" else math.inf
                except ValueError:
                    return math.inf
            b = min(rr, key=loss)
            lr = float(b["optimizer.learning_rate"])
            best[(name, bs)] = (loss(b), lr, lr in (grid[0], grid[-1]))
    names = sorted({k[0] for k in best})
    sizes = sorted({k[1] for k in best})
    rows = [[n, bs, best[(n, bs)][0], best[(n, bs)][1], best[(n, bs)][2],
             best[(n, bs)][0] - best[("adam", bs)][0]] for n in names for bs in sizes]
    files = [_common.write_csv(out / "gap.csv", ["optimizer", "batch_size", "best_val_loss",
                                                 "best_lr", "lr_on_grid_edge", "gap_to_adam"],
                               rows)]
    files += _common.copy_sweep_outputs(args.sweep_dir, out, plots=False)
    plt = _common.plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for n in names:
        axes[0].plot(sizes, [best[(n, b)][0] for b in sizes], "o-", label=n)
        axes[1].plot(sizes, [best[(n, b)][0] - best[("adam", b)][0] for b in sizes], "o-",
                     label=n)
    axes[0].set(xscale="log", xlabel="batch size (sequences; equal tokens)",
                ylabel="best val loss (nats/byte)")
    axes[1].set(xscale="log", xlabel="batch size", ylabel="gap to Adam")
    for ax in axes:
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.legend(fontsize=7)
    fig.tight_layout()
    files.append(_common.save_fig(fig, out / "gap.png"))
    ran = [r for r in res if r["status"] in ("finished", "diverged") and r["wall_s"]]
    point_s = sum(float(r["wall_s"]) for r in ran)
    md = ["# Is it the noise? Adam / SGD-m / Signum on lm_tiny vs batch size", "",
          f"Command: `python experiments/noise_batch_size_gap.py` (sweep `{SWEEP}`). Cost: "
          f"{len(ran)} points, {point_s:.0f} s of point wall time (2 workers: about "
          f"{point_s / 2 / 60:.0f} min) on the shared 2-core CPU (nice 19); this invocation "
          f"{wall:.0f} s (a rerun skips finished points). Seed 0 only; validation loss in nats "
          "per byte on the same 1024 sequences; 'edge': the best lr is on its grid's edge.", "",
          "| optimizer | " + " | ".join(f"batch {b}" for b in sizes) + " |",
          "|---|" + "---|" * len(sizes)]
    for n in names:
        cells = []
        for b in sizes:
            v, lr, edge = best[(n, b)]
            cells.append(f"{v:.3f} (lr {lr:g}{', edge' if edge else ''}; gap "
                         f"{v - best[('adam', b)][0]:+.3f})")
        md.append(f"| {n} | " + " | ".join(cells) + " |")
    (out / "gap.md").write_text("\n".join(md) + "\n")
    files.append(out / "gap.md")
    _common.done(out, files)
    print("\n".join(md))


if __name__ == "__main__":
    main()
