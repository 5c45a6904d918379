"""optaxlab.monitor.gradient_noise against synthetic gradient streams with known G and Sigma."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optaxlab.monitor import gradient_noise as gn
from optaxlab.theory import hill_estimator


def stream(key, G, sigma, k, b):
    """k microbatch gradients, each the mean of b per-example gradients G + sigma * z."""
    z = jax.random.normal(key, (k, b) + G.shape)
    return (G + sigma * z).mean(axis=1)


@jax.jit
def one_step(key):
    G = {"w": jnp.linspace(-0.2, 0.3, 64), "b": jnp.full((16,), 0.1)}
    sig = {"w": jnp.full((64,), 1.5), "b": jnp.linspace(0.5, 2.0, 16)}
    k, b = 8, 4
    keys = jax.random.split(key, 2)
    gs = {n: stream(kk, G[n], sig[n], k, b) for n, kk in zip(("w", "b"), keys, strict=True)}
    carry = gn.init(G, snr=True)
    for i in range(k):
        carry = gn.fold(carry, {n: gs[n][i] for n in gs})
    est = gn.finish(carry, {n: gs[n].mean(0) for n in gs}, microbatch_size=b)
    return est["global_g2"], est["global_trace"], est["snr"]["w"]


def test_b_simple_within_its_sampling_error():
    G2 = float(np.sum(np.linspace(-0.2, 0.3, 64) ** 2) + 16 * 0.01)
    trace = float(64 * 1.5**2 + np.sum(np.linspace(0.5, 2.0, 16) ** 2))
    g2, tr, _ = jax.vmap(one_step)(jax.random.split(jax.random.key(0), 4000))
    g2, tr = np.asarray(g2), np.asarray(tr)
    # Both estimators are unbiased: their means over 4000 steps sit within 4 standard errors.
    for est, want in ((g2, G2), (tr, trace)):
        se = est.std(ddof=1) / np.sqrt(est.size)
        assert abs(est.mean() - want) < 4 * se, (est.mean(), want, se)
    # B_simple from the averaged numerator and denominator (as McCandlish et al. average them):
    # delta-method standard error of a ratio of means.
    b = tr.mean() / g2.mean()
    cov = np.cov(tr, g2)
    se_b = b * np.sqrt(cov[0, 0] / tr.mean() ** 2 + cov[1, 1] / g2.mean() ** 2
                       - 2 * cov[0, 1] / (tr.mean() * g2.mean())) / np.sqrt(tr.size)
    assert abs(b - trace / G2) < 4 * se_b
    assert gn.critical_batch_size(trace, G2) == pytest.approx(trace / G2)


def test_snr_against_the_closed_form():
    # Microbatch gradients N(mu, s^2) per coordinate: snr -> sum mu^2 / sum s^2 (noise removed).
    _, _, snr = jax.vmap(one_step)(jax.random.split(jax.random.key(1), 2000))
    mu = np.linspace(-0.2, 0.3, 64)
    s2 = 1.5**2 / 4  # a microbatch of b = 4 examples
    want = np.sum(mu**2) / (64 * s2)
    snr = np.asarray(snr)
    assert abs(snr.mean() - want) < 4 * snr.std(ddof=1) / np.sqrt(snr.size)


@pytest.mark.parametrize("alpha", [1.5, 3.0])
def test_tail_index_of_pareto_noise(alpha):
    # Per-coordinate noise of a symmetric Pareto(alpha) law in the first microbatch only;
    # Hill's estimate with k = sqrt(N) has relative error ~ 1/sqrt(k) (k = 316 here: ~6%).
    rng = np.random.default_rng(0)
    n = 100_000
    noise = rng.choice([-1.0, 1.0], n) * (rng.pareto(alpha, n) + 1.0)
    params = {"w": jnp.zeros(n)}
    carry = gn.init(params, tail=True)
    carry = gn.fold(carry, {"w": jnp.asarray(noise, jnp.float32)})
    carry = gn.fold(carry, {"w": jnp.zeros(n)})
    mean = {"w": jnp.asarray(noise / 2, jnp.float32)}
    est = float(gn.finish(carry, mean, microbatch_size=1)["tail_index"]["w"])
    assert abs(est - alpha) / alpha < 0.2
    # the JAX Hill estimator equals the float64 host one on the same deviations
    assert est == pytest.approx(hill_estimator(noise / 2), rel=1e-3)


def test_off_parts_cost_nothing():
    carry = gn.init({"w": jnp.zeros(3)})
    assert carry.sum_sq is None and carry.first is None
    carry = gn.fold(gn.fold(carry, {"w": jnp.ones(3)}), {"w": -jnp.ones(3)})
    out = gn.finish(carry, {"w": jnp.zeros(3)}, microbatch_size=2)
    assert "snr" not in out and "tail_index" not in out
    assert float(out["global_g2"]) == pytest.approx(-3.0)  # (2*0 - 3) / 1: unbiased, can be < 0
