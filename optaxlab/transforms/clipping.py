"""Coordinate-wise clipping: a fixed threshold (CClip) and adaptive ACClip ("Why Adam Beats SGD
for Attention Models")."""

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
    r"""Coordinate-wise clipping, CClip.

    .. math::
      \operatorname{CClip}(\tau, m) = \min(\tau / |m|, 1)\, m = \operatorname{clip}(m, -\tau, \tau)

    This is ``optax.clip`` under the name and threshold of "Why Adam Beats SGD for Attention
    Models" (eq. CClip). Placed after momentum it is the SGD+Cclip of "In Search of Adam's Secret
    Sauce"; placed first, on the raw gradient, it is the registry's ``coordinate_clip``.

    Args:
      threshold: tau > 0.

    Returns:
      A stateless ``optax.GradientTransformation``.

    References:
      Zhang et al., "Why are Adaptive Methods Good for Attention Models?" (published as
      "Why Adam Beats SGD for Attention Models"), NeurIPS 2020.
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
    r"""Adaptive coordinate-wise clipping, ACClip.

    .. math::
      m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
      \tau_t^\alpha = \beta_2 \tau_{t-1}^\alpha + (1-\beta_2) |g_t|^\alpha, \quad
      u_t = \min\left(\frac{\tau_t}{|m_t| + \epsilon}, 1\right) m_t

    zero-initialized and without bias correction, as in the paper's algorithm.

    Args:
      b1: momentum decay, in [0, 1).
      b2: decay of the clipping threshold's moment, in [0, 1).
      alpha: the moment order, > 0 (1 in the paper).
      eps: added to |m| in the denominator, >= 0.
      mu_dtype: dtype of the momentum (None: the gradient's).

    Returns:
      An ``optax.GradientTransformation`` with state ``ScaleByACClipState(mu, nu)``,
      nu = tau^alpha.

    References:
      Zhang et al., "Why are Adaptive Methods Good for Attention Models?" (published as
      "Why Adam Beats SGD for Attention Models"), NeurIPS 2020, Algorithm ACClip; paper settings
      b1 = 0.9, b2 = 0.99, alpha = 1, eps = 1e-5.
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
