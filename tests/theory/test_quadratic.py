"""Tests of the toy quadratics of "In Search of Adam's Secret Sauce"."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optaxlab import theory


@pytest.mark.parametrize("kind", ["heterogeneous", "homogeneous"])
def test_hessian_has_exactly_the_specified_eigenvalues(kind):
    with jax.enable_x64(True):
        q = theory.toy_quadratic(kind, key=3, dtype=jnp.float64)
        h = np.asarray(q.hessian)
        lam = np.asarray(q.eigenvalues)
        spec = theory.quadratic.HETEROGENEOUS if kind == "heterogeneous" else \
            theory.quadratic.HOMOGENEOUS
        np.testing.assert_array_equal(lam, np.asarray(spec))
        np.testing.assert_allclose(np.linalg.eigvalsh(h), np.sort(lam.ravel()), rtol=1e-12)
        for b in range(3):  # per block, and off-block entries are exactly 0
            s = slice(3 * b, 3 * b + 3)
            np.testing.assert_allclose(np.linalg.eigvalsh(h[s, s]), np.sort(lam[b]), rtol=1e-12)
            mask = np.ones((9, 9), bool)
            mask[s, :] = False
        off = h.copy()
        for b in range(3):
            off[3 * b:3 * b + 3, 3 * b:3 * b + 3] = 0
        np.testing.assert_array_equal(off, 0.0)
        a = np.asarray(q.sqrt_hessian)
        np.testing.assert_allclose(a @ a, h, atol=1e-9)
        # Rotations are orthogonal and non-trivial (not the identity).
        r = np.asarray(q.rotations)
        for rb in r:
            np.testing.assert_allclose(rb.T @ rb, np.eye(3), atol=1e-12)
            assert np.abs(rb - np.eye(3)).max() > 1e-3


def test_float32_eigenvalues():
    q = theory.toy_quadratic("heterogeneous", key=0)
    ev = np.linalg.eigvalsh(np.asarray(q.hessian, np.float64))
    np.testing.assert_allclose(ev, np.sort(np.ravel(theory.quadratic.HETEROGENEOUS)), rtol=1e-5)


def test_haar_rotation_is_uniform():
    """First column of a Haar matrix is uniform on the sphere: E[Q_11^2] = 1/n, E[Q_11] = 0."""
    keys = jax.random.split(jax.random.key(0), 4000)
    q = jax.vmap(lambda k: theory.haar_orthogonal(k, 3))(keys)
    assert float(jnp.mean(q[:, 0, 0] ** 2)) == pytest.approx(1 / 3, abs=0.02)
    assert abs(float(jnp.mean(q[:, 0, 0]))) < 0.03
    assert float(jnp.mean(jnp.linalg.det(q))) == pytest.approx(0.0, abs=0.05)  # both components


def test_stochastic_gradient_is_unbiased():
    """Averaging over all row subsets of size B gives H w exactly."""
    q = theory.toy_quadratic("homogeneous", key=1)
    w = jax.random.normal(jax.random.key(2), (9,))
    a = np.asarray(q.sqrt_hessian, np.float64)
    for b in (1, 3):
        subsets = list(itertools.combinations(range(9), b))
        mean = np.mean([9 / b * a[list(s)].T @ (a[list(s)] @ np.asarray(w)) for s in subsets], 0)
        np.testing.assert_allclose(mean, np.asarray(q.hessian, np.float64) @ np.asarray(w),
                                   rtol=1e-4, atol=1e-3)
    g = theory.stochastic_gradient(q, w, jax.random.key(0), 3)
    assert g.shape == (9,)
    with pytest.raises(ValueError):
        theory.stochastic_gradient(q, w, jax.random.key(0), 10)


def test_run_quadratic_gd_matches_closed_form():
    """Full-batch GD: w_T = (I - lr H)^T w0, vmapped over lrs and seeds."""
    q = theory.toy_quadratic("heterogeneous", key=0)
    lrs = [1e-4, 2e-4]
    out = theory.run_quadratic(q, lambda lr: optax.sgd(lr), lrs, steps=20, seeds=(0, 1),
                               track_beta=0.9, record_every=5)
    assert out["loss"].shape == (2, 2, 5) and out["block_var"].shape == (2, 2, 4, 3)
    np.testing.assert_array_equal(out["steps"], [0, 5, 10, 15, 20])
    h = np.asarray(q.hessian, np.float64)
    w0 = np.random.default_rng(1).standard_normal(9)  # seed 1's initial point
    w = np.linalg.matrix_power(np.eye(9) - lrs[1] * h, 20) @ w0
    assert float(out["loss"][1, 1, -1]) == pytest.approx(0.5 * w @ h @ w, rel=1e-3)
    assert float(out["loss"][1, 1, 0]) == pytest.approx(0.5 * w0 @ h @ w0, rel=1e-5)
    assert np.all(np.asarray(out["block_var"]) >= 0)


def test_run_quadratic_stochastic_decreases_and_validates():
    q = theory.toy_quadratic("heterogeneous", key=0)
    out = theory.run_quadratic(q, lambda lr: optax.adam(lr, b1=0.9, b2=0.9), [1e-2], steps=300,
                               seeds=(0,), batch_size=3)
    loss = np.asarray(out["loss"])[0, 0]
    assert loss[-1] < 1e-2 * loss[0]
    with pytest.raises(ValueError):
        theory.run_quadratic(q, lambda lr: optax.sgd(lr), [1e-3], steps=10, batch_size=0)
    with pytest.raises(ValueError):
        theory.run_quadratic(q, lambda lr: optax.sgd(lr), [1e-3], steps=10, record_every=3)
    with pytest.raises(ValueError):
        theory.toy_quadratic("random")
