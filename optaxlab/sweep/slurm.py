"""`--slurm-array`: an sbatch job-array script whose task i runs point i through the sweep runner.

Each task is `python -m optaxlab.sweep --workdir DIR --index $SLURM_ARRAY_TASK_ID --no-report
--no-vectorize` (one point per task, as a solo trainer):
the same runner as a local sweep (skip when done, resume from the point's last checkpoint, the
point lock, outcome files), so a task is idempotent and safe to requeue after preemption.
SLURM sends SIGTERM to the task 120 s before its time limit (`--signal=B:TERM@120`); the runner
forwards it to the trainer, which checkpoints and stops.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from optaxlab.sweep.spec import Plan, Point

SCRIPT = "sweep.sbatch"


def array_spec(indices: Sequence[int]) -> str:
    """0-19 for a contiguous range, else 0,3,5 (SLURM's --array syntax)."""
    idx = sorted(indices)
    if idx and idx == list(range(idx[0], idx[-1] + 1)):
        return f"{idx[0]}-{idx[-1]}" if len(idx) > 1 else str(idx[0])
    return ",".join(map(str, idx))


def task_command(sweep_dir: Path, python: str | None = None) -> list[str]:
    return [python or sys.executable, "-m", "optaxlab.sweep", "--workdir",
            str(Path(sweep_dir).absolute()), "--index", "${SLURM_ARRAY_TASK_ID}", "--no-report",
            "--no-vectorize"]


def write_script(plan: Plan, points: Sequence[Point], sweep_dir: Path,
                 options: Sequence[str] = (), python: str | None = None) -> Path:
    sweep_dir = Path(sweep_dir).absolute()
    (sweep_dir / "slurm").mkdir(parents=True, exist_ok=True)
    cmd = " ".join(part if part.startswith("${") else shlex.quote(part)
                   for part in task_command(sweep_dir, python))
    cmd = cmd.replace("${SLURM_ARRAY_TASK_ID}", '"${SLURM_ARRAY_TASK_ID}"')
    lines = [
        "#!/bin/bash",
        f"# optaxlab sweep {plan.name}: {len(points)} point(s) of {sweep_dir / 'sweep.json'}.",
        "# Task i runs point i through the sweep runner (skips it when done, resumes it from its",
        "# last checkpoint, records its outcome): idempotent and safe to requeue.",
        f"# Submit: sbatch {shlex.quote(str(sweep_dir / SCRIPT))}",
        f"# When every task is done: {shlex.quote(python or sys.executable)} -m "
        f"optaxlab.sweep.report {shlex.quote(str(sweep_dir))}",
        f"#SBATCH --job-name=sweep-{plan.name}"[:80],
        f"#SBATCH --array={array_spec([p.index for p in points])}",
        f"#SBATCH --output={sweep_dir / 'slurm'}/%A_%a.out",
        "#SBATCH --open-mode=append",
        "#SBATCH --requeue",
        "#SBATCH --signal=B:TERM@120",
        *(f"#SBATCH {opt}" for opt in options),
        "set -euo pipefail",
        f"cd {shlex.quote(os.getcwd())}",
        f"exec {cmd}",
        "",
    ]
    path = sweep_dir / SCRIPT
    path.write_text("\n".join(lines))
    path.chmod(0o755)
    return path
