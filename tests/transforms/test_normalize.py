"""optaxlab.transforms.normalize: variance-mollified sign ("In Search of Adam's Secret Sauce") and
LaProp ("On the Distributional Properties of Adaptive Gradients").

Float32 transforms against float64 numpy recurrences or optax, rtol 1e-5 with an absolute
floor of 1e-6 of the largest value (entries crossing zero).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optaxlab import transforms as T
from optaxlab.testing import STEPS, np_ema, run, stream


def assert_stream_close(actual, expected, rtol=1e-5, atol=None):
    for k in expected:
        a, e = np.asarray(actual[k], np.float64), np.asarray(expected[k], np.float64)
        floor = 1e-6 * np.max(np.abs(e)) if atol is None else atol[k]
        np.testing.assert_allclose(a, e, rtol=rtol, atol=floor, err_msg=k)




def equal_betas(beta, bias_correction=True, c=1.0, eps=0.0, init="zero"):
    return optax.chain(
        T.track_gaussian_vi(beta, debias=bias_correction, init=init),
        T.scale_by_mollified_sign(c=c, eps=eps),
    )


# --------------------------------------------------------------------------- equal-betas identities


@pytest.mark.parametrize("kind", ["gaussian", "heavy"])
@pytest.mark.parametrize("beta", [0.9, 0.99])
def test_equal_betas_is_optax_adam_with_eps_zero(kind, beta):
    """Bias-corrected tracker + mollified sign == optax.adam(b1 = b2 = beta, eps = 0)."""
    g = stream(kind, seed=1)
    ours, _ = run(equal_betas(beta), g)
    ref, _ = run(optax.scale_by_adam(b1=beta, b2=beta, eps=0.0), g)
    assert_stream_close(ours, ref)


@pytest.mark.parametrize("kind", ["gaussian", "heavy"])
def test_equal_betas_without_bias_correction_is_m_over_sqrt_v(kind):
    """Secret Sauce eq. (2): u = m / sqrt(v), zero-initialized EMAs, no bias correction."""
    g = stream(kind, seed=2)
    beta = 0.95
    ours, _ = run(equal_betas(beta, bias_correction=False), g)
    expected = {
        k: np_ema(v, beta) / np.sqrt(np_ema(v.astype(np.float64) ** 2, beta))
        for k, v in g.items()
    }
    assert_stream_close(ours, expected)


@pytest.mark.parametrize("bias_correction", [True, False])
def test_gradient_spread_sign_over_sqrt_one_plus_gamma_squared(bias_correction):
    """Gradient spread: for b1 = b2 the Adam direction is sign(m)/sqrt(1 + gamma^2),
    gamma = sqrt(v - m^2)/|m| (with the same bias correction on m and v)."""
    g = stream("gaussian", seed=3)
    beta = 0.9
    ours, _ = run(equal_betas(beta, bias_correction), g)
    t = np.arange(1, STEPS + 1).reshape(-1, 1)
    for k, v in g.items():
        v = v.reshape(STEPS, -1)
        m, v2 = np_ema(v, beta), np_ema(v.astype(np.float64) ** 2, beta)
        if bias_correction:
            m, v2 = m / (1 - beta**t), v2 / (1 - beta**t)
        gamma = np.sqrt(np.maximum(v2 - m**2, 0)) / np.abs(m)  # = 0 at t = 1 (bias-corrected)
        expected = np.sign(m) / np.sqrt(1 + gamma**2)
        np.testing.assert_allclose(np.asarray(ours[k]).reshape(STEPS, -1), expected, rtol=1e-5,
                                   atol=1e-6)


def test_equal_betas_operator_properties():
    """Secret Sauce App. E: causal, invariant to positive scaling, odd, |u| <= 1."""
    g = stream("heavy", seed=4)
    tx = equal_betas(0.9, bias_correction=False)
    u, _ = run(tx, g)
    for k in g:
        assert np.all(np.abs(np.asarray(u[k])) <= 1.0 + 2.4e-7)  # 1 up to one rounding
    scaled, _ = run(tx, jax.tree.map(lambda x: 37.5 * x, g))
    assert_stream_close(scaled, u)
    negated, _ = run(tx, jax.tree.map(lambda x: -x, g))
    assert_stream_close(negated, jax.tree.map(lambda x: -x, u))
    # causal: changing the future leaves the past unchanged
    future = {k: v.copy() for k, v in g.items()}
    for v in future.values():
        v[60:] = np.random.default_rng(5).normal(size=v[60:].shape) * 100
    changed, _ = run(tx, future)
    for k in g:
        np.testing.assert_array_equal(np.asarray(changed[k])[:60], np.asarray(u[k])[:60])
        assert not np.allclose(np.asarray(changed[k])[60:], np.asarray(u[k])[60:])


def test_mollified_sign_never_exceeds_one_without_variance():
    """At s^2 = 0 the operator is the sign: u = sign(m) up to one float32 rounding (XLA CPU's
    rsqrt is not correctly rounded: 1 +- 2^-23), and exactly 0 at m = 0."""
    rng = np.random.default_rng(10)
    m = (rng.normal(size=200_000) * np.exp(5 * rng.normal(size=200_000))).astype(np.float32)
    m[:10] = 0.0
    pair = T.MeanVar(mean=jnp.asarray(m), var=jnp.zeros_like(jnp.asarray(m)))
    u, _ = jax.jit(T.scale_by_mollified_sign().update)(pair, optax.EmptyState())
    np.testing.assert_allclose(np.asarray(u), np.sign(m), rtol=2.4e-7, atol=0)
    assert np.abs(np.asarray(u)).max() <= 1 + 2.4e-7


def test_mollified_sign_is_zero_at_zero_and_eps_mollifies():
    tx = T.scale_by_mollified_sign(eps=0.0)
    zero = T.MeanVar(mean=jnp.zeros(3), var=jnp.zeros(3))
    u, _ = tx.update(zero, tx.init(None))
    np.testing.assert_array_equal(u, 0.0)
    pair = T.MeanVar(mean=jnp.array([3.0, -4.0]), var=jnp.array([16.0, 9.0]))
    u, _ = T.scale_by_mollified_sign(c=2.0, eps=1.0).update(pair, optax.EmptyState())
    np.testing.assert_allclose(u, [3 / np.sqrt(9 + 32 + 1), -4 / np.sqrt(16 + 18 + 1)], rtol=1e-6)


@pytest.mark.parametrize("init", ["zero", "first"])
def test_fixed_mollifier_signum_matches_numpy(init):
    """Secret Sauce ablation: u = m / sqrt(m^2 + sigma2), m a (ZI or GI) EMA of the
    gradient."""
    g = stream("gaussian", seed=6)
    beta, sigma2 = 0.9, 0.25
    tx = optax.chain(
        T.ema(beta, debias=False, init=init), T.scale_by_mollified_sign(fixed_variance=sigma2)
    )
    ours, _ = run(tx, g)
    expected = {}
    for k, v in g.items():
        m = np_ema(v, beta, init)
        expected[k] = m / np.sqrt(m**2 + sigma2)
    # m is an EMA of signed values: its float32 error is absolute, ~1e-7 max|g|, and
    # du/dm <= 1/sqrt(sigma2), so near m = 0 the floor scales with max|g| / sqrt(sigma2)
    atol = {k: 1e-6 * np.abs(v).max() / np.sqrt(sigma2) for k, v in g.items()}
    assert_stream_close(ours, expected, atol=atol)


def test_adaptive_mode_rejects_a_plain_tree():
    tx = T.scale_by_mollified_sign()
    with pytest.raises(ValueError, match="MeanVar"):
        tx.update({"a": jnp.ones(2)}, tx.init(None))
    with pytest.raises(ValueError, match="eps=-1"):
        T.scale_by_mollified_sign(eps=-1.0)


def test_pair_composes_with_optax_masked():
    """Wrap the (tracker, normalizer) pair in optax.masked: masked leaves see adam(b,b,0)."""
    g = stream("gaussian", seed=7, steps=40)
    mask = {"w": True, "b": False, "v": True}
    ours, _ = run(optax.masked(equal_betas(0.9), mask), g)
    ref, _ = run(optax.scale_by_adam(0.9, 0.9, eps=0.0), {"w": g["w"], "v": g["v"]})
    assert_stream_close({"w": ours["w"], "v": ours["v"]}, ref)
    np.testing.assert_array_equal(ours["b"], g["b"])  # unmasked leaves pass through


# --------------------------------------------------------------------------- LaProp


@pytest.mark.parametrize("kind", ["gaussian", "heavy"])
def test_laprop_matches_distributional_properties_recursion(kind):
    g = stream(kind, seed=8)
    b1, b2, eps = 0.9, 0.99, 1e-12
    ours, state = run(T.scale_by_laprop(b1, b2, eps), g)
    expected = {}
    for k, v in g.items():
        v = v.astype(np.float64)
        n, m, out = np.zeros_like(v[0]), np.zeros_like(v[0]), []
        for t in range(1, STEPS + 1):
            n = b2 * n + (1 - b2) * v[t - 1] ** 2
            m = b1 * m + (1 - b1) * v[t - 1] / np.sqrt(n / (1 - b2**t) + eps)
            out.append(m / (1 - b1**t))
        expected[k] = np.stack(out)
    assert_stream_close(ours, expected)
    assert isinstance(state, T.ScaleByLaPropState) and int(state.count) == STEPS
