"""Normalizers: the variance-mollified sign (seed 004) and LaProp's normalize-then-momentum."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from optax._src import numerics, utils

from optaxlab.transforms._checks import check_decay, check_nonnegative, is_number
from optaxlab.transforms.moments import MeanVar

Updates = Any


def _mollified(m, mollifier):
    """m / sqrt(m^2 + mollifier), with 0/0 := 0 (so a zero input gives a zero output)."""
    x = m * m + mollifier
    # x < tiny (the smallest normal number) only where |m| < sqrt(tiny): clamping x there keeps
    # |u| < 1 and gives u = 0 at m = 0 (one max instead of a compare and a select). |u| <= 1
    # holds up to one rounding: at s^2 = 0, u = sign(m) (1 +- 2^-23) on XLA CPU, whose sqrt /
    # rsqrt / division are not all correctly rounded (the same holds for optax.adam, eps = 0).
    return m * jax.lax.rsqrt(jnp.maximum(x, jnp.finfo(x.dtype).tiny))


def scale_by_mollified_sign(
    c: jax.typing.ArrayLike = 1.0,
    eps: jax.typing.ArrayLike = 0.0,
    *,
    fixed_variance: jax.typing.ArrayLike | None = None,
) -> optax.GradientTransformation:
    r"""Variance-mollified sign: u = m / sqrt(m^2 + c s^2 + eps^2) = sign(m) / sqrt(1 + c s^2/m^2).

    Adaptive mode (``fixed_variance=None``): the incoming update must be a
    ``MeanVar(mean=m, var=s^2)`` pair, as emitted by ``track_gaussian_vi``; the output is a
    plain tree. Then ``chain(track_gaussian_vi(beta), scale_by_mollified_sign())`` is Adam with
    b1 = b2 = beta and eps = 0 (seed 004, Section 4: "Adam is a variance-mollified Signum").
    Fixed-mollifier mode (``fixed_variance=sigma2``): the incoming update is a plain tree m
    (e.g. the output of ``ema``) and s^2 is the constant sigma2: the seed-004 Signum ablation.

    The output is odd in m, invariant to a common positive scaling of (m, s), |u| <= 1 (up to
    one float rounding), and 0 where m = s = eps = 0. Stateless (``optax.EmptyState``).

    Reference: Orvieto & Gower, In Search of Adam's Secret Sauce (2025), eq. (2), Prop. 1.
    """
    check_nonnegative("c", c)
    check_nonnegative("eps", eps)
    if fixed_variance is not None:
        check_nonnegative("fixed_variance", fixed_variance)

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        if fixed_variance is not None:
            mollifier = c * fixed_variance + eps * eps
            return jax.tree.map(lambda m: _mollified(m, mollifier), updates), state
        if not isinstance(updates, MeanVar):
            raise ValueError(
                "scale_by_mollified_sign() without fixed_variance expects a MeanVar(mean, var) "
                f"update from a tracker such as track_gaussian_vi(); got {type(updates).__name__}."
                " Put the tracker immediately before it in the chain, or pass fixed_variance."
            )

        def adaptive(m, s2):
            mollifier = s2 if is_number(c) and c == 1 else c * s2
            if not (is_number(eps) and eps == 0):
                mollifier = mollifier + eps * eps
            return _mollified(m, mollifier)

        u = jax.tree.map(adaptive, updates.mean, updates.var)
        return u, state

    return optax.GradientTransformation(init_fn, update_fn)


class ScaleByLaPropState(NamedTuple):
    """State of `scale_by_laprop`: count, momentum of the normalized gradient, second moment."""

    count: jax.Array  # shape=(), dtype=jnp.int32.
    mu: Updates
    nu: Updates


def scale_by_laprop(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-15,
    mu_dtype: Any | None = None,
) -> optax.GradientTransformation:
    r"""LaProp: normalize by the second moment first, then take momentum (seed 000, eq. 1-4).

    n_t = b2 n_{t-1} + (1-b2) g_t^2 ;
    m_t = b1 m_{t-1} + (1-b1) g_t / sqrt(n_t / c_n + eps) ;  u_t = m_t / c_m,
    with c_n = 1 - b2^t, c_m = 1 - b1^t (eps sits inside the square root).
    State: ``ScaleByLaPropState(count, mu, nu)``; ``nu`` is Adam's second moment, ``mu`` a
    momentum of *normalized* gradients (not a gradient mean).

    Reference: Ziyin, Wang & Ueda, LaProp (2020), in the form of "On the Distributional
    Properties of Adaptive Gradients" (seed 000), eq. (1)-(4).
    """
    check_decay("b1", b1)
    check_decay("b2", b2)
    check_nonnegative("eps", eps)
    mu_dtype = utils.canonicalize_dtype(mu_dtype)

    def init_fn(params):
        return ScaleByLaPropState(
            count=jnp.zeros([], jnp.int32),
            mu=optax.tree.zeros_like(params, dtype=mu_dtype),
            nu=optax.tree.zeros_like(params),
        )

    def update_fn(updates, state, params=None):
        del params
        count_inc = numerics.safe_increment(state.count)
        c_n = 1 - b2**count_inc
        c_m = 1 - b1**count_inc
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        mu = jax.tree.map(
            lambda g, n, t: (1 - b1) * (g / jnp.sqrt(n / c_n.astype(n.dtype) + eps)) + b1 * t,
            updates,
            nu,
            state.mu,
        )
        updates = jax.tree.map(lambda t: t / c_m.astype(t.dtype), mu)
        return updates, ScaleByLaPropState(
            count=count_inc,
            mu=optax.tree.cast(mu, mu_dtype),
            nu=optax.tree.cast_like(nu, state.nu),
        )

    return optax.GradientTransformation(init_fn, update_fn)
