"""optaxlab.sweep: grids of training runs that survive kills, record divergence, and compare
optimizers fairly.

    python -m optaxlab.sweep sweeps/lr_optimizer_lm_tiny.py --workdir runs/sweep --workers 2
    python -m optaxlab.sweep.report runs/sweep

A sweep file has `get_sweep()` returning `sweep(config=..., points=..., seeds=...)` (spec.py);
each point is an ordinary `python -m optaxlab.train` run in DIR/points/<name>/ (runner.py), its
outcome read from its workdir (outcome.py): finished, diverged, failed, invalid, interrupted.
The driver (driver.py) schedules points on worker slots, skips what is done, resumes what is not,
and shows progress; report.py and plots.py write results.csv, summary.md and PNGs; slurm.py
writes an sbatch job array that runs point i in task i through the same runner.

  sweep(config, points, *, overrides, seeds, group_by, tune, metric, goal, heatmaps, name)
  product(*grids_or_point_lists), zipped({field: values}), log_grid(start, stop, num|per_decade)
  quasirandom(space, trials), random(space, trials) over log(lo, hi) / linear(lo, hi) /
      choice([...]) dimensions (space.py): a budget of trials instead of a grid
  resolve(spec, sweep_file) -> Plan (points with names, groups and trainer arguments)
"""

from optaxlab.sweep.space import choice, linear, log, quasirandom, random
from optaxlab.sweep.spec import (
    Plan,
    Point,
    SweepError,
    load_sweep_file,
    log_grid,
    product,
    read_plan,
    resolve,
    sweep,
    zipped,
)

__all__ = ["Plan", "Point", "SweepError", "choice", "linear", "load_sweep_file", "log", "log_grid",
           "product", "quasirandom", "random", "read_plan", "resolve", "sweep", "zipped"]
