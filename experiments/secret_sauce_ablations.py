"""In Search of Adam's Secret Sauce, Tables 2-3 at laptop scale: runs
sweeps/secret_sauce_ablations_lm_tiny.py (Adam b1 = b2 = 0.95 with eps down to 0, without bias
correction, gradient-initialized; Signum with a fixed mollifier, ZI and GI; 3 seeds each) and
writes ablations.md (mean +- std per setting) next to the sweep's results.csv and summary.md.

    python experiments/secret_sauce_ablations.py [--out DIR] [--sweep-dir runs/ablations]
"""

from __future__ import annotations

import statistics
import time

import _common
from secret_sauce_table1 import rows as read_rows
from secret_sauce_table1 import score, sweep

SWEEP = "sweeps/secret_sauce_ablations_lm_tiny.py"


def main() -> None:
    p = _common.sweep_parser(__file__, __doc__.splitlines()[0], "ablations")
    args = p.parse_args()
    out = _common.out_dir(args.out)
    t0 = time.perf_counter()
    sweep(args.sweep_dir, args.workers, [], SWEEP)
    res = read_rows(args.sweep_dir)
    groups: dict[str, list[dict]] = {}
    for r in res:
        groups.setdefault(r["group"], []).append(r)
    ran = [r for r in res if r["status"] in ("finished", "diverged") and r["wall_s"]]
    point_s = sum(float(r["wall_s"]) for r in ran)
    md = ["# Secret Sauce Tables 2-3 ablations on lm_tiny (300 steps, 3 seeds)", "",
          f"Command: `python experiments/secret_sauce_ablations.py` (sweep `{SWEEP}`). Cost: "
          f"{len(ran)} points, {point_s:.0f} s of point wall time (2 workers: about "
          f"{point_s / 2 / 60:.0f} min); this invocation {time.perf_counter() - t0:.0f} s.", "",
          "| setting | val loss (mean +- std, n) | diverged |", "|---|---|---|"]
    for g, rr in groups.items():
        xs = [score(r) for r in rr if r["status"] == "finished"]
        div = sum(r["status"] == "diverged" for r in rr)
        cell = (f"{statistics.mean(xs):.3f} +- {statistics.stdev(xs):.3f} (n={len(xs)})"
                if len(xs) > 1 else ", ".join(f"{x:.3f}" for x in xs) or "-")
        md.append(f"| {g} | {cell} | {div} |")
    (out / "ablations.md").write_text("\n".join(md) + "\n")
    files = [out / "ablations.md"]
    files += _common.copy_sweep_outputs(args.sweep_dir, out, plots=False)
    _common.done(out, files)
    print("\n".join(md))


if __name__ == "__main__":
    main()
