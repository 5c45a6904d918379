"""optaxlab.transforms.moments: EMA/trace/Adam extensions and the Gaussian VI tracker.

References are numpy recurrences in float64 written here; the transforms run in float32, so
the comparisons use rtol 1e-5 (float32 round-off through a contracting recursion) with an
absolute floor of 1e-6 of the stream's largest value for entries that pass through zero.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize

from optaxlab import transforms as T
from optaxlab.testing import STEPS, np_ema, run, stream


def assert_stream_close(actual, expected, rtol=1e-5):
    for k in expected:
        a, e = np.asarray(actual[k], np.float64), np.asarray(expected[k], np.float64)
        atol = 1e-6 * np.max(np.abs(e))
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=k)




# --------------------------------------------------------------------------- ema / trace


@pytest.mark.parametrize("kind", ["gaussian", "heavy"])
def test_ema_gradient_init_matches_numpy(kind):
    g = stream(kind)
    us, state = run(T.ema(0.9, debias=False, init="first"), g)
    assert_stream_close(us, {k: np_ema(v, 0.9, "first") for k, v in g.items()})
    assert isinstance(state, optax.EmaState) and int(state.count) == STEPS


def test_ema_zero_init_is_optax_ema():
    """Without debiasing it is optax.ema itself; debiased, the same to float32 round-off (the
    correction 1 - b^t is computed more accurately, see test_precision.py)."""
    g = stream("gaussian", seed=1)
    ours, _ = run(T.ema(0.8, debias=False), g)
    ref, _ = run(optax.ema(0.8, debias=False), g)
    jax.tree.map(np.testing.assert_array_equal, ours, ref)
    ours, _ = run(T.ema(0.8, debias=True), g)
    ref, _ = run(optax.ema(0.8, debias=True), g)
    assert_stream_close(ours, ref, rtol=1e-6)
    t = np.arange(1, STEPS + 1).reshape(-1, 1)
    assert_stream_close(
        ours, {k: np_ema(v, 0.8) / (1 - 0.8**t).reshape((-1,) + (1,) * (v.ndim - 1))
               for k, v in g.items()}, rtol=1e-6,
    )


def test_ema_gradient_init_with_debias_raises():
    with pytest.raises(ValueError, match="init='first'"):
        T.ema(0.9, debias=True, init="first")
    with pytest.raises(ValueError, match="init='ones'"):
        T.ema(0.9, init="ones")
    with pytest.raises(ValueError, match="decay=1.5"):
        T.ema(1.5)


@pytest.mark.parametrize("dampening", [0.0, 0.3])
def test_trace_torch_semantics_matches_numpy(dampening):
    g = stream("heavy", seed=2)
    mu = 0.9
    us, _ = run(T.trace(mu, dampening=dampening), g)
    expected = {}
    for k, v in g.items():
        b = np.zeros_like(v[0], np.float64)
        out = []
        for t in range(len(v)):
            b = v[0].astype(np.float64) if t == 0 else mu * b + (1 - dampening) * v[t]
            out.append(b)
        expected[k] = np.stack(out)
    assert_stream_close(us, expected)


def test_trace_without_dampening_is_optax_trace():
    tx = T.trace(0.9, nesterov=True)
    params = {"a": jnp.ones(3)}
    assert isinstance(tx.init(params), optax.TraceState)
    assert isinstance(T.trace(0.9, dampening=0.1).init(params), T.DampenedTraceState)


# --------------------------------------------------------------------------- adam


def np_adam(g, b1, b2, eps, bias_correction=True, init="zero"):
    m, v = np_ema(g, b1, init), np_ema(g.astype(np.float64) ** 2, b2, init)
    if bias_correction:
        t = np.arange(1, len(g) + 1).reshape((-1,) + (1,) * (g.ndim - 1))
        m, v = m / (1 - b1**t), v / (1 - b2**t)
    return m / (np.sqrt(v) + eps)


@pytest.mark.parametrize("kind", ["gaussian", "heavy"])
@pytest.mark.parametrize("init", ["zero", "first"])
def test_adam_without_bias_correction_matches_numpy(kind, init):
    g = stream(kind, seed=3)
    us, state = run(T.scale_by_adam(0.9, 0.99, 1e-8, bias_correction=False, init=init), g)
    expected = {k: np_adam(v, 0.9, 0.99, 1e-8, False, init) for k, v in g.items()}
    assert_stream_close(us, expected)
    assert isinstance(state, optax.ScaleByAdamState)


@pytest.mark.parametrize("nesterov", [False, True])
def test_adam_bias_corrected_is_optax_and_matches_numpy(nesterov):
    """Where optax's float32 bias correction is accurate (b2 = 0.99) ours equals it to round-off;
    at b2 = 0.999 both are checked against float64 in test_precision.py."""
    g = stream("gaussian", seed=4)
    us, _ = run(T.scale_by_adam(0.9, 0.99, 1e-8, nesterov=nesterov), g)
    ref, _ = run(optax.scale_by_adam(0.9, 0.99, 1e-8, nesterov=nesterov), g)
    assert_stream_close(us, ref, rtol=2e-6)
    if not nesterov:
        assert_stream_close(us, {k: np_adam(v, 0.9, 0.99, 1e-8) for k, v in g.items()})


def test_rms_and_radam_equal_optax_where_optax_is_accurate():
    g = stream("heavy", seed=14)
    for ours, ref in [
        (T.scale_by_rms(0.99, 1e-8), optax.scale_by_rms(0.99, 1e-8, 0.0, eps_in_sqrt=False,
                                                        bias_correction=True)),
        (T.scale_by_rms(0.99, 1e-8, bias_correction=False),
         optax.scale_by_rms(0.99, 1e-8, 0.0, eps_in_sqrt=False)),
        # b2 = 0.9: rho_inf = 19, rectified from step 5 on, cancellation small for optax too
        (T.scale_by_radam(0.9, 0.9), optax.scale_by_radam(0.9, 0.9)),
        (T.scale_by_radam(0.8, 0.9, nesterov=True), optax.scale_by_radam(0.8, 0.9, nesterov=True)),
    ]:
        us, state = run(ours, g)
        expected, ref_state = run(ref, g)
        assert type(state) is type(ref_state)
        assert_stream_close(us, expected, rtol=1e-5)


# --------------------------------------------------------------------------- Gaussian VI tracker


def np_tracker(g, beta, init="zero"):
    g = g.astype(np.float64)
    m, s = np.zeros_like(g[0]), np.zeros_like(g[0])
    ms, ss = [], []
    for t in range(len(g)):
        if init == "first" and t == 0:
            m, s = g[0], np.zeros_like(g[0])
        else:
            d = g[t] - m
            m, s = beta * m + (1 - beta) * g[t], beta * s + beta * (1 - beta) * d**2
        ms.append(m)
        ss.append(s)
    return np.stack(ms), np.stack(ss)


@pytest.mark.parametrize("kind", ["gaussian", "heavy"])
def test_proposition_1_v_minus_m2_follows_s2_recursion(kind):
    """Secret Sauce Prop. 1, float64: with b1 = b2 = b and zero init, v_t - m_t^2 = s_t^2."""
    beta = 0.9
    for v in stream(kind, seed=5).values():
        m, v2 = np_ema(v, beta), np_ema(v.astype(np.float64) ** 2, beta)
        _, s2 = np_tracker(v, beta)
        np.testing.assert_allclose(v2 - m**2, s2, rtol=1e-9, atol=1e-12 * np.max(v2))


@pytest.mark.parametrize("kind", ["gaussian", "heavy"])
@pytest.mark.parametrize("init", ["zero", "first"])
def test_tracker_state_matches_recursion(kind, init):
    g = stream(kind, seed=6)
    beta = 0.95
    us, state = run(T.track_gaussian_vi(beta, debias=False, init=init), g)
    assert isinstance(state, T.GaussianVIState) and int(state.count) == STEPS
    for k, v in g.items():
        m, s2 = np_tracker(v, beta, init)
        np.testing.assert_allclose(us.mean[k], m, rtol=1e-5, atol=1e-6 * np.abs(m).max())
        np.testing.assert_allclose(us.var[k], s2, rtol=1e-5, atol=1e-6 * np.abs(s2).max())
        np.testing.assert_allclose(state.mean[k], m[-1], rtol=1e-5, atol=1e-6 * np.abs(m).max())
        np.testing.assert_allclose(state.var[k], s2[-1], rtol=1e-5, atol=1e-6 * np.abs(s2).max())


def test_tracker_zero_init_state_equals_adam_moments():
    """m_t is Adam's mu and s_t^2 + m_t^2 its nu, for b1 = b2 (float32, same stream)."""
    g = stream("heavy", seed=7)
    _, vi = run(T.track_gaussian_vi(0.9), g)
    _, adam = run(optax.scale_by_adam(0.9, 0.9), g)
    for k in g:
        scale = np.abs(adam.mu[k]).max()
        np.testing.assert_allclose(vi.mean[k], adam.mu[k], rtol=1e-5, atol=1e-6 * scale)
        nu = np.asarray(vi.var[k]) + np.asarray(vi.mean[k]) ** 2
        np.testing.assert_allclose(nu, adam.nu[k], rtol=1e-5)


