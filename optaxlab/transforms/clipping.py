"""Coordinate-wise clipping: a named fixed threshold (CClip) and adaptive ACClip (seed 003)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from optax._src import utils

from optaxlab.transforms._checks import (
    check_decay,
    check_nonnegative,
    check_positive,
    is_number,
)

Updates = Any


def clip_by_coordinate(threshold: jax.typing.ArrayLike) -> optax.GradientTransformation:
    r"""CClip(tau, m) = min(tau / |m|, 1) m = clip(m, -tau, tau), coordinate-wise.

    This is ``optax.clip`` under the name and threshold of seed 003 (Zhang et al., "Why Adam
    beats SGD for attention models", eq. CClip); placed after momentum it is seed 004's SGD+Cclip.
    """
    check_positive("threshold", threshold)
    return optax.clip(threshold)


class ScaleByACClipState(NamedTuple):
    """State of `scale_by_acclip`: the momentum ``mu`` and ``nu`` = EMA of |g|^alpha (tau^alpha)."""

    mu: Updates
    nu: Updates


def scale_by_acclip(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.99,
    alpha: jax.typing.ArrayLike = 1.0,
    eps: jax.typing.ArrayLike = 1e-5,
    mu_dtype: Any | None = None,
) -> optax.GradientTransformation:
    r"""Adaptive coordinate-wise clipping, ACClip (seed 003).

    m_t = b1 m_{t-1} + (1-b1) g_t ;  tau_t^alpha = b2 tau_{t-1}^alpha + (1-b2) |g_t|^alpha ;
    u_t = min(tau_t / (|m_t| + eps), 1) m_t, zero-initialized and without bias correction as
    in the paper. State: ``ScaleByACClipState(mu, nu)`` with nu = tau^alpha.

    Reference: Zhang et al., "Why are adaptive methods good for attention models?" / "Why Adam
    beats SGD for attention models" (2020), eq. (ACClip); paper settings b1=0.9, b2=0.99,
    alpha=1, eps=1e-5.
    """
    check_decay("b1", b1)
    check_decay("b2", b2)
    check_positive("alpha", alpha)
    check_nonnegative("eps", eps)
    mu_dtype = utils.canonicalize_dtype(mu_dtype)
    static_alpha = float(alpha) if is_number(alpha) else None

    def abs_pow(g):
        if static_alpha == 1.0:
            return jnp.abs(g)
        if static_alpha == 2.0:
            return g * g
        return jnp.abs(g) ** alpha

    def root(n):
        if static_alpha == 1.0:
            return n
        if static_alpha == 2.0:
            return jnp.sqrt(n)
        return n ** (1 / alpha)

    def init_fn(params):
        return ScaleByACClipState(
            mu=optax.tree.zeros_like(params, dtype=mu_dtype), nu=optax.tree.zeros_like(params)
        )

    def update_fn(updates, state, params=None):
        del params
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = jax.tree.map(lambda g, t: (1 - b2) * abs_pow(g) + b2 * t, updates, state.nu)
        updates = jax.tree.map(
            lambda m, n: jnp.minimum(root(n) / (jnp.abs(m) + eps), 1) * m, mu, nu
        )
        return updates, ScaleByACClipState(
            mu=optax.tree.cast(mu, mu_dtype), nu=optax.tree.cast_like(nu, state.nu)
        )

    return optax.GradientTransformation(init_fn, update_fn)
