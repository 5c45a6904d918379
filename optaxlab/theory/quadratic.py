"""Toy quadratics of "In Search of Adam's Secret Sauce", App. D (after Zhang et al., 2024a):
heterogeneous
vs homogeneous.

Loss f(w) = 1/2 w^T H w (minimum 0 at w = 0) in 9 dimensions. H is block-diagonal with three 3x3
blocks; block b is R_b diag(lambda_b) R_b^T with its own Haar-random rotation R_b. Eigenvalues:

    heterogeneous  [[1, 2, 3], [99, 100, 101], [4998, 4999, 5000]]   (each block one scale)
    homogeneous    [[1, 99, 4998], [2, 100, 4999], [3, 101, 5000]]   (each block all scales)

Stochastic gradients sample rows of the design matrix A = H^(1/2) (symmetric, block-diagonal):
f(w) = 1/2 ||A w||^2 = 1/2 sum_i (a_i^T w)^2, and a batch S of B rows (without replacement)
gives the unbiased estimate g = (9/B) A_S^T A_S w.

`run_quadratic` trains any optimizer on it for a grid of hyperparameters and seeds at once
(vmapped), recording the loss and, optionally, the per-block mean of the equal-beta variance
estimate s_t^2 = v_t - m_t^2 (Fig. 6 of the paper, second row).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    "HETEROGENEOUS",
    "HOMOGENEOUS",
    "ToyQuadratic",
    "full_gradient",
    "haar_orthogonal",
    "quadratic_loss",
    "run_quadratic",
    "stochastic_gradient",
    "toy_quadratic",
]

HETEROGENEOUS = ((1.0, 2.0, 3.0), (99.0, 100.0, 101.0), (4998.0, 4999.0, 5000.0))
HOMOGENEOUS = ((1.0, 99.0, 4998.0), (2.0, 100.0, 4999.0), (3.0, 101.0, 5000.0))


class ToyQuadratic(NamedTuple):
    """hessian H (d, d); sqrt_hessian A = H^(1/2) (d, d); eigenvalues (blocks, block size);
    block_of (d,) the block index of each coordinate; rotations (blocks, k, k)."""

    hessian: jax.Array
    sqrt_hessian: jax.Array
    eigenvalues: jax.Array
    block_of: jax.Array
    rotations: jax.Array


def haar_orthogonal(key: jax.Array, n: int, dtype=jnp.float32) -> jax.Array:
    """A Haar-random n x n orthogonal matrix: Q of the QR of a Gaussian matrix with the signs of
    diag(R) folded in (Mezzadri, 2007, "How to generate random matrices from the classical compact
    groups"); equivalent to the paper's eigenvectors of X X^T up to column signs/order."""
    z = jax.random.normal(key, (n, n), dtype)
    q, r = jnp.linalg.qr(z)
    return q * jnp.sign(jnp.diag(r))[None, :]


def toy_quadratic(
    kind: str = "heterogeneous",
    key: jax.Array | int = 0,
    eigenvalues: Sequence[Sequence[float]] | None = None,
    dtype=jnp.float32,
) -> ToyQuadratic:
    """Builds the toy quadratic of "In Search of Adam's Secret Sauce" ('heterogeneous' or
    'homogeneous', or
    custom eigenvalues).

    Each block gets its own Haar rotation drawn from `key`. The Hessian is built in float64 numpy
    and cast, so its eigenvalues are exact to the dtype's round-off.
    """
    if eigenvalues is None:
        table = {"heterogeneous": HETEROGENEOUS, "homogeneous": HOMOGENEOUS}
        if kind not in table:
            raise ValueError(f"kind={kind!r} is invalid: use 'heterogeneous' or 'homogeneous'.")
        eigenvalues = table[kind]
    lam = np.asarray(eigenvalues, np.float64)
    if lam.ndim != 2 or np.any(lam <= 0):
        raise ValueError(f"eigenvalues must be a (blocks, k) table of positive numbers; got {lam}.")
    nb, k = lam.shape
    if isinstance(key, int):
        key = jax.random.key(key)
    keys = jax.random.split(key, nb)
    with jax.enable_x64(True):
        rots = np.stack([np.asarray(haar_orthogonal(kk, k, jnp.float64)) for kk in keys])
    d = nb * k
    h = np.zeros((d, d))
    a = np.zeros((d, d))
    for b in range(nb):
        s = slice(b * k, (b + 1) * k)
        h[s, s] = rots[b] @ np.diag(lam[b]) @ rots[b].T
        a[s, s] = rots[b] @ np.diag(np.sqrt(lam[b])) @ rots[b].T
    h = 0.5 * (h + h.T)
    a = 0.5 * (a + a.T)
    return ToyQuadratic(
        hessian=jnp.asarray(h, dtype),
        sqrt_hessian=jnp.asarray(a, dtype),
        eigenvalues=jnp.asarray(lam, dtype),
        block_of=jnp.repeat(jnp.arange(nb), k),
        rotations=jnp.asarray(rots, dtype),
    )


def quadratic_loss(q: ToyQuadratic, w: jax.Array) -> jax.Array:
    """f(w) = 1/2 w^T H w (the suboptimality: f* = 0)."""
    return 0.5 * w @ (q.hessian @ w)


def full_gradient(q: ToyQuadratic, w: jax.Array) -> jax.Array:
    """H w."""
    return q.hessian @ w


def stochastic_gradient(q: ToyQuadratic, w: jax.Array, key: jax.Array, batch_size: int):
    """(d/B) A_S^T A_S w for B rows S of A = H^(1/2) drawn uniformly without replacement."""
    d = q.sqrt_hessian.shape[0]
    if not 1 <= batch_size <= d:
        raise ValueError(f"batch_size={batch_size!r} is invalid: it must lie in [1, {d}].")
    rows = jax.random.choice(key, d, (batch_size,), replace=False)
    a_s = q.sqrt_hessian[rows]
    return (d / batch_size) * a_s.T @ (a_s @ w)


def run_quadratic(
    q: ToyQuadratic,
    make_transform: Callable[[jax.Array], optax.GradientTransformation],
    configs: Sequence[float] | Sequence[Sequence[float]] | jax.Array,
    *,
    steps: int = 1000,
    seeds: Sequence[int] = (0,),
    batch_size: int | None = None,
    w0_scale: float = 1.0,
    track_beta: float | None = None,
    record_every: int = 1,
) -> dict[str, jax.Array]:
    """Optimizes f with `make_transform(config)` for every config x seed (vmapped, one compile).

    Args:
      q: the quadratic.
      make_transform: config (a traced row of `configs`) -> optax.GradientTransformation whose
        update already includes -lr, e.g. `lambda lr: optimizers.create('signum', lr)` for a 1-D
        grid of learning rates, or `lambda c: optimizers.create('signum', c[0], beta=c[1])` for
        rows (lr, beta).
      configs: (n_configs,) or (n_configs, k) hyperparameter grid (typically learning rates).
      steps: optimization steps.
      seeds: each seed draws (numpy) w0 ~ N(0, w0_scale^2 I) and the batch rows of every step.
      batch_size: rows per stochastic gradient; None for the full (deterministic) gradient.
      track_beta: if set, also record the per-block mean of s_t^2 = v^_t - m^_t^2 from
        bias-corrected EMAs of g with this beta (exactly the variance estimate of Adam with
        b1 = b2 = track_beta on the same gradients).
      record_every: keep the loss every this many steps.

    Returns:
      dict with 'loss' (n_configs, n_seeds, steps // record_every + 1) (entry 0 is the initial
      loss), 'steps' the matching step numbers, and with track_beta 'block_var'
      (n_configs, n_seeds, steps // record_every, blocks).
    """
    if batch_size is not None and not 1 <= batch_size <= q.hessian.shape[0]:
        raise ValueError(f"batch_size={batch_size!r} is invalid: use None or [1, d].")
    if steps % record_every:
        raise ValueError(f"record_every={record_every} must divide steps={steps}.")
    cfg = jnp.asarray(configs, q.hessian.dtype)
    if cfg.ndim not in (1, 2) or cfg.shape[0] < 1:
        raise ValueError(f"configs must be (n,) or (n, k) with n >= 1, got shape {cfg.shape}.")
    nb = q.eigenvalues.shape[0]
    d = q.hessian.shape[0]

    def draws(seed):
        """w0 and every step's batch rows, drawn on the host with numpy (no RNG to compile) and
        shared by all configs (common random numbers)."""
        rng = np.random.default_rng(seed)
        w0 = w0_scale * rng.standard_normal(d)
        if batch_size is None:
            return w0, np.zeros((steps, 0), np.int32)
        rows = np.argsort(rng.random((steps, d)), axis=1)[:, :batch_size]
        return w0, rows.astype(np.int32)

    def one(c, w0, rows):
        tx = make_transform(c)

        def step(carry, xs):
            w, state, m, v = carry
            t, batch_rows = xs
            if batch_size is None:
                g = full_gradient(q, w)
            else:
                a_s = q.sqrt_hessian[batch_rows]
                g = (d / batch_size) * a_s.T @ (a_s @ w)
            u, state = tx.update(g, state, w)
            w = optax.apply_updates(w, u)
            out = {"loss": quadratic_loss(q, w)}
            if track_beta is not None:
                b = track_beta
                m = b * m + (1 - b) * g
                v = b * v + (1 - b) * g * g
                c = 1.0 - b ** t.astype(w.dtype)
                s2 = jnp.maximum(v / c - (m / c) ** 2, 0.0)
                out["block_var"] = jax.ops.segment_sum(s2, q.block_of, nb) / (d // nb)
            return (w, state, m, v), out

        z = jnp.zeros_like(w0)
        carry = (w0, tx.init(w0), z, z)
        ts = jnp.arange(1, steps + 1)
        _, ys = jax.lax.scan(step, carry, (ts, rows))
        ys = jax.tree.map(lambda y: y[record_every - 1 :: record_every], ys)
        ys["loss"] = jnp.concatenate([quadratic_loss(q, w0)[None], ys["loss"]])
        return ys

    w0s, rows = (np.stack(x) for x in zip(*(draws(int(s)) for s in seeds), strict=True))
    w0s = jnp.asarray(w0s, q.hessian.dtype)
    run = jax.jit(jax.vmap(jax.vmap(one, in_axes=(None, 0, 0)), in_axes=(0, None, None)))
    out = run(cfg, w0s, rows)
    out["steps"] = jnp.arange(0, steps + 1, record_every)
    return out