def test_tracker_debiased_output():
    g = stream("gaussian", seed=8, steps=30)
    beta = 0.9
    us, _ = run(T.track_gaussian_vi(beta, debias=True), g)
    t = np.arange(1, 31).reshape(-1, 1)
    for k, v in g.items():
        v = v.reshape(30, -1)
        m, s2 = np_tracker(v, beta)
        c = 1 - beta**t
        m_hat, v_hat = m / c, (m**2 + s2) / c
        np.testing.assert_allclose(
            np.asarray(us.mean[k]).reshape(30, -1), m_hat, rtol=1e-5, atol=1e-6
        )
        var = np.asarray(us.var[k]).reshape(30, -1)
        assert np.all(var >= 0)
        # s^^2 = v^ - m^^2 has absolute error ~ eps_f32 * v^ (cancellation), hence the atol
        np.testing.assert_allclose(var, v_hat - m_hat**2, rtol=1e-4, atol=1e-6 * v_hat.max())


def test_tracker_gradient_init_with_debias_raises():
    with pytest.raises(ValueError, match="init='first'"):
        T.track_gaussian_vi(0.9, debias=True, init="first")


def test_tracker_moments_readable_from_a_chain_state():
    tx = optax.chain(
        optax.clip_by_global_norm(1.0),
        T.track_gaussian_vi(0.9),
        T.scale_by_mollified_sign(),
        optax.scale_by_learning_rate(0.1),
    )
    params = {"a": jnp.ones((2, 3)), "b": jnp.ones(4)}
    state = tx.init(params)
    _, state = jax.jit(tx.update)(jax.tree.map(jnp.ones_like, params), state, params)
    means = optax.tree_utils.tree_get_all_with_path(state, "mean")
    assert len(means) == 1
    assert means[0][1]["a"].shape == (2, 3)
    # one clipped gradient g = 1/sqrt(10) per coordinate, zero init: m = (1-b) g, s^2 = b(1-b) g^2
    g = 1 / np.sqrt(10)
    np.testing.assert_allclose(optax.tree.get(state, "mean")["b"], 0.1 * g, rtol=1e-6)
    (vi,) = [x for x in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, T.GaussianVIState))
             if isinstance(x, T.GaussianVIState)]
    np.testing.assert_allclose(vi.var["b"], 0.9 * 0.1 * g**2, rtol=1e-6)


