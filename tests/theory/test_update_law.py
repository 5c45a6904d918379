"""Tests of the closed-form update law ("On the Distributional Properties of Adaptive Gradients",
Theorem 1 and Corollaries 1-2): float64 on the host, float32 (or the input dtype) in JAX."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from optaxlab import theory

M_INTEGRATE = [2, 3, 4, 10, 100]


def _theta_grid(n=20001):
    """Midpoints on (-pi/2, pi/2); x = sqrt(m) sin(theta) removes the m = 2 endpoint singularity."""
    edges = np.linspace(-np.pi / 2, np.pi / 2, n + 1)
    return 0.5 * (edges[1:] + edges[:-1]), np.diff(edges)


def _moment(m, fn):
    """int fn(x) f_m(x) dx over the support, by the substitution x = sqrt(m) sin(theta)."""
    theta, dtheta = _theta_grid()
    with jax.enable_x64(True):
        x = np.sqrt(m) * np.sin(theta)
        dens = np.asarray(theory.update_pdf(x, float(m)))
    return float(np.sum(fn(x) * dens * np.sqrt(m) * np.cos(theta) * dtheta))


@pytest.mark.parametrize("m", M_INTEGRATE)
def test_pdf_integrates_to_one(m):
    assert _moment(m, np.ones_like) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("m", M_INTEGRATE)
def test_numeric_moments_equal_corollaries(m):
    var = _moment(m, np.square)
    mean_abs = _moment(m, np.abs)
    assert var == pytest.approx(float(theory.update_variance(m)), abs=1e-6)  # Corollary 1
    assert var == pytest.approx(1.0, abs=1e-6)
    with jax.enable_x64(True):
        assert 1.0 - mean_abs**2 == pytest.approx(float(theory.abs_update_variance(m)), abs=1e-6)
        assert mean_abs == pytest.approx(float(theory.abs_update_mean(m)), abs=1e-6)
    assert _moment(m, lambda x: x) == pytest.approx(0.0, abs=1e-9)


def test_abs_variance_special_values_and_monotone():
    with jax.enable_x64(True):
        assert float(theory.abs_update_variance(2)) == pytest.approx(1 - 8 / math.pi**2, rel=1e-12)
        assert float(theory.abs_update_variance(3)) == pytest.approx(0.25, rel=1e-12)
        assert float(theory.abs_update_variance(1e8)) == pytest.approx(1 - 2 / math.pi, abs=1e-7)
        assert float(theory.abs_update_variance(1)) == 0.0
        ms = np.linspace(1.01, 500, 2000)
        v = np.asarray(theory.abs_update_variance(ms))
    assert np.all(np.diff(v) > 0)
    # float32 with the large-m series agrees with float64.
    ms32 = np.array([2.0, 3.0, 50.0, 2e3, 2e4, 2e6], np.float32)
    with jax.enable_x64(True):
        ref = np.asarray(theory.abs_update_variance(ms32.astype(np.float64)))
    got = np.asarray(theory.abs_update_variance(jnp.asarray(ms32)))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=2e-6)


def test_student_t_variance():
    with jax.enable_x64(True):
        v = np.asarray(theory.student_t_variance(np.array([2.0, 2.5, 3.0, 10.0, 1e6])))
    assert np.isinf(v[0])
    np.testing.assert_allclose(v[1:], [5.0, 3.0, 1.25, 1e6 / (1e6 - 2)], rtol=1e-12)
    assert np.all(v > 1.0)  # > Var[Delta] = 1 > Var[|Delta|]


def test_arcsine_at_m2():
    x = np.linspace(-1.41, 1.41, 101)
    with jax.enable_x64(True):
        got = np.asarray(theory.update_pdf(x, 2))
        cdf = np.asarray(theory.update_cdf(x, 2))
    np.testing.assert_allclose(got, 1 / (np.pi * np.sqrt(2 - x**2)), rtol=1e-10)
    np.testing.assert_allclose(cdf, 0.5 + np.arcsin(x / np.sqrt(2)) / np.pi, atol=1e-10)
    assert float(theory.update_pdf(1.41421, 2.0)) > 50  # integrable endpoint singularity
    assert float(theory.update_pdf(1.4143, 2.0)) == 0.0  # outside the support


def test_uniform_at_m3():
    x = np.linspace(-1.7, 1.7, 101)
    with jax.enable_x64(True):
        got = np.asarray(theory.update_pdf(x, 3))
        cdf = np.asarray(theory.update_cdf(x, 3))
        outside = np.asarray(theory.update_pdf(np.array([-1.75, 1.75, 3.0]), 3))
    np.testing.assert_allclose(got, 1 / (2 * np.sqrt(3)), rtol=1e-12)
    np.testing.assert_allclose(cdf, (x + np.sqrt(3)) / (2 * np.sqrt(3)), atol=1e-12)
    np.testing.assert_array_equal(outside, 0.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normal_limit(dtype):
    """JAX arrays in: the result follows their dtype (float32, or float64 with x64)."""
    with jax.enable_x64(dtype == np.float64):
        x = jnp.asarray(np.linspace(-4, 4, 81), dtype)
        pdf = np.asarray(theory.update_pdf(x, jnp.asarray(1e6, dtype)))
        cdf = np.asarray(theory.update_cdf(x, jnp.asarray(1e6, dtype)))
    x = np.asarray(x, np.float64)
    assert pdf.dtype == dtype and cdf.dtype == dtype
    np.testing.assert_allclose(pdf, stats.norm.pdf(x), atol=2e-6)
    np.testing.assert_allclose(cdf, stats.norm.cdf(x), atol=3e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cdf_matches_student_t_map(dtype):
    # Delta = sqrt(m) T / sqrt(T^2 + m - 1) with T ~ t_{m-1}:
    # P(Delta <= x) = F_t(x sqrt((m-1)/(m-x^2))).
    m = np.array([1.2, 2.0, 2.5, 3.0, 10.0, 150.0, 250.0, 2000.0, 2e4])[:, None]
    x = np.linspace(-0.999, 0.999, 201)[None, :] * np.minimum(np.sqrt(m), 6.0)
    ref = stats.t.cdf(x * np.sqrt((m - 1) / (m - x**2)), m - 1)
    with jax.enable_x64(dtype == np.float64):
        got = np.asarray(theory.update_cdf(jnp.asarray(x, dtype), jnp.asarray(m, dtype)))
    assert got.dtype == dtype
    np.testing.assert_allclose(got, ref, atol=1e-9 if dtype == np.float64 else 1e-5)
    host = theory.update_cdf(x, m)  # numpy in: float64 without x64
    assert host.dtype == np.float64
    np.testing.assert_allclose(got, ref, atol=1e-9 if dtype == np.float64 else 1e-5)


def test_pdf_is_derivative_of_cdf():
    m = np.array([1.5, 2.5, 7.0, 40.0])[:, None]
    with jax.enable_x64(True):
        x = np.linspace(-0.95, 0.95, 41)[None, :] * np.sqrt(m)
        h = 1e-6
        num = (np.asarray(theory.update_cdf(x + h, m)) - np.asarray(theory.update_cdf(x - h, m)))
        np.testing.assert_allclose(num / (2 * h), np.asarray(theory.update_pdf(x, m)), rtol=1e-6,
                                   atol=1e-9)


def test_bin_probs_sum_and_outside_mass():
    edges = jnp.linspace(-2.0, 2.0, 65)
    with jax.enable_x64(True):
        p = np.asarray(theory.update_bin_probs(np.linspace(-2, 2, 65), 10.0))
        inside = float(theory.update_cdf(2.0, 10.0) - theory.update_cdf(-2.0, 10.0))
    assert p.shape == (64,) and np.all(p >= 0)
    assert p.sum() == pytest.approx(inside, abs=1e-12)
    assert 0 < 1 - p.sum() < 0.1
    # Batched m (per-layer m_eff): shape (layers, bins), jittable with traced m.
    ms = jnp.array([1.0, 2.0, 5.0, 1e3])
    pb = jax.jit(theory.update_bin_probs)(edges, ms)
    assert pb.shape == (4, 64)
    np.testing.assert_allclose(np.asarray(pb[2]), np.asarray(theory.update_bin_probs(edges, 5.0)),
                               atol=1e-6)
    # m = 2, 3 have support within [-2, 2]: all mass inside.
    np.testing.assert_allclose(np.asarray(pb[1]).sum(), 1.0, atol=1e-6)


def test_m_one_is_the_sign_law():
    # Adam's first step (m_eff(1) = 1): Delta = +-1 with left-closed bins.
    p = np.asarray(theory.update_bin_probs(jnp.linspace(-2.0, 2.0, 9), 1.0))
    expected = np.zeros(8)
    expected[2] = expected[6] = 0.5  # bins [-1, -0.5) and [1, 1.5)
    np.testing.assert_array_equal(p, expected)
    assert float(theory.update_variance(1.0)) == 1.0
    assert float(theory.abs_update_variance(1.0)) == 0.0
    # Continuity: m slightly above 1 puts nearly all mass near +-1.
    assert float(theory.update_cdf(0.9, 1.001) - theory.update_cdf(-0.9, 1.001)) < 0.05


def test_works_under_jit_with_traced_m():
    f = jax.jit(lambda x, m: (theory.update_pdf(x, m), theory.update_cdf(x, m),
                              theory.abs_update_variance(m)))
    pdf, cdf, av = f(jnp.array([0.0, 0.5]), jnp.float32(2.5))
    with jax.enable_x64(True):
        np.testing.assert_allclose(pdf, np.asarray(theory.update_pdf(np.array([0.0, 0.5]), 2.5)),
                                   rtol=1e-5)
        np.testing.assert_allclose(cdf, np.asarray(theory.update_cdf(np.array([0.0, 0.5]), 2.5)),
                                   rtol=1e-5)
        np.testing.assert_allclose(av, float(theory.abs_update_variance(2.5)), rtol=1e-5)


@pytest.mark.parametrize("m", [2, 3, 5, 20])
def test_monte_carlo_theory_model_matches_cdf(m):
    """KS test, fixed key, 1e5 samples of the actual model g_m / sqrt(mean(g_i^2))."""
    n = 100_000
    g = jax.random.normal(jax.random.key(m), (m, n))
    delta = np.asarray(g[-1] / jnp.sqrt(jnp.mean(g * g, axis=0)), np.float64)
    with jax.enable_x64(True):
        res = stats.kstest(delta, lambda x: np.asarray(theory.update_cdf(x, float(m))))
    assert res.statistic < 1.63 / math.sqrt(n)  # KS critical value at alpha = 0.01
    assert np.var(delta) == pytest.approx(1.0, abs=0.02)
    assert np.var(np.abs(delta)) == pytest.approx(float(theory.abs_update_variance(m)), abs=0.01)


@pytest.mark.parametrize("m", [1.5, 2.5, 50.0])
def test_sample_update_matches_cdf(m):
    # float64: in float32 about 1% of the Beta(1/2, 1/4) draws at m = 1.5 round to K = 1.
    n = 100_000
    with jax.enable_x64(True):
        x = np.asarray(theory.sample_update(jax.random.key(7), m, (n,), jnp.float64))
        res = stats.kstest(x, lambda v: np.asarray(theory.update_cdf(v, m)))
    assert res.statistic < 1.63 / math.sqrt(n)


def test_k_law():
    m = 6.0
    a, b = theory.k_params(m)
    assert float(a) == 0.5 and float(b) == 2.5
    dist = theory.k_distribution(m)
    k = np.linspace(0.01, 0.99, 50)
    np.testing.assert_allclose(np.asarray(theory.k_pdf(k, m)), dist.pdf(k), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(theory.k_cdf(k, m)), dist.cdf(k), atol=1e-6)
    assert dist.mean() * m == pytest.approx(1.0)  # E[G] = E[m K] = 1


def test_effective_sample_size_limits():
    with jax.enable_x64(True):
        for b in [0.0, 0.5, 0.9, 0.999]:
            assert float(theory.effective_sample_size(b, 1)) == pytest.approx(1.0, rel=1e-12)
            assert float(theory.effective_sample_size(b, 1e9)) == pytest.approx(
                (1 + b) / (1 - b), rel=1e-9)
        assert float(theory.effective_sample_size(1.0, 17)) == 17.0
        # Equals 1 / sum of squared normalized EMA weights.
        b, t = 0.95, 30
        w = (1 - b) * b ** (t - np.arange(1, t + 1)) / (1 - b**t)
        assert float(theory.effective_sample_size(b, t)) == pytest.approx(1 / np.sum(w**2))
        ess = np.asarray(theory.effective_sample_size(0.99, np.arange(1, 2000)))
    assert np.all(np.diff(ess) > 0)
    # jittable with traced beta and t (the monitor's usage).
    out = jax.jit(theory.effective_sample_size)(jnp.float32(0.999), jnp.int32(1))
    assert float(out) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize(
    "call",
    [
        lambda: theory.update_pdf(0.0, 0.5),
        lambda: theory.update_cdf(0.0, -3),
        lambda: theory.update_bin_probs(np.linspace(-1, 1, 5), np.nan),
        lambda: theory.abs_update_variance(0.0),
        lambda: theory.effective_sample_size(1.5, 3),
        lambda: theory.effective_sample_size(0.9, 0),
        lambda: theory.k_distribution(1.0),
        lambda: theory.update_bin_probs(np.array([0.0]), 3.0),
    ],
)
def test_bad_input_raises_value_error(call):
    with pytest.raises(ValueError):
        call()


# --------------------------------------------------------------------------- float64 on the host

mpmath = pytest.importorskip("mpmath")
mpmath.mp.dps = 40


def _mp_abs_mean(m):
    m = mpmath.mpf(m)
    return 2 * mpmath.sqrt(m) * mpmath.gamma(m / 2) / ((m - 1) * mpmath.sqrt(mpmath.pi)
                                                       * mpmath.gamma((m - 1) / 2))


def _mp_ess(b, t):
    b, t = mpmath.mpf(b), mpmath.mpf(t)  # the float64 value of b, exactly
    return (1 - b**t) * (1 + b) / ((1 - b) * (1 + b**t))


@pytest.mark.parametrize("m", [1.5, 2, 2.5, 3, 7, 41.5, 1000, 12345.5, 1e6, 1e9])
def test_host_scalars_are_float64_accurate(m):
    """Python numbers in: float64 out, within 1e-12 of the closed forms (mpmath, 40 digits)."""
    mean = theory.abs_update_mean(m)
    var = theory.abs_update_variance(m)
    assert isinstance(var, np.float64) and isinstance(mean, np.float64)
    assert float(mean) == pytest.approx(float(_mp_abs_mean(m)), rel=1e-12)
    assert float(var) == pytest.approx(float(1 - _mp_abs_mean(m) ** 2), rel=1e-12)
    assert theory.update_variance(m) == 1.0
    if m > 2:
        assert float(theory.student_t_variance(m)) == pytest.approx(m / (m - 2), rel=1e-15)
    a, b = theory.k_params(m)
    assert a == 0.5 and b == (m - 1) / 2


def test_host_special_values_and_the_issue_examples():
    assert float(theory.abs_update_variance(2)) == pytest.approx(1 - 8 / math.pi**2, rel=1e-13)
    assert float(theory.abs_update_variance(3)) == pytest.approx(0.25, rel=1e-13)
    assert float(theory.abs_update_variance(1e12)) == pytest.approx(1 - 2 / math.pi, rel=1e-11)
    # before: 199.0002 (float32); (1 + b)/(1 - b) with b^t = 0 in float64
    ess = theory.effective_sample_size(0.99, 1e5)
    assert isinstance(ess, np.float64)
    assert float(ess) == pytest.approx(1.99 / (1 - 0.99), rel=1e-14)


@pytest.mark.parametrize("b,t", [(0.9, 1), (0.9, 7), (0.999, 1), (0.999, 3), (0.999, 1000),
                                 (0.9999, 25), (0.5, 60), (0.99, 1e5)])
def test_host_effective_sample_size_is_float64_accurate(b, t):
    assert float(theory.effective_sample_size(b, t)) == pytest.approx(float(_mp_ess(b, t)),
                                                                    rel=1e-12)


def test_host_arrays_are_float64_and_jax_stays_float32():
    m = np.array([2.0, 3.0, 1e4], np.float32)  # numpy float32 in: still the float64 path
    host = theory.abs_update_variance(m)
    assert host.dtype == np.float64
    np.testing.assert_allclose(host, [1 - 8 / math.pi**2, 0.25,
                                      float(1 - _mp_abs_mean(1e4) ** 2)], rtol=1e-12)
    dev = theory.abs_update_variance(jnp.asarray(m))  # JAX in: float32, as the monitor uses it
    assert dev.dtype == jnp.float32  # float32 round-off: 5.6e-6 relative at m = 2
    np.testing.assert_allclose(np.asarray(dev), host, rtol=1e-5)
    traced = jax.jit(lambda b, t: theory.effective_sample_size(b, t))(np.float32(0.999), 5.0)
    assert traced.dtype == jnp.float32
    # pdf / cdf: the same formula in float64 on the host (vs mpmath's incomplete beta)
    x, mm = 0.7, 5.5
    exact = 0.5 + 0.5 * mpmath.betainc(0.5, (mm - 1) / 2, 0, x * x / mm, regularized=True)
    assert float(theory.update_cdf(x, mm)) == pytest.approx(float(exact), rel=1e-13)
