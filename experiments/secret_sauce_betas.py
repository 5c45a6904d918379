"""In Search of Adam's Secret Sauce, Takeaway 2 at laptop scale: is b1 = b2 near-optimal for Adam?
Runs sweeps/secret_sauce_betas_lm_tiny.py: every (b1, b2) cell at seed 0, then seeds 1 and 2 at the
best cell and at the best equal-beta cell, and reports their distance in seed standard deviations.

    python experiments/secret_sauce_betas.py [--out DIR] [--sweep-dir runs/betas]

Writes betas.md, cells.csv and copies the sweep's results.csv, summary.md and plots (the b1 x b2
heatmap).
"""

from __future__ import annotations

import json
import statistics
import time

import _common
from secret_sauce_table1 import rows as read_rows
from secret_sauce_table1 import score, sweep

SWEEP = "sweeps/secret_sauce_betas_lm_tiny.py"


def main() -> None:
    p = _common.sweep_parser(__file__, __doc__.splitlines()[0], "betas")
    args = p.parse_args()
    out = _common.out_dir(args.out)
    t0 = time.perf_counter()
    sweep(args.sweep_dir, args.workers, ["--only", "seed=0"], SWEEP)
    res = read_rows(args.sweep_dir)
    cell = lambda r: (float(r["optimizer.b1"]), float(r["optimizer.b2"]))
    seed0 = [r for r in res if r["seed"] == "0" and r["status"] in ("finished", "diverged")]
    best = min(seed0, key=score)
    diag = min((r for r in seed0 if cell(r)[0] == cell(r)[1]), key=score)
    plan = json.loads((args.sweep_dir / "sweep.json").read_text())
    index = {pt["name"]: pt["index"] for pt in plan["points"]}
    picks = []
    for r in {best["name"]: best, diag["name"]: diag}.values():
        stem = r["name"].rsplit(",seed=", 1)[0]
        picks += ["--index", str(index[f"{stem},seed=1"]), "--index", str(index[f"{stem},seed=2"])]
    sweep(args.sweep_dir, args.workers, picks, SWEEP)
    res = read_rows(args.sweep_dir)
    stats = {}
    for name, r in (("best cell", best), ("best b1 = b2", diag)):
        xs = [score(q) for q in res if cell(q) == cell(r) and q["status"] == "finished"]
        stats[name] = (cell(r), statistics.mean(xs), statistics.stdev(xs), len(xs))
    (cb, mb, sb, nb), (cd, md_, sd, nd) = stats["best cell"], stats["best b1 = b2"]
    pooled = ((sb**2 + sd**2) / 2) ** 0.5
    gap = md_ - mb
    cells = sorted({cell(r) for r in seed0})
    table = [[b1, b2, next(score(r) for r in seed0 if cell(r) == (b1, b2))] for b1, b2 in cells]
    files = [_common.write_csv(out / "cells.csv", ["b1", "b2", "val_loss_seed0"], table)]
    files += _common.copy_sweep_outputs(args.sweep_dir, out)
    ran = [r for r in res if r["status"] in ("finished", "diverged") and r["wall_s"]]
    point_s = sum(float(r["wall_s"]) for r in ran)
    b1s = sorted({c[0] for c in cells})
    b2s = sorted({c[1] for c in cells})
    grid = {(a, b): v for a, b, v in table}
    md = ["# Secret Sauce Takeaway 2: Adam over b1 x b2 on lm_tiny (lr 3.16e-3, 300 steps)", "",
          f"Command: `python experiments/secret_sauce_betas.py` (sweep `{SWEEP}`). Cost: "
          f"{len(ran)} points, {point_s:.0f} s of point wall time (2 workers: about "
          f"{point_s / 2 / 60:.0f} min); this invocation {time.perf_counter() - t0:.0f} s.", "",
          "Validation loss at seed 0 (rows b1, columns b2):", "",
          "| b1 \\ b2 | " + " | ".join(f"{b:g}" for b in b2s) + " |",
          "|---|" + "---|" * len(b2s)]
    for a in b1s:
        md.append(f"| {a:g} | " + " | ".join(
            f"**{grid[(a, b)]:.3f}**" if a == b else f"{grid[(a, b)]:.3f}" for b in b2s) + " |")
    md += ["", f"Best cell {cb}: {mb:.3f} +- {sb:.3f} (n={nb}); best equal-beta cell {cd}: "
           f"{md_:.3f} +- {sd:.3f} (n={nd}); gap {gap:+.3f} = {gap / pooled:.1f} pooled seed std."]
    (out / "betas.md").write_text("\n".join(md) + "\n")
    files.append(out / "betas.md")
    _common.done(out, files)
    print("\n".join(md))


if __name__ == "__main__":
    main()
