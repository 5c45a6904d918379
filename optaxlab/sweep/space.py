"""Search spaces with a trial budget: random and quasi-random points for a sweep file.

    from optaxlab.sweep import choice, linear, log, quasirandom, sweep

    space = {"optimizer.learning_rate": log(1e-4, 1e-1), "optimizer.b1": linear(0.8, 0.99)}
    points = (quasirandom(space, trials=16, fixed={"optimizer.name": "adam"})
              + quasirandom(space, trials=16, fixed={"optimizer.name": "signum"}))
    return sweep(config="lm_tiny", points=points, seeds=[0])

Each call returns a plain list of point dicts, the same kind `product` returns, so grids and
searches mix. The comparison they make fair is the one of AlgoPerf's external-tuning ruleset: every
optimizer gets the same budget of trials drawn from a declared space, and the report compares the
best of N trials (with a bootstrap interval over trial subsets), not one hand-picked grid.

- `quasirandom` draws from a scrambled Sobol (default) or Halton sequence
  (`scipy.stats.qmc`) with a fixed seed; `random` from numpy's PCG64, one generator per trial
  index. Both are prefix-stable: `trials=32` starts with the 16 points of `trials=16`, so a sweep
  extended from 16 to 32 trials reuses (skips) the 16 points already run.
- Values are rounded to `digits` significant digits (names and configs read 0.00316, not
  0.0031622776601683794); two trials that round to the same point are an error naming them
  (raise `digits`).
- `log(low, high)` is uniform in log space, `linear(low, high)` uniform, `choice(values)` picks one
  of the values with equal probability; `integer=True` rounds log/linear draws to ints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy.stats import qmc

from optaxlab.sweep.spec import SweepError, _round

METHODS = ("sobol", "halton")


class Dimension(NamedTuple):
    """One axis of a search space: kind 'log' | 'linear' | 'choice'."""

    kind: str
    low: float = 0.0
    high: float = 0.0
    values: tuple = ()
    integer: bool = False

    def at(self, u: float, digits: int) -> Any:
        """The value at u in [0, 1) of this dimension's distribution."""
        if self.kind == "choice":
            return self.values[min(int(u * len(self.values)), len(self.values) - 1)]
        if self.kind == "log":
            x = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            x = self.low + u * (self.high - self.low)
        return int(round(x)) if self.integer else _round(x, digits)


def _bounds(name: str, low: float, high: float) -> None:
    ok = all(isinstance(v, (int, float)) and math.isfinite(v) for v in (low, high))
    if not ok or not low < high:
        raise SweepError(f"{name}({low!r}, {high!r}): need finite numbers with low < high")


def log(low: float, high: float, *, integer: bool = False) -> Dimension:
    """Log-uniform between `low` and `high` (both > 0): learning rates, eps, 1 - beta."""
    _bounds("log", low, high)
    if low <= 0:
        raise SweepError(f"log({low!r}, {high!r}): low must be > 0 (use linear() for ranges "
                         "that include 0)")
    return Dimension("log", float(low), float(high), integer=integer)


def linear(low: float, high: float, *, integer: bool = False) -> Dimension:
    """Uniform between `low` and `high`: momenta, warmup fractions."""
    _bounds("linear", low, high)
    return Dimension("linear", float(low), float(high), integer=integer)


def choice(values: Sequence[Any]) -> Dimension:
    """One of `values`, each with equal probability: names, bools, a few discrete settings."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise SweepError(f"choice({values!r}): give a non-empty list of values")
    return Dimension("choice", values=tuple(values))


def _check(space: Mapping[str, Dimension], trials: int, fixed: Mapping[str, Any] | None,
           where: str) -> None:
    if not isinstance(space, Mapping) or not space:
        raise SweepError(f"{where}: space must be a non-empty dict {{field: log(...) | "
                         "linear(...) | choice([...])}}")
    for f, d in space.items():
        if not isinstance(d, Dimension):
            raise SweepError(f"{where}: {f}={d!r} is not a dimension; use log(low, high), "
                             "linear(low, high) or choice([values])")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise SweepError(f"{where}: trials={trials!r} must be an int >= 1")
    both = set(space) & set(fixed or {})
    if both:
        raise SweepError(f"{where}: field {sorted(both)[0]!r} is both searched and fixed")


def _points(space: Mapping[str, Dimension], unit: np.ndarray, fixed, digits: int, where: str
            ) -> list[dict[str, Any]]:
    fields = list(space)
    out, seen = [], {}
    for i, row in enumerate(unit):
        drawn = {f: space[f].at(float(u), digits) for f, u in zip(fields, row, strict=True)}
        point = {**(fixed or {}), **drawn}
        key = repr(sorted(point.items()))
        if key in seen:
            raise SweepError(f"{where}: trials {seen[key]} and {i} round to the same point "
                             f"{point}; raise digits= (now {digits})")
        seen[key] = i
        out.append(point)
    return out


def quasirandom(space: Mapping[str, Dimension], trials: int, *, method: str = "sobol",
                seed: int = 0, fixed: Mapping[str, Any] | None = None, digits: int = 3
                ) -> list[dict[str, Any]]:
    """`trials` points of a scrambled low-discrepancy sequence over `space`.

    Args:
      space: {field: log(...) | linear(...) | choice([...])}, fields as on the trainer's command
        line.
      trials: the budget: how many points.
      method: 'sobol' (default) or 'halton' (scipy.stats.qmc, scrambled).
      seed: the scrambling seed; the same seed gives the same points, and a larger `trials` the
        same first points.
      fixed: {field: value} added to every point (e.g. the optimizer's name).
      digits: significant digits of numeric values.

    Returns:
      A list of point dicts for `sweep(points=...)`.
    """
    _check(space, trials, fixed, "quasirandom")
    if method not in METHODS:
        raise SweepError(f"quasirandom: method={method!r}; valid: {list(METHODS)}")
    d = len(space)
    if method == "sobol":
        engine = qmc.Sobol(d, scramble=True, seed=seed)
        # Sobol's balance needs 2^k points; draw the next power of two and keep the prefix, so
        # every budget is a prefix of every larger one.
        unit = engine.random(2 ** math.ceil(math.log2(trials)))[:trials]
    else:
        unit = qmc.Halton(d, scramble=True, seed=seed).random(trials)
    return _points(space, unit, fixed, digits, "quasirandom")


def random(space: Mapping[str, Dimension], trials: int, *, seed: int = 0,
           fixed: Mapping[str, Any] | None = None, digits: int = 3) -> list[dict[str, Any]]:
    """`trials` independent uniform points over `space` (trial i from its own generator seeded
    by (seed, i), so budgets are prefixes of each other). Arguments as for `quasirandom`."""
    _check(space, trials, fixed, "random")
    unit = np.stack([np.random.default_rng([seed, i]).random(len(space)) for i in range(trials)])
    return _points(space, unit, fixed, digits, "random")
