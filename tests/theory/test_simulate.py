"""Tests of the Monte Carlo simulator of the normalized update."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

from optaxlab import theory


def test_theory_model_matches_update_law():
    """KS of the kept samples against f_m at m = 2, 3, 5, 20 (fixed key, 1e5 coordinates)."""
    n = 100_000
    res = theory.simulate(n=n, steps=20, key=1, keep_steps=(2, 3, 5, 20))
    assert res.samples.shape == (4, n)
    with jax.enable_x64(True):
        for row, m in enumerate(res.keep_steps):
            x = np.asarray(res.samples[row], np.float64)
            d = stats.kstest(x, lambda v, m=m: np.asarray(theory.update_cdf(v, float(m)))).statistic
            assert d < 1.63 / math.sqrt(n), (m, d)
    # Per-step moments: Var = 1 (Corollary 1), Var|Delta| (Corollary 2), excess kurtosis -6/(m+2).
    m = np.arange(1, 21)
    np.testing.assert_allclose(res.moments["var"], 1.0, atol=0.03)
    np.testing.assert_allclose(res.moments["abs_var"], theory.abs_update_variance(m), atol=0.01)
    np.testing.assert_allclose(res.moments["kurt"], -6 / (m + 2), atol=0.05)
    # Histograms hold every coordinate; step 1 is the sign law (atoms at +-1).
    total = res.counts.sum(1) + res.underflow + res.overflow + res.nonfinite
    np.testing.assert_array_equal(total, n)
    np.testing.assert_allclose(res.moments["abs_mean"][0], 1.0, rtol=1e-6)


def test_histogram_matches_bin_probs():
    n = 50_000
    res = theory.simulate(n=n, steps=10, key=3, bins=40, value_range=(-4.0, 4.0))
    p = np.asarray(theory.update_bin_probs(res.edges, 10.0))
    emp = np.asarray(res.counts[-1]) / n
    assert 0.5 * np.abs(emp - p).sum() < 0.01  # total variation


def test_named_transform_equals_adam_model_and_optax():
    kw = dict(n=2000, steps=15, key=5, process=theory.cauchy())
    a = theory.simulate("adam_model", hparams=dict(b1=0.9, b2=0.99), **kw)
    b = theory.simulate(optax.adam(1.0, b1=0.9, b2=0.99, eps=0.0), **kw)
    c = theory.simulate("adam", hparams=dict(b1=0.9, b2=0.99, eps=0.0), **kw)
    edges = np.asarray(a.edges)
    near_one = np.abs(np.abs(edges[:-1]) - 1) < 1e-6  # bins starting at -1 or +1
    near_one |= np.abs(np.abs(edges[1:]) - 1) < 1e-6  # and those ending there
    for r in (b, c):
        np.testing.assert_allclose(r.moments["var"], a.moments["var"], rtol=1e-4)
        # step 1 is +-1 up to an ulp, which decides the bin at the edge +-1 (optax's float32
        # bias correction is ~1e-5 below 1); from step 2 on the counts are identical
        assert int(np.asarray(r.counts[0])[near_one].sum()) == 2000
        np.testing.assert_array_equal(r.counts[1:], a.counts[1:])


def test_rmsprop_is_adam_model_b1_zero_and_learning_rate_divides_out():
    kw = dict(n=1000, steps=8, key=2)
    a = theory.simulate("adam_model", hparams=dict(b1=0.0, b2=0.9), **kw)
    b = theory.simulate(optax.rmsprop(0.1, decay=0.9, eps=0.0, bias_correction=True),
                        learning_rate=0.1, **kw)
    np.testing.assert_allclose(b.moments["abs_mean"], a.moments["abs_mean"], rtol=1e-5)


def test_processes_and_param_dependence():
    # N(-t, 1) gradients: Delta = (theta_t - theta_{t-1}) / lr moves against g, towards +sqrt(t).
    res = theory.simulate(process=theory.gaussian(mean=lambda t: -t), n=5000, steps=5, key=0)
    assert float(res.moments["mean"][-1]) > 0.9
    assert float(res.moments["skew"][-1]) < 0  # left-skewed (Section 6.2)
    # f(x) = x^2 full batch: the parameter-dependent process sees the updated params.
    res = theory.simulate("sgd", lambda k, t, p: 2 * p, n=4, steps=3, learning_rate=0.25,
                          params0=jnp.ones(4))
    np.testing.assert_allclose(res.moments["param_sq_mean"], [0.25, 0.0625, 0.015625], rtol=1e-6)
    # Heavy-tailed processes produce the right tails.
    key = jax.random.key(0)
    params = jnp.zeros(200_000)
    x = np.asarray(theory.pareto(1.5)(key, jnp.int32(1), params))
    assert theory.hill_estimator(x, 2000) == pytest.approx(1.5, rel=0.1)
    y = np.asarray(theory.symmetric_stable(2.0)(key, jnp.int32(1), params))
    assert np.var(y) == pytest.approx(2.0, rel=0.03)  # alpha = 2 is N(0, 2)


def test_spread_tracking_equal_betas_adam():
    """With b1 = b2 = spread_beta, |Delta| equals 1/sqrt(1 + gamma^2) coordinate-wise."""
    res = theory.simulate("adam_model", theory.gaussian(mean=0.5), n=1000, steps=30, key=4,
                          hparams=dict(b1=0.9, b2=0.9), spread_beta=0.9)
    np.testing.assert_allclose(res.moments["abs_mean"], res.moments["step_pred_mean"], rtol=1e-4)


@pytest.mark.parametrize(
    "kwargs",
    [dict(n=0), dict(steps=0), dict(keep_steps=(0,)), dict(keep_steps=(21,)), dict(bins=0),
     dict(value_range=(1.0, -1.0)), dict(learning_rate=0.0), dict(spread_beta=1.0),
     dict(transform=3), dict(transform="theory", hparams=dict(b1=0.9)),
     dict(params0=jnp.zeros(3))],
)
def test_bad_arguments(kwargs):
    kwargs = dict(dict(n=10, steps=20), **kwargs)
    with pytest.raises(ValueError):
        theory.simulate(**kwargs)


def test_bad_process_and_model_arguments():
    for call in (lambda: theory.adam_model(b1=1.0), lambda: theory.symmetric_stable(2.5),
                 lambda: theory.pareto(0.0), lambda: theory.student_t(-1.0)):
        with pytest.raises(ValueError):
            call()


def test_make_simulator_reuses_and_theory_model_zero_gradient():
    sim = theory.make_simulator(n=500, steps=4)
    a, b, c = sim(0), sim(0), sim(1)
    np.testing.assert_array_equal(a.counts, b.counts)
    assert not np.array_equal(np.asarray(a.counts), np.asarray(c.counts))
    # 0/0 in the theory model (all gradients exactly 0) gives a 0 update, not nan.
    tx = theory.theory_model()
    u, _ = tx.update(jnp.array([0.0, 2.0]), tx.init(jnp.zeros(2)))
    np.testing.assert_array_equal(u, [0.0, 1.0])
