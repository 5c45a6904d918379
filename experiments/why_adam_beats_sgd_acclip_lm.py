"""Why Adam Beats SGD for Attention Models at laptop scale: does ACClip match or beat Adam on the
LM? Runs sweeps/acclip_lm_tiny.py in two stages (learning-rate grid at seed 0, then seeds 1 and 2
at the best) and sets it beside Adam, SGD+Gclip and SGD from the Table 1 study, which used the same
base config, overrides and seeds (experiments/results/secret_sauce_table1/table.csv; run
experiments/secret_sauce_table1.py first).

    python experiments/why_adam_beats_sgd_acclip_lm.py [--out DIR] [--sweep-dir runs/acclip]

Writes table.md, table.csv and copies the sweep's results.csv, summary.md and plots.
"""

from __future__ import annotations

import csv
import math
import statistics
import time

import _common
from secret_sauce_table1 import score, setting, two_stage

SWEEP = "sweeps/acclip_lm_tiny.py"
TABLE1 = _common.REPO / "experiments" / "results" / "secret_sauce_table1" / "table.csv"


def main() -> None:
    p = _common.sweep_parser(__file__, __doc__.splitlines()[0], "acclip")
    args = p.parse_args()
    out = _common.out_dir(args.out)
    t0 = time.perf_counter()
    res, best, stage1, stage2 = two_stage(SWEEP, args.sweep_dir, args.workers)
    b = best["acclip"]
    losses = [score(r) for r in res if setting(r) == setting(b)
              and r["status"] in ("finished", "diverged")]
    grid = sorted({float(r["optimizer.learning_rate"]) for r in res})
    lr = float(b["optimizer.learning_rate"])
    rows = [dict(optimizer="acclip", lr=lr, n=len(losses), loss_mean=statistics.mean(losses),
                 loss_std=statistics.stdev(losses) if len(losses) > 1 else math.nan,
                 edge="yes" if lr in (grid[0], grid[-1]) else "no",
                 source="this sweep")]
    with open(TABLE1) as f:
        for r in csv.DictReader(f):
            if r["optimizer"] in ("adam", "sgd_gclip", "momentum"):
                rows.append(dict(optimizer=r["optimizer"], lr=float(r["lr"]), n=int(r["n"]),
                                 loss_mean=float(r["loss_mean"]), loss_std=float(r["loss_std"]),
                                 edge=r["edge"], source="Table 1 study"))
    rows.sort(key=lambda d: d["loss_mean"])
    files = [_common.write_csv(out / "table.csv", list(rows[0]), [list(d.values()) for d in rows])]
    files += _common.copy_sweep_outputs(args.sweep_dir, out)
    ran = [r for r in res if r["status"] in ("finished", "diverged") and r["wall_s"]]
    point_s = sum(float(r["wall_s"]) for r in ran)
    wall = time.perf_counter() - t0
    md = ["# ACClip vs Adam, SGD+Gclip, SGD on lm_tiny (300 steps)", "",
          f"Command: `python experiments/why_adam_beats_sgd_acclip_lm.py` (sweep `{SWEEP}`). "
          f"Cost: {len(ran)} ACClip points, {point_s:.0f} s of point wall time (2 workers: about "
          f"{point_s / 2 / 60:.0f} min); this invocation {wall:.0f} s (stage 1 {stage1:.0f} s, "
          f"stage 2 {stage2:.0f} s). ACClip lr grid: {' '.join(f'{g:g}' for g in grid)}.", "",
          "| rank | optimizer | best lr | val loss (mean +- std, n) | lr on grid edge | from |",
          "|---|---|---|---|---|---|"]
    for i, d in enumerate(rows, 1):
        md.append(f"| {i} | {d['optimizer']} | {d['lr']:g} | {d['loss_mean']:.3f} +- "
                  f"{d['loss_std']:.3f} (n={d['n']}) | {d['edge']} | {d['source']} |")
    (out / "table.md").write_text("\n".join(md) + "\n")
    files.append(out / "table.md")
    _common.done(out, files)
    print("\n".join(md))


if __name__ == "__main__":
    main()