def _vi_objective(x, g, m_prev, s2_prev, lam):
    """-log N(g; m, s^2) + (1/lam) KL(N(m_prev, s2_prev) || N(m, s^2)), x = (m, log s^2)."""
    m, log_s2 = x
    s2 = np.exp(log_s2)
    nll = 0.5 * np.log(2 * np.pi * s2) + (g - m) ** 2 / (2 * s2)
    kl = 0.5 * (np.log(s2 / s2_prev) + (s2_prev + (m_prev - m) ** 2) / s2 - 1)
    return nll + kl / lam


def test_theorem_4_1_vi_minimizer_is_the_recursion():
    """Secret Sauce Thm. 4.1: the VI step's minimizer is (b m + (1-b) g,
    b s^2 + b(1-b)(g-m)^2)."""
    rng = np.random.default_rng(9)
    for _ in range(8):
        g, m_prev = rng.normal(size=2) * 3
        s2_prev = rng.uniform(0.1, 4.0)
        lam = rng.uniform(0.02, 3.0)
        beta = 1 / (1 + lam)
        res = scipy.optimize.minimize(
            _vi_objective, x0=[0.0, 0.0], args=(g, m_prev, s2_prev, lam),
            method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 4000},
        )
        assert res.success, res.message
        m_star, s2_star = res.x[0], np.exp(res.x[1])
        # the tracker's one step from (m_prev, s2_prev)
        tx = T.track_gaussian_vi(beta, debias=False)
        state = T.GaussianVIState(
            count=jnp.asarray(5, jnp.int32),
            mean=jnp.asarray(m_prev, jnp.float32),
            nu=jnp.asarray(s2_prev + m_prev**2, jnp.float32),
        )
        out, _ = tx.update(jnp.asarray(g, jnp.float32), state)
        np.testing.assert_allclose(float(out.mean), m_star, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(float(out.var), s2_star, rtol=1e-5)
