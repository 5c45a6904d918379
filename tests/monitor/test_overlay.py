"""The theory overlay on the theory model of "On the Distributional Properties of Adaptive
Gradients" (f_m, Corollaries 1-2) and its Section 6 shape diagnostics."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optaxlab import monitor, theory

SHAPE = (400, 250)  # 1e5 coordinates
STEPS = 8
TV_CLOSE = 0.02  # observed ~0.006-0.008 (sampling noise of 1e5 coordinates in 65 bins)
TV_FAR = 0.15  # Cauchy gradients: observed 0.17 at t = 2, 0.23 at t = 3, 0.35 at t = 8


class _SimpleAverageState(NamedTuple):
    count: jax.Array
    nu: optax.Updates


def _simple_average_rmsprop(lr: float) -> optax.GradientTransformation:
    """The paper's theory model: mu = 0, eps = 0, nu_t = (1/t) sum_{i<=t} g_i^2 (b2_t = (t-1)/t)."""

    def init(params):
        return _SimpleAverageState(jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params))

    def update(g, state, params=None):
        c = state.count + 1
        nu = jax.tree.map(lambda n, x: n + (x * x - n) / c, state.nu, g)
        return jax.tree.map(lambda x, n: -lr * x / jnp.sqrt(n), g, nu), _SimpleAverageState(c, nu)

    return optax.GradientTransformation(init, update)


@pytest.fixture(scope="module")
def run():
    """Runs the theory model on given gradient draws; returns per-step summaries."""
    lr = 0.05
    # b2 = 1: simple averaging, m_eff(t) = t (no b1: no pure-noise reference)
    opt = monitor.watch(_simple_average_rmsprop(lr), learning_rate=lr, b2=1.0)
    update = jax.jit(opt.update)

    def go(draw):
        params = {"w": jnp.zeros(SHAPE)}
        state, out = opt.init(params), []
        for t in range(1, STEPS + 1):
            g = {"w": jnp.asarray(draw(t), jnp.float32)}
            _, state = update(g, state, params)
            out.append(monitor.summarize(jax.device_get(monitor.latest(state))))
        return out

    return go


def test_theory_model_close_for_gaussian_far_for_cauchy(run):
    rng = np.random.default_rng(0)
    gauss = run(lambda t: rng.standard_normal(SHAPE))
    for t, sc in enumerate(gauss, start=1):
        assert sc["theory/m_eff"] == pytest.approx(t, rel=1e-5)
        assert sc["theory_tv/w"] < TV_CLOSE, (t, sc["theory_tv/w"])
        assert sc["update_var/w"] == pytest.approx(1.0, abs=0.02)  # Corollary 1
        var_abs = float(theory.abs_update_variance(float(t)))
        assert sc["theory/update_var_abs"] == pytest.approx(var_abs, abs=1e-5)
        assert sc["update_var_abs/w"] == pytest.approx(var_abs, abs=0.01)  # Corollary 2
        assert sc["shape_kurtosis/w"] == pytest.approx(sc["theory/shape_kurtosis"], abs=0.06)
    cauchy = run(lambda t: rng.standard_cauchy(SHAPE))
    assert cauchy[0]["theory_tv/w"] < TV_CLOSE  # t = 1: Delta = sign(g) whatever the law
    for sc in cauchy[1:]:
        assert sc["theory_tv/w"] > TV_FAR, sc["theory_tv/w"]
    for sc in cauchy[3:]:  # the trimodal, heavy-tailed shape of Sec. 6.3
        assert sc["shape_kurtosis/w"] > sc["theory/shape_kurtosis"] + 0.5


def test_shape_diagnostics_section6(run):
    rng = np.random.default_rng(1)
    grow = run(lambda t: t * rng.standard_normal(SHAPE))  # Sec. 6.1: g_t ~ N(0, t^2)
    for sc in grow[3:]:
        assert sc["shape_bimodality/w"] > sc["theory/shape_bimodality"] + 0.05
    shifted = run(lambda t: rng.standard_normal(SHAPE) - 1.0)  # Sec. 6.2: N(-1, 1)
    for sc in shifted[1:]:
        assert sc["shape_skew/w"] < -0.2  # sign of the mean gradient
        assert sc["update_mean/w"] > 0.5  # Delta moves against g


def test_theory_masses_and_tv():
    r, bins = 4.0, 65
    th3 = monitor.theory_at(1.0, 3, r, bins, 3.0)  # m = 3: uniform on [-sqrt 3, sqrt 3]
    assert th3["m_eff"] == pytest.approx(3.0)
    masses = th3["masses"]
    assert masses.shape == (bins + 2,) and masses.sum() == pytest.approx(1.0)
    width = 2 * r / bins
    inner = np.linspace(-r, r, bins + 1)
    full = (inner[:-1] >= -np.sqrt(3)) & (inner[1:] <= np.sqrt(3))
    np.testing.assert_allclose(masses[1:-1][full], width / (2 * np.sqrt(3)), rtol=1e-4)
    assert masses[0] == 0 and masses[-1] == 0
    b = 0.999
    th = monitor.theory_at(b, 10_000, r, bins, 3.0)
    m_eff = (1 - b**10_000) * (1 + b) / ((1 - b) * (1 + b**10_000))
    assert th["m_eff"] == pytest.approx(m_eff, rel=1e-4)  # float32
    assert th["masses"][0] > 0  # support beyond [-4, 4] for m_eff ~ 2000
    assert monitor.tv_distance(1e6 * masses, masses) == pytest.approx(0.0, abs=1e-12)
    assert monitor.tv_distance([1, 0, 0], np.array([0.0, 0.0, 1.0])) == pytest.approx(1.0)


def test_no_overlay_without_b2():
    # SGD (no second moment, no b2): histograms and moments but no theory scalars.
    params = {"w": jnp.zeros((30, 20))}
    g = {"w": jnp.asarray(np.random.default_rng(0).standard_normal((30, 20)), jnp.float32)}
    tx = monitor.watch(optax.sgd(0.1), learning_rate=0.1)
    sc = monitor.summarize(jax.device_get(monitor.latest(jax.jit(tx.update)(g, tx.init(params),
                                                                              params)[1])))
    assert not any(k.startswith(("theory", "monitor/theory")) for k in sc)
    assert sc["update_var/w"] == pytest.approx(np.var(np.asarray(g["w"], np.float64)), rel=1e-4)
    assert sc["grad_norm/w"] == pytest.approx(np.linalg.norm(np.asarray(g["w"])), rel=1e-5)
