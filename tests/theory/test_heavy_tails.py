"""Tests of the heavy-tail diagnostics ("Why Adam Beats SGD for Attention Models")."""

import jax
import numpy as np
import pytest
from scipy import stats

from optaxlab import theory


@pytest.mark.parametrize("alpha", [1.2, 1.5, 3.0])
def test_hill_recovers_pareto_index(alpha):
    """Tolerance: 10% relative at N = 1e5, k = 1000 (Hill's sd is about alpha / sqrt(k) = 3%)."""
    x = stats.pareto.rvs(alpha, size=100_000, random_state=np.random.default_rng(0))
    assert theory.hill_estimator(x, k=1000) == pytest.approx(alpha, rel=0.1)
    # The jax symmetric Lomax sampler, (1 + x)^-alpha tails: Hill is unbiased only far out, so
    # check it on the heavy indices where the top 1% lies far beyond the scale.
    if alpha < 2:
        y = np.asarray(theory.sample_pareto(jax.random.key(1), alpha, (100_000,)))
        assert theory.hill_estimator(y, k=1000) == pytest.approx(alpha, rel=0.1)


@pytest.mark.parametrize("alpha", [1.1, 1.5, 1.9])
def test_stable_index_recovers_alpha(alpha):
    """Mohammadi et al. estimator on symmetric stable samples: within 0.1 at N = 1e5."""
    x = np.asarray(theory.sample_symmetric_stable(jax.random.key(2), alpha, (100_000,)),
                   np.float64)
    assert theory.stable_tail_index(x) == pytest.approx(alpha, abs=0.1)
    # Gaussian (alpha = 2): the estimate is near 2.
    g = np.random.default_rng(0).standard_normal(100_000)
    assert theory.stable_tail_index(g) == pytest.approx(2.0, abs=0.1)


def test_variance_vs_sample_size_settles_only_for_light_tails():
    rng = np.random.default_rng(0)
    sizes, v = theory.variance_vs_sample_size(rng.standard_normal(100_000))
    np.testing.assert_allclose(v[sizes >= 10_000], 1.0, atol=0.05)
    x = rng.standard_normal(1000)
    np.testing.assert_allclose(theory.variance_vs_sample_size(x, [10, 1000])[1],
                               [np.var(x[:10], ddof=1), np.var(x, ddof=1)])
    _, vc = theory.variance_vs_sample_size(rng.standard_cauchy(100_000))
    assert vc.max() / vc[len(vc) // 2] > 10  # keeps jumping


def test_noise_norms():
    rng = np.random.default_rng(0)
    grads = rng.standard_normal((4096, 8))
    norms = theory.noise_norms(grads, batch_size=64, num_batches=300, seed=1)
    assert norms.shape == (300,)
    # E||mean of B rows - full||^2 ~ d/B (1 - (B-1)/(N-1)) for unit-variance rows.
    assert np.mean(norms**2) == pytest.approx(8 / 64 * (1 - 63 / 4095), rel=0.15)
    # A batch equal to the data set has no noise.
    np.testing.assert_allclose(theory.noise_norms(grads, 4096, 2), 0.0, atol=1e-12)


def test_bad_inputs():
    x = np.arange(1.0, 11.0)
    for call in (lambda: theory.hill_estimator(x, 10), lambda: theory.stable_tail_index(x, 1),
                 lambda: theory.noise_norms(x, 2, 2), lambda: theory.variance_vs_sample_size([1.0]),
                 lambda: theory.noise_norms(x[:, None], 11, 2)):
        with pytest.raises(ValueError):
            call()
