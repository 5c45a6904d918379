"""optaxlab.sweep.space (search spaces with a budget) and optaxlab.sweep.stats."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from optaxlab.sweep import space, spec
from optaxlab.sweep import stats as st

SPACE = {"optimizer.learning_rate": space.log(1e-4, 1e-1), "optimizer.b1": space.linear(0.8, 0.99),
         "optimizer.name": space.choice(["adam", "signum"])}


@pytest.mark.parametrize("draw", [
    lambda n: space.quasirandom(SPACE, n, seed=3),
    lambda n: space.quasirandom(SPACE, n, method="halton", seed=3),
    lambda n: space.random(SPACE, n, seed=3),
])
def test_budgets_are_prefixes_and_values_in_range(draw):
    p16, p32, p20 = draw(16), draw(32), draw(20)
    assert p32[:16] == p16 and p20 == p32[:20]
    assert draw(16) == p16  # the same seed, the same points
    for p in p32:
        assert 1e-4 <= p["optimizer.learning_rate"] <= 1e-1
        assert 0.8 <= p["optimizer.b1"] <= 0.99
        assert p["optimizer.name"] in ("adam", "signum")
        assert p["optimizer.learning_rate"] == spec._round(p["optimizer.learning_rate"], 3)


def test_sobol_covers_log_space_evenly():
    pts = space.quasirandom({"lr": space.log(1e-4, 1e0)}, 64, seed=0)
    decades = np.floor(np.log10([p["lr"] for p in pts]))
    # 64 scrambled Sobol points over 4 decades: 16 in each (balanced), up to rounding at edges.
    counts = np.bincount((decades + 4).astype(int), minlength=5)[:4]
    assert np.all(np.abs(counts - 16) <= 1), counts


def test_random_is_uniform_in_log_space():
    pts = space.random({"lr": space.log(1e-3, 1e1)}, 400, seed=1, digits=8)
    u = (np.log10([p["lr"] for p in pts]) + 3) / 4
    assert sps.kstest(u, "uniform").pvalue > 1e-3


def test_fixed_fields_and_integer_dims():
    pts = space.quasirandom({"steps": space.linear(10, 20, integer=True)}, 4,
                            fixed={"optimizer.name": "adam"})
    assert all(p["optimizer.name"] == "adam" and isinstance(p["steps"], int) for p in pts)


@pytest.mark.parametrize("call,match", [
    (lambda: space.log(0, 1), "low must be > 0"),
    (lambda: space.linear(1, 1), "low < high"),
    (lambda: space.choice([]), "non-empty"),
    (lambda: space.quasirandom(SPACE, 0), "trials=0"),
    (lambda: space.quasirandom(SPACE, 4, method="lhs"), "method='lhs'"),
    (lambda: space.quasirandom({"lr": 0.1}, 4), "not a dimension"),
    (lambda: space.random({"x": space.linear(0, 1)}, 50, digits=1), "round to the same point"),
    (lambda: space.random(SPACE, 2, fixed={"optimizer.b1": 0.9}), "both searched and fixed"),
])
def test_bad_spaces_are_one_line_errors(call, match):
    with pytest.raises(spec.SweepError, match=match):
        call()


def test_best_of_budget_against_the_exact_distribution():
    # The minimum of k draws with replacement from n distinct scores has a known law:
    # P(min >= x_(j)) = ((n - j + 1) / n)^k. Its median for scores 1..10 and k = 3:
    scores = list(range(1, 11))
    exact = next(j for j in range(1, 11) if 1 - ((10 - j) / 10) ** 3 >= 0.5)
    b = st.best_of_budget(scores, 3, draws=20000)
    assert b.median == exact and b.low == 1 and b.high <= 7
    assert st.best_of_budget(scores, 50).median == 1  # a large budget finds the best
    assert st.best_of_budget([2.0, math.nan], 1, draws=2000).high == math.inf  # diverged lost


def test_paired_comparison_matches_scipy_and_pairs_by_seed():
    a = {0: 2.00, 1: 2.10, 2: 1.95, 3: 2.05}
    b = {0: 2.03, 1: 2.12, 2: 1.99, 3: 2.06, 7: 9.0}  # seed 7 has no partner: not used
    c = st.compare(a, b)
    assert c.kind == "paired" and c.n == 4
    d = np.array([b[s] - a[s] for s in range(4)])
    assert c.diff == pytest.approx(d.mean())
    assert c.p_value == pytest.approx(sps.ttest_rel([b[s] for s in range(4)],
                                                    [a[s] for s in range(4)]).pvalue)
    assert c.low < c.diff < c.high
    # the fewest seeds whose 95% t interval at this mean and spread excludes 0
    n, half = c.seeds_needed, lambda n: sps.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n)
    assert n >= 2 and half(n) <= abs(d.mean()) and (n == 2 or half(n - 1) > abs(d.mean()))
    assert n >= math.ceil(4 * d.var(ddof=1) / d.mean() ** 2)  # more than the normal count


def test_welch_when_seeds_do_not_pair():
    a, b = {0: 2.0, 1: 2.2, 2: 2.1}, {10: 2.5, 11: 2.4, 12: 2.7}
    c = st.compare(a, b)
    assert c.kind == "welch"
    assert c.p_value == pytest.approx(sps.ttest_ind(list(b.values()), list(a.values()),
                                                    equal_var=False).pvalue)
    assert st.compare({0: 1.0}, b) is None


def test_robust_range_keeps_the_bulk_and_flags_blown_up_points():
    lo, hi, log_axis, off = st.robust_range([2.02, 2.1, 2.3, 4.0, 5.5, 1.4e5])
    assert (lo, hi, off) == (2.02, 5.5, [1.4e5]) and not log_axis
    lo, hi, log_axis, off = st.robust_range([0.01, 0.05, 0.2, 0.5])
    assert off == [] and log_axis
