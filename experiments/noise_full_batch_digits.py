"""Beyond the papers: is it the noise? (Kunstner et al., ICLR 2023), full-batch half: runs
sweeps/noise_full_batch_digits.py (Adam, SGD-m, Signum on the digits CNN at batch 64 and full
batch, each tuned) and writes the best final training loss per optimizer and batch with the gap to
Adam.

    python experiments/noise_full_batch_digits.py [--out DIR] [--sweep-dir runs/full_batch]
"""

from __future__ import annotations

import math
import time

import _common
from secret_sauce_table1 import rows as read_rows
from secret_sauce_table1 import sweep

SWEEP = "sweeps/noise_full_batch_digits.py"


def main() -> None:
    p = _common.sweep_parser(__file__, __doc__.splitlines()[0], "full_batch")
    args = p.parse_args()
    out = _common.out_dir(args.out)
    t0 = time.perf_counter()
    sweep(args.sweep_dir, args.workers, [], SWEEP)
    res = read_rows(args.sweep_dir)

    def loss(r):
        try:
            return float(r["final_train_loss"]) if r["status"] == "finished" else math.inf
        except ValueError:
            return math.inf

    names = sorted({r["optimizer.name"] for r in res})
    sizes = sorted({int(r["batch_size"]) for r in res})
    best = {}
    for n in names:
        for b in sizes:
            rr = [r for r in res if r["optimizer.name"] == n and int(r["batch_size"]) == b]
            grid = sorted(float(r["optimizer.learning_rate"]) for r in rr)
            top = min(rr, key=loss)
            lr = float(top["optimizer.learning_rate"])
            best[(n, b)] = (loss(top), lr, lr in (grid[0], grid[-1]))
    ran = [r for r in res if r["status"] in ("finished", "diverged") and r["wall_s"]]
    point_s = sum(float(r["wall_s"]) for r in ran)
    rows = [[n, b, *best[(n, b)], best[(n, b)][0] - best[("adam", b)][0]]
            for n in names for b in sizes]
    files = [_common.write_csv(out / "full_batch.csv", ["optimizer", "batch_size",
                                                        "best_final_train_loss", "best_lr",
                                                        "lr_on_grid_edge", "gap_to_adam"], rows)]
    md = ["# Is it the noise? The digits CNN at batch 64 vs full batch (500 steps)", "",
          f"Command: `python experiments/noise_full_batch_digits.py` (sweep `{SWEEP}`). Cost: "
          f"{len(ran)} points, {point_s:.0f} s of point wall time (2 workers: about "
          f"{point_s / 2 / 60:.0f} min); this invocation {time.perf_counter() - t0:.0f} s. Final "
          "training loss (batch 64: the last mini-batch's), seed 0; 'edge': best lr on its "
          "grid's edge.", "",
          "| optimizer | " + " | ".join(f"batch {b}" for b in sizes) + " |",
          "|---|" + "---|" * len(sizes)]
    for n in names:
        md.append(f"| {n} | " + " | ".join(
            f"{best[(n, b)][0]:.3g} (lr {best[(n, b)][1]:g}{', edge' if best[(n, b)][2] else ''})"
            for b in sizes) + " |")
    (out / "full_batch.md").write_text("\n".join(md) + "\n")
    files.append(out / "full_batch.md")
    files += _common.copy_sweep_outputs(args.sweep_dir, out, plots=False)
    _common.done(out, files)
    print("\n".join(md))


if __name__ == "__main__":
    main()
