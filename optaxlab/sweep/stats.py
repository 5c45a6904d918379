"""The statistics a sweep's comparisons rest on: best-of-budget with a bootstrap interval, paired
and unpaired seed comparisons, and the seeds a difference would need.

Pure functions of lists of scores (lower is better unless said otherwise), used by the sweep
report; scipy.stats does the tests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats


class BestOf(NamedTuple):
    budget: int
    median: float  # median over bootstrap draws of the best of `budget` trials
    low: float  # 2.5% quantile
    high: float  # 97.5% quantile


def best_of_budget(scores: Sequence[float], budget: int, *, draws: int = 2000, seed: int = 0
                   ) -> BestOf:
    """What tuning with `budget` trials gives: the best (minimum) of `budget` trials drawn with
    replacement from the trials run, over `draws` bootstrap draws (the AlgoPerf external-tuning
    view of a search space). Non-finite scores (diverged trials) count as trials that lost.

    Raises ValueError when there are no scores or the budget is not a positive int.
    """
    x = np.asarray(list(scores), dtype=float)
    if x.size == 0:
        raise ValueError("best_of_budget: no scores")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"best_of_budget: budget={budget!r} must be an int >= 1")
    x = np.where(np.isfinite(x), x, np.inf)
    rng = np.random.default_rng(seed)
    best = x[rng.integers(0, x.size, size=(draws, budget))].min(axis=1)
    lo, med, hi = np.quantile(best, [0.025, 0.5, 0.975], method="inverted_cdf")  # inf-safe
    return BestOf(budget, float(med), float(lo), float(hi))


def prob_best_of_budget_lower(a: Sequence[float], b: Sequence[float], budget: int, *,
                              draws: int = 2000, seed: int = 0) -> float:
    """P(best of `budget` trials of a < best of `budget` trials of b), trials drawn with
    replacement from each side's runs (ties count one half; non-finite scores lose)."""
    xa = np.asarray(list(a), dtype=float)
    xb = np.asarray(list(b), dtype=float)
    if xa.size == 0 or xb.size == 0:
        raise ValueError("prob_best_of_budget_lower: a side has no scores")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"prob_best_of_budget_lower: budget={budget!r} must be an int >= 1")
    xa, xb = (np.where(np.isfinite(x), x, np.inf) for x in (xa, xb))
    rng = np.random.default_rng(seed)
    ba = xa[rng.integers(0, xa.size, size=(draws, budget))].min(axis=1)
    bb = xb[rng.integers(0, xb.size, size=(draws, budget))].min(axis=1)
    return float(np.mean(ba < bb) + 0.5 * np.mean(ba == bb))


class Comparison(NamedTuple):
    kind: str  # "paired" (same seeds on both sides) | "welch" (unpaired)
    n: int  # pairs (paired) or the smaller side (welch)
    diff: float  # mean(b) - mean(a)
    low: float  # 95% interval of the difference
    high: float
    p_value: float
    seeds_needed: int | None  # per side, for the 95% interval to exclude 0; None if diff == 0


def _seeds_needed(diff: float, var_of_one: float) -> int | None:
    """Smallest n >= 2 whose 95% t interval excludes 0 at this difference and spread:
    |diff| >= t_{0.975, n-1} sqrt(var_of_one / n) (about 4 var / diff^2 for large n; at n = 2
    the t quantile is 12.7, so a normal-approximation count would promise too few seeds)."""
    if diff == 0 or not math.isfinite(diff):
        return None
    if var_of_one == 0:
        return 2
    n = max(2, math.ceil(4 * var_of_one / diff**2))  # the normal answer, a lower bound
    while n < 100_000 and abs(diff) < stats.t.ppf(0.975, n - 1) * math.sqrt(var_of_one / n):
        n += 1
    return n


def compare(a: Mapping[int, float], b: Mapping[int, float]) -> Comparison | None:
    """b against a over seeds ({seed: score}). Seeds both sides ran are paired (the trainer's
    data order depends on the seed only, so seed s reads the same batches in every group): a
    paired t-test on the differences. Without two common seeds, Welch's unequal-variance t-test.
    None when a side has fewer than two finite scores.
    """
    fa = {s: v for s, v in a.items() if math.isfinite(v)}
    fb = {s: v for s, v in b.items() if math.isfinite(v)}
    common = sorted(set(fa) & set(fb))
    if len(common) >= 2:
        d = np.array([fb[s] - fa[s] for s in common])
        n = d.size
        mean, sd = float(d.mean()), float(d.std(ddof=1))
        half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
        p = float(stats.ttest_rel([fb[s] for s in common], [fa[s] for s in common]).pvalue) \
            if sd > 0 else (0.0 if mean != 0 else 1.0)
        return Comparison("paired", n, mean, mean - half, mean + half, p,
                          _seeds_needed(mean, sd**2))
    xa, xb = np.array(list(fa.values())), np.array(list(fb.values()))
    if xa.size < 2 or xb.size < 2:
        return None
    va, vb = xa.var(ddof=1), xb.var(ddof=1)
    mean = float(xb.mean() - xa.mean())
    se = math.sqrt(va / xa.size + vb / xb.size)
    if se > 0:
        dof = se**4 / ((va / xa.size) ** 2 / (xa.size - 1) + (vb / xb.size) ** 2 / (xb.size - 1))
        half = float(stats.t.ppf(0.975, dof)) * se
        p = float(stats.ttest_ind(xb, xa, equal_var=False).pvalue)
    else:
        half, p = 0.0, (0.0 if mean != 0 else 1.0)
    return Comparison("welch", int(min(xa.size, xb.size)), mean, mean - half, mean + half, p,
                      _seeds_needed(mean, float(va + vb)))


def robust_range(values: Sequence[float], *, factor: float = 10.0
                 ) -> tuple[float, float, bool, list[float]]:
    """The y range that shows the bulk of `values`: (low, high, log_axis, off_scale).

    Values above low + factor x max(median - low, |low|) (a blown-up run beside converged ones:
    a loss of 1e5 next to losses of 2) are `off_scale`, so a plot marks them at its top edge
    instead of squeezing every other point into a line; `log_axis` is True when the kept values
    are positive and span more than a factor of 10.
    """
    x = sorted(v for v in values if math.isfinite(v))
    if not x:
        return 0.0, 1.0, False, []
    lo, med = x[0], float(np.median(x))
    scale = max(med - lo, abs(lo))
    cap = lo + factor * scale if scale > 0 else math.inf
    kept = [v for v in x if v <= cap]
    off = [v for v in x if v > cap]
    hi = kept[-1]
    return lo, hi, bool(lo > 0 and hi / lo > 10), off
