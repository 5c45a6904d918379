"""Normalizers: the variance-mollified sign ("In Search of Adam's Secret Sauce") and LaProp's
normalize-then-momentum ("On the Distributional Properties of Adaptive Gradients")."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from optax._src import numerics, utils

from optaxlab.transforms._checks import check_decay, check_nonnegative, is_number
from optaxlab.transforms._numerics import one_minus_power
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
    r"""Variance-mollified sign: Adam with equal betas as a mollified Signum.

    .. math::
      u = \frac{m}{\sqrt{m^2 + c\, s^2 + \epsilon^2}}
        = \frac{\operatorname{sign}(m)}{\sqrt{1 + (c\, s^2 + \epsilon^2) / m^2}}

    Adaptive mode (``fixed_variance=None``): the incoming update must be a
    ``MeanVar(mean=m, var=s^2)`` pair, as emitted by ``track_gaussian_vi``; the output is a
    plain tree. Then ``chain(track_gaussian_vi(beta), scale_by_mollified_sign())`` is Adam with
    b1 = b2 = beta and eps = 0 ("Adam is a variance-mollified Signum", Section 4).
    Fixed-mollifier mode (``fixed_variance=sigma2``): the incoming update is a plain tree m
    (e.g. the output of ``ema``) and s^2 is the constant sigma2: the Signum ablation of
    Table 2 ("fixed mollifier").

    The output is odd in m, invariant to a common positive scaling of (m, s), |u| <= 1 (up to
    one float rounding), and 0 where m = s = eps = 0.

    Args:
      c: weight of the variance in the mollifier, >= 0 (c = 1: Adam; c = 0: sign(m) when
        eps = 0).
      eps: an additive mollifier eps^2, >= 0.
      fixed_variance: None (adaptive: a ``MeanVar`` input), or a constant sigma2 >= 0.

    Returns:
      A stateless ``optax.GradientTransformation`` (``optax.EmptyState``).

    References:
      Orvieto & Gower, "In Search of Adam's Secret Sauce", 2025 (eq. (2), Proposition 1,
      Table 2).
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
    r"""LaProp: normalize by the second moment first, then take momentum.

    .. math::
      n_t = \beta_2 n_{t-1} + (1-\beta_2) g_t^2, \quad
      m_t = \beta_1 m_{t-1} + (1-\beta_1) \frac{g_t}{\sqrt{n_t / c_n + \epsilon}}, \quad
      u_t = m_t / c_m

    with c_n = 1 - b2^t, c_m = 1 - b1^t (accurate in float32: -expm1(t log b)); eps sits
    inside the square root. ``nu`` is Adam's second moment, ``mu`` a momentum of *normalized*
    gradients (not a gradient mean).

    Args:
      b1: momentum decay mu, in [0, 1).
      b2: second-moment decay, in [0, 1).
      eps: added inside the square root, >= 0.
      mu_dtype: dtype of the momentum (None: the gradient's).

    Returns:
      An ``optax.GradientTransformation`` with state ``ScaleByLaPropState(count, mu, nu)``.

    References:
      Ziyin, Wang & Ueda, "LaProp: Separating Momentum and Adaptivity in Adam", 2020, in the
      form of "On the Distributional Properties of Adaptive Gradients", eq. (1)-(4).
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
        c_n = one_minus_power(b2, count_inc)
        c_m = one_minus_power(b1, count_inc)
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
