"""Bias corrections in float32 against float64 recurrences: ours within a few ulps, optax not.

The stream is positive (log-normal gradients), so the moments never cancel and the relative error
of the update measures the bias correction's precision alone. At b = 0.999 optax's ``1 - b**t``
in float32 is ~1e-5 relatively off; ours (-expm1(t log b), log b in float64) is ~1e-7 at step 1
and grows to ~1e-6 by step 100 (the float32 round-off of the moment recursions themselves).
"""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optaxlab import optimizers
from optaxlab import transforms as T
from optaxlab.testing import run

STEPS = 100
B1, B2 = 0.9, 0.999


def positive_stream(seed=0, steps=STEPS):
    rng = np.random.default_rng(seed)
    return {"g": np.exp(0.3 * rng.normal(size=(steps, 64))).astype(np.float32)}


def ema64(g, b):
    m, out = np.zeros_like(g[0], np.float64), []
    for x in g.astype(np.float64):
        m = b * m + (1 - b) * x
        out.append(m)
    return np.stack(out)


def steps(g):
    return np.arange(1, len(g) + 1, dtype=np.float64)[:, None]


def c(b, g):
    return -np.expm1(steps(g) * np.log(b))  # 1 - b^t in float64


def ref_adam(g):
    m, v = ema64(g, B1) / c(B1, g), ema64(g.astype(np.float64) ** 2, B2) / c(B2, g)
    return m / (np.sqrt(v) + 1e-8)


def ref_rms(g):
    return g / (np.sqrt(ema64(g.astype(np.float64) ** 2, B2) / c(B2, g)) + 1e-8)


def ref_ema(g):
    return ema64(g, B2) / c(B2, g)


def ref_equal_betas(g):
    m, v = ema64(g, B2) / c(B2, g), ema64(g.astype(np.float64) ** 2, B2) / c(B2, g)
    return m / np.sqrt(v)


def ref_laprop(g, eps=1e-15):
    g = g.astype(np.float64)
    n, m, out = np.zeros_like(g[0]), np.zeros_like(g[0]), []
    for t in range(1, len(g) + 1):
        n = B2 * n + (1 - B2) * g[t - 1] ** 2
        m = B1 * m + (1 - B1) * g[t - 1] / np.sqrt(n / (1 - B2**t) + eps)
        out.append(m / (1 - B1**t))
    return np.stack(out)


def ref_radam(g, threshold=5.0):
    rho_inf = 2 / (1 - B2) - 1
    t = steps(g)
    b2t = B2**t
    rho = rho_inf - 2 * t * b2t / (1 - b2t)
    r = np.sqrt(np.maximum((rho - 4) * (rho - 2) * rho_inf
                           / ((rho_inf - 4) * (rho_inf - 2) * rho), 0))
    m, v = ema64(g, B1) / c(B1, g), ema64(g.astype(np.float64) ** 2, B2) / c(B2, g)
    return np.where(rho >= threshold, r * m / (np.sqrt(v) + 1e-8), m)


CASES = {
    # name: (ours, optax's counterpart or None, float64 reference)
    "adam": (T.scale_by_adam(B1, B2), optax.scale_by_adam(B1, B2), ref_adam),
    "rmsprop": (T.scale_by_rms(B2), optax.scale_by_rms(B2, 1e-8, 0.0, eps_in_sqrt=False,
                                                       bias_correction=True), ref_rms),
    "radam": (T.scale_by_radam(B1, B2), optax.scale_by_radam(B1, B2), ref_radam),
    "ema": (T.ema(B2, debias=True), optax.ema(B2, debias=True), ref_ema),
    "equal_betas": (
        optax.chain(T.track_gaussian_vi(B2), T.scale_by_mollified_sign()),
        optax.scale_by_adam(B2, B2, eps=0.0), ref_equal_betas,
    ),
    "laprop": (T.scale_by_laprop(B1, B2), None, ref_laprop),
}


def max_rel_err(tx, g, ref):
    us, _ = run(tx, g)
    return float(np.max(np.abs(np.asarray(us["g"], np.float64) - ref) / np.abs(ref)))


@pytest.mark.parametrize("name", list(CASES))
def test_bias_correction_within_a_few_ulps_of_float64(name):
    ours, theirs, reference = CASES[name]
    g = positive_stream()
    ref = reference(g["g"])
    err = max_rel_err(ours, g, ref)
    assert err < 1.5e-6, err
    if theirs is not None:  # optax's float32 1 - b**t is what we improve on
        assert max_rel_err(theirs, g, ref) > 3 * err


def test_radam_step_6_with_unit_gradient():
    """The example of the issue: create('radam', 1.) with gradient 1 at default hparams; step 6
    is the first rectified one (rho_6 = 5.99416)."""
    tx = optimizers.create("radam", 1.0)
    p = jnp.zeros(1)
    state, updates = tx.init(p), []
    for _ in range(8):
        u, state = tx.update(jnp.ones(1), state, p)
        updates.append(float(u[0]))
    exact = ref_radam(np.ones((STEPS, 1), np.float32))[:8, 0]
    np.testing.assert_allclose(-np.asarray(updates), exact, rtol=1e-6)
    assert updates[5] == pytest.approx(-0.0258211, rel=1e-5)


def test_accurate_under_inject_hyperparams():
    """An injected (float32 array) b2 loses its float64 digits but keeps the accurate form:
    error ~ the float32 rounding of b2 itself, still far below optax's."""
    g = positive_stream(seed=1, steps=50)
    ref = ref_adam(g["g"])
    inj = optax.inject_hyperparams(T.scale_by_adam)(b1=B1, b2=B2)
    # b2 = 0.999 rounds to 0.99900001 in float32: 1 - b2 is 1.3e-5 relatively off, so v^ is too
    assert max_rel_err(inj, g, ref) < 1e-5
