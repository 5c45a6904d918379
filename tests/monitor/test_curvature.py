"""optaxlab.monitor.curvature against quadratics with a known Hessian (closed forms)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optaxlab.monitor import curvature


def quadratic(h: np.ndarray):
    """0.5 x^T H x over a two-leaf pytree (so the flattening is exercised)."""
    n = h.shape[0]
    H = jnp.asarray(h, jnp.float32)

    def loss(p):
        x = jnp.concatenate([p["a"].ravel(), p["b"]])
        return 0.5 * x @ H @ x

    k = n // 2
    params = {"a": jnp.ones((k // 2, 2)) * 0.3, "b": jnp.linspace(-1, 1, n - 2 * (k // 2))}
    return loss, params


def dense_h(n=40, seed=0, low=-3.0, high=50.0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    eig = np.linspace(low, high, n)
    return (q * eig) @ q.T, eig


@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_diagonal_hessian(method):
    eig = np.concatenate([np.linspace(0.1, 10.0, 39), [25.0]])
    loss, p = quadratic(np.diag(eig))
    lam = curvature.sharpness(loss, p, method=method, iters=40 if method == "lanczos" else 300)
    assert abs(float(lam) - 25.0) / 25.0 < 1e-4


def test_dense_hessian_lanczos_top_and_bottom():
    h, eig = dense_h()
    loss, p = quadratic(h)
    ritz = curvature.lanczos(loss, p, iters=40)
    assert abs(float(ritz[-1]) - eig.max()) / eig.max() < 1e-4
    assert abs(float(ritz[0]) - eig.min()) / abs(eig.min()) < 1e-3


@pytest.mark.parametrize("dense", [False, True])
def test_preconditioned_sharpness_is_the_top_eigenvalue_of_p_inverse_h(dense):
    rng = np.random.default_rng(1)
    h = dense_h(low=0.5)[0] if dense else np.diag(np.linspace(0.5, 50, 40))
    d = rng.uniform(0.1, 3.0, size=40)
    loss, p = quadratic(h)
    flat = np.asarray(jax.flatten_util.ravel_pytree(p)[0])
    precond = jax.flatten_util.ravel_pytree(p)[1](jnp.asarray(d, jnp.float32))
    want = np.max(np.linalg.eigvals(np.diag(1 / d) @ h).real)
    got = curvature.sharpness(loss, p, precond=precond, iters=40)
    assert abs(float(got) - want) / want < 1e-4
    assert flat.size == 40


def test_adam_preconditioner_and_threshold():
    nu = {"w": jnp.array([4.0, 0.0])}
    p = curvature.adam_preconditioner(nu, 1, b2=0.9, eps=1e-8)
    np.testing.assert_allclose(p["w"], [np.sqrt(4.0 / 0.1) + 1e-8, 1e-8], rtol=1e-6)
    assert curvature.adam_stability_threshold(1e-3, 0.9) == pytest.approx(38_000.0)


def test_bad_arguments():
    loss, p = quadratic(np.eye(4))
    with pytest.raises(ValueError, match="method='eig'"):
        curvature.sharpness(loss, p, method="eig")
    with pytest.raises(ValueError, match="iters=10 exceeds the number of parameters 4"):
        curvature.lanczos(loss, p, iters=10)


def test_small_network_against_the_explicit_hessian():
    k1, k2, k3 = jax.random.split(jax.random.key(3), 3)
    params = {"w1": jax.random.normal(k1, (3, 4)) * 0.5, "w2": jax.random.normal(k2, (4,)) * 0.5}
    x = jax.random.normal(k3, (16, 3))
    y = jnp.sin(x[:, 0])

    def loss(p):
        return jnp.mean((jnp.tanh(x @ p["w1"]) @ p["w2"] - y) ** 2)

    flat, unravel = jax.flatten_util.ravel_pytree(params)
    h = np.asarray(jax.hessian(lambda f: loss(unravel(f)))(flat))
    want = np.linalg.eigvalsh(h)
    ritz = np.asarray(curvature.lanczos(loss, params, iters=12))
    assert abs(ritz[-1] - want[-1]) / want[-1] < 1e-4


def test_sharpness_scalars_on_a_dense_quadratic_match_closed_forms():
    """Tags and values: lambda_max(H), lambda_max(P^-1 H) with P = sqrt(nu / (1 - b2^t)) + eps,
    and (2 + 2 b1) / ((1 - b1) lr), all to 1e-4 relative on a 6-dim quadratic with dense H."""
    rng = np.random.default_rng(3)
    a = rng.normal(size=(6, 6))
    h = a @ a.T + 0.5 * np.eye(6)
    params = {"w": jnp.asarray(rng.normal(size=6), jnp.float32)}
    nu = {"w": jnp.asarray(rng.uniform(0.01, 2.0, size=6), jnp.float32)}
    count, b1, b2, eps, lr = 7, 0.9, 0.99, 1e-8, 3e-3
    hj = jnp.asarray(h, jnp.float32)
    out = curvature.sharpness_scalars(lambda p: 0.5 * p["w"] @ hj @ p["w"], params, nu, count,
                                      learning_rate=lr, b1=b1, b2=b2, eps=eps, iters=6,
                                      key=jax.random.key(0))
    p = np.sqrt(np.asarray(nu["w"], np.float64) / (1 - b2 ** count)) + eps
    s = np.diag(p ** -0.5)
    assert set(out) == {"sharpness/lambda_max", "sharpness/precond_lambda_max",
                        "sharpness/adam_threshold"}
    np.testing.assert_allclose(out["sharpness/lambda_max"], np.linalg.eigvalsh(h)[-1], rtol=1e-4)
    np.testing.assert_allclose(out["sharpness/precond_lambda_max"],
                               np.linalg.eigvalsh(s @ h @ s)[-1], rtol=1e-4)
    np.testing.assert_allclose(out["sharpness/adam_threshold"], 3.8 / (0.1 * lr), rtol=1e-6)


def test_sharpness_scalars_without_bias_correction_and_the_state_lookup():
    """bias_correction=False: P = sqrt(nu) + eps (closed form on a diagonal quadratic); and
    `state_second_moment` finds optax.adam's nu and count through chain / inject_hyperparams,
    None for SGD."""
    d = np.array([4.0, 1.0, 0.25])
    nu = {"w": jnp.asarray([1.0, 0.01, 1e-4], jnp.float32)}
    params = {"w": jnp.ones(3, jnp.float32)}
    loss = lambda p: 0.5 * jnp.sum(jnp.asarray(d, jnp.float32) * p["w"] ** 2)
    out = curvature.sharpness_scalars(loss, params, nu, 7, learning_rate=1e-2, b1=0.9, b2=0.99,
                                      eps=0.0, bias_correction=False, iters=3)
    want = np.max(d / np.sqrt(np.asarray(nu["w"], np.float64)))  # 0.25 / 0.01 = 25
    np.testing.assert_allclose(out["sharpness/precond_lambda_max"], want, rtol=1e-4)

    tx = optax.chain(optax.clip_by_global_norm(100.0),
                     optax.inject_hyperparams(optax.adam)(learning_rate=1e-2))
    state = tx.init(params)
    _, state = tx.update({"w": jnp.asarray([1.0, 2.0, 3.0])}, state, params)
    found_nu, count = curvature.state_second_moment(state, params)
    np.testing.assert_allclose(found_nu["w"], 0.001 * np.array([1.0, 4.0, 9.0]), rtol=1e-4)
    assert int(count) == 1
    assert curvature.state_second_moment(optax.sgd(0.1, momentum=0.9).init(params),
                                         params) is None
