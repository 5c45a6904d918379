"""Tests of the gradient spread of "Gradient Spread as an Intuition for the Adam Optimizer"."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optaxlab import theory


def test_spread_and_predicted_step_values():
    gamma = np.asarray(theory.spread(np.array([1.0, -2.0, 0.5]), np.array([1.0, 8.0, 0.5])))
    np.testing.assert_allclose(gamma, [0.0, 1.0, 1.0], atol=1e-7)
    np.testing.assert_allclose(np.asarray(theory.predicted_step(gamma)), [1.0, 2**-0.5, 2**-0.5],
                               rtol=1e-6)
    assert np.isinf(float(theory.spread(0.0, 1.0)))
    assert float(theory.predicted_step(jnp.inf)) == 0.0
    # Round-off negatives of v - m^2 are clipped.
    assert float(theory.spread(1.0, 1.0 - 1e-7)) == 0.0


def test_adam_equal_betas_step_is_predicted_by_spread():
    """|Adam(b1 = b2, eps = 0) update| / lr = 1 / sqrt(1 + gamma^2) with gamma from its own m, v."""
    b, lr, steps = 0.9, 1.0, 25
    grads = jax.random.normal(jax.random.key(0), (steps, 64)) + 0.3
    opt = optax.adam(lr, b1=b, b2=b, eps=0.0)
    state = opt.init(jnp.zeros(64))
    for t in range(steps):
        upd, state = opt.update(grads[t], state)
        adam_state = state[0]
        c = 1 - b ** (t + 1)
        gamma = theory.spread(adam_state.mu / c, adam_state.nu / c)
        np.testing.assert_allclose(np.abs(upd) / lr, theory.predicted_step(gamma), rtol=2e-5)
        direction = theory.adam_direction(adam_state.mu / c, adam_state.nu / c)
        np.testing.assert_allclose(-upd / lr, direction, rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("shape", [(), (3,), (2, 4)])
def test_shapes(shape):
    m = jnp.ones(shape)
    assert theory.spread(m, 2 * m).shape == shape
    assert theory.predicted_step(m).shape == shape
