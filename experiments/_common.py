"""Shared plumbing of the experiment scripts: output folder, CSV writing, figure saving.

Every experiment writes to `outputs/<script name>/` (gitignored) unless `--out` is given, and
prints where it wrote.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python experiments/x.py` without an installed package
    sys.path.insert(0, str(REPO))


def parser(script: str, description: str) -> argparse.ArgumentParser:
    """An ArgumentParser with `--out` defaulting to outputs/<script stem>/."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--out",
        type=Path,
        default=REPO / "outputs" / Path(script).stem,
        help="output folder (default: outputs/<script name>/)",
    )
    return p


def sweep_parser(script: str, description: str, runs: str) -> argparse.ArgumentParser:
    """`parser` plus the options of a script that runs a sweep: `--sweep-dir` (default
    runs/<runs>/) and `--workers` (default 2)."""
    p = parser(script, description)
    p.add_argument("--sweep-dir", type=Path, default=REPO / "runs" / runs)
    p.add_argument("--workers", type=int, default=2)
    return p


def out_dir(path: Path) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence]) -> Path:
    """Writes rows under a header; floats with 6 significant digits."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for row in rows:
            w.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])
    return path


def save_fig(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def plt():
    """matplotlib.pyplot with the non-interactive Agg backend."""
    import matplotlib

    if os.environ.get("MPLBACKEND") is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def done(out: Path, files: Sequence[Path]) -> None:
    print(f"wrote {len(files)} files to {Path(out).resolve()}:")
    for f in files:
        print(f"  {Path(f).name}")


def copy_sweep_outputs(sweep_dir: Path, out: Path, plots: bool = True) -> list[Path]:
    """A sweep's results.csv and summary.md (and its plots/*.png) copied into `out`."""
    import shutil

    files = []
    for name in ("results.csv", "summary.md"):
        shutil.copy(sweep_dir / name, out / name)
        files.append(out / name)
    if plots and (sweep_dir / "plots").is_dir():
        shutil.copytree(sweep_dir / "plots", out / "plots", dirs_exist_ok=True)
        files += sorted((out / "plots").glob("*.png"))
    return files
