"""Tests of the sequence-operator view and online Gaussian VI of "In Search of Adam's Secret
Sauce"."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import optimize

from optaxlab import theory


def _signal(seed=0, steps=120):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(steps) + np.sin(np.arange(steps) / 7)).astype(np.float32)


def test_operator_equals_optax_adam_with_equal_betas():
    g = _signal()
    for beta in (0.5, 0.9, 0.99):
        ref = theory.adam_equal_betas_operator(g, beta, bias_correction=True)
        got = theory.filter_sequence(optax.adam(1.0, b1=beta, b2=beta, eps=0.0), g)
        np.testing.assert_allclose(got, ref, rtol=2e-5, atol=1e-6)


def test_operator_properties():
    """Causal, invariant to positive scaling, odd, bounded by 1 (App. E)."""
    g = _signal(1)
    op = lambda s: np.asarray(theory.adam_equal_betas_operator(s, 0.9))
    out = op(g)
    assert np.all(np.abs(out) <= 1 + 1e-6)
    np.testing.assert_allclose(op(37.0 * g), out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(op(-g), -out, rtol=1e-6)
    g2 = g.copy()
    g2[60:] = 5.0  # changing the future leaves the past unchanged
    np.testing.assert_array_equal(op(g2)[:60], out[:60])
    # 2-D input: independent columns.
    both = np.asarray(theory.adam_equal_betas_operator(np.stack([g, -g], 1), 0.9))
    np.testing.assert_allclose(both[:, 1], -out, rtol=1e-6)


def test_operator_is_blind_to_exponential_decay():
    """Without bias correction, A_b(e^{-t/tau} c) becomes periodic for a periodic c (App. E)."""
    g = theory.damped_periodic(steps=600, period=50.0, decay=150.0)
    out = np.asarray(theory.adam_equal_betas_operator(g, 0.9))
    np.testing.assert_allclose(out[500:550], out[550:600], atol=1e-3)
    assert np.abs(g[550:600]).max() < 0.75 * np.abs(g[500:550]).max()  # while the input decays


def test_filter_sequence_sign_variants():
    g = _signal(2)
    signum = theory.filter_sequence(optax.signum(1.0, beta=0.9), g)
    # filter_sequence returns -update / lr: scale(-1) makes these chains' outputs the EMAs.
    m = np.asarray(theory.filter_sequence(
        optax.chain(optax.ema(0.9, debias=False), optax.scale(-1.0)), g))
    np.testing.assert_array_equal(signum, np.sign(m))
    assert set(np.unique(np.asarray(signum))) <= {-1.0, 0.0, 1.0}
    ema_sign = np.asarray(theory.filter_sequence(
        optax.chain(optax.scale_by_sign(), optax.ema(0.9, debias=False), optax.scale(-1.0)), g))
    ref, acc = [], 0.0
    for x in np.sign(g):
        acc = 0.9 * acc + 0.1 * x
        ref.append(acc)
    np.testing.assert_allclose(ema_sign, ref, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError):
        theory.filter_sequence(optax.sgd(1.0), np.zeros((2, 2, 2)))


def test_vi_update_minimizes_objective_numerically():
    rng = np.random.default_rng(0)
    for beta in (0.5, 0.9, 0.99):
        lam = 1 / beta - 1
        m_prev, s2_prev, g = rng.standard_normal(), rng.uniform(0.1, 2), rng.standard_normal() * 3
        with jax.enable_x64(True):
            f = lambda z: float(theory.vi_objective(z[0], np.exp(z[1]), m_prev, s2_prev, g, lam))
            sol = optimize.minimize(f, x0=[m_prev, np.log(s2_prev)], method="Nelder-Mead",
                                    options=dict(xatol=1e-10, fatol=1e-14, maxiter=4000))
        m, s2 = theory.vi_update(m_prev, s2_prev, g, beta)
        assert sol.x[0] == pytest.approx(m, abs=1e-6)
        assert np.exp(sol.x[1]) == pytest.approx(s2, rel=1e-5)


def test_vi_recursion_matches_v_minus_m_squared():
    """Proposition 1: s_t^2 = v_t - m_t^2 for zero-initialized EMAs with b1 = b2."""
    g = jnp.asarray(_signal(3), jnp.float32)
    b = 0.8
    m = s2 = v = 0.0
    for x in np.asarray(g, np.float64):
        m, s2 = theory.vi_update(m, s2, x, b)
        v = b * v + (1 - b) * x * x
        assert s2 == pytest.approx(v - m * m, abs=1e-9)
