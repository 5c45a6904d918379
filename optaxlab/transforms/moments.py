"""Moment estimators: EMA / trace with gradient init, Adam without bias correction, Gaussian VI.

Everything here extends an optax transform by a keyword optax lacks and *delegates to optax*
whenever that keyword is at optax's behaviour, so the default path is optax's own code:

- `ema(decay, debias, accumulator_dtype, init=)`: `optax.ema` plus gradient initialization.
- `trace(decay, nesterov, accumulator_dtype, dampening=)`: `optax.trace` plus torch's dampening.
- `scale_by_adam(..., bias_correction=, init=)`: `optax.scale_by_adam` plus the seed-004 ablations.
- `track_gaussian_vi(beta, debias, init)`: the online Gaussian mean/variance tracker of
  seed 004 (Theorem 4.1). It emits a `MeanVar(mean, var)` pair of trees that
  `optaxlab.transforms.scale_by_mollified_sign` consumes (see the package docstring).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from optax._src import numerics, utils

from optaxlab.transforms._checks import check_decay, check_init

Updates = Any


def _ema_or_first(g, t, decay, first):
    """(1 - decay) g + decay t, or g itself on the first step of a gradient-initialized EMA."""
    new = (1 - decay) * g + decay * t
    return new if first is None else jnp.where(first, g.astype(new.dtype), new)


def ema(
    decay: jax.typing.ArrayLike,
    debias: bool = True,
    accumulator_dtype: Any | None = None,
    *,
    init: str = "zero",
) -> optax.GradientTransformation:
    r"""Exponential moving average with zero or gradient initialization.

    m_t = decay m_{t-1} + (1 - decay) g_t, with m_0 = 0 (``init='zero'``, optax's ``ema``) or
    m_1 = g_1 (``init='first'``: gradient initialization, "GI" in seed 004, Section 3.3 and
    App. B.5). ``debias`` divides by 1 - decay^t and is only meaningful with zero init (a
    gradient-initialized EMA is unbiased from the first step; asking for both raises).

    State: ``optax.EmaState(count, ema)`` in both modes.
    """
    check_decay("decay", decay)
    check_init(init, debias)
    if init == "zero":
        return optax.ema(decay, debias=debias, accumulator_dtype=accumulator_dtype)
    accumulator_dtype = utils.canonicalize_dtype(accumulator_dtype)

    def init_fn(params):
        return optax.EmaState(
            count=jnp.zeros([], jnp.int32),
            ema=optax.tree.zeros_like(params, dtype=accumulator_dtype),
        )

    def update_fn(updates, state, params=None):
        del params
        first = state.count == 0
        new_ema = jax.tree.map(lambda g, t: _ema_or_first(g, t, decay, first), updates, state.ema)
        count_inc = numerics.safe_increment(state.count)
        return new_ema, optax.EmaState(count_inc, optax.tree.cast(new_ema, accumulator_dtype))

    return optax.GradientTransformation(init_fn, update_fn)


class DampenedTraceState(NamedTuple):
    """State of `trace` with dampening: the step count and the momentum buffer."""

    count: jax.Array  # shape=(), dtype=jnp.int32.
    trace: Updates


def trace(
    decay: jax.typing.ArrayLike,
    nesterov: bool = False,
    accumulator_dtype: Any | None = None,
    *,
    dampening: jax.typing.ArrayLike = 0.0,
) -> optax.GradientTransformation:
    r"""Heavy-ball momentum with ``torch.optim.SGD`` semantics (dampening, nesterov).

    b_1 = g_1 ; b_t = decay b_{t-1} + (1 - dampening) g_t ; u_t = b_t, or g_t + decay b_t when
    ``nesterov``. With ``dampening=0`` (a Python number) this *is* ``optax.trace``
    (state ``optax.TraceState``); otherwise the state is ``DampenedTraceState(count, trace)``
    because torch initializes the buffer with the undampened gradient.
    """
    check_decay("momentum", decay)
    if isinstance(dampening, (int, float)) and dampening == 0:
        return optax.trace(decay, nesterov=nesterov, accumulator_dtype=accumulator_dtype)
    if nesterov and isinstance(dampening, (int, float)):  # (an injected array can't be checked)
        raise ValueError(
            f"nesterov=True needs dampening=0 (torch semantics), got dampening={dampening!r}."
        )
    check_decay("dampening", dampening)
    accumulator_dtype = utils.canonicalize_dtype(accumulator_dtype)

    def init_fn(params):
        return DampenedTraceState(
            count=jnp.zeros([], jnp.int32),
            trace=optax.tree.zeros_like(params, dtype=accumulator_dtype),
        )

    def update_fn(updates, state, params=None):
        del params
        first = state.count == 0

        def step(g, t):
            new = decay * t + (1 - dampening) * g
            return jnp.where(first, g.astype(new.dtype), new)

        new_trace = jax.tree.map(step, updates, state.trace)
        if nesterov:
            updates = jax.tree.map(lambda g, t: g + decay * t, updates, new_trace)
        else:
            updates = new_trace
        count_inc = numerics.safe_increment(state.count)
        return updates, DampenedTraceState(
            count_inc, optax.tree.cast(new_trace, accumulator_dtype)
        )

    return optax.GradientTransformation(init_fn, update_fn)


def scale_by_adam(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = False,
    bias_correction: bool = True,
    init: str = "zero",
) -> optax.GradientTransformation:
    r"""``optax.scale_by_adam`` plus the seed-004 ablations (bias correction off, gradient init).

    m_t = b1 m_{t-1} + (1-b1) g_t, v_t = b2 v_{t-1} + (1-b2) g_t^2,
    u_t = m^_t / (sqrt(v^_t + eps_root) + eps) with m^ = m / (1 - b1^t), v^ = v / (1 - b2^t)
    when ``bias_correction`` (then this *is* ``optax.scale_by_adam``), else m^ = m, v^ = v.
    ``init='first'`` sets m_1 = g_1, v_1 = g_1^2 (GI; requires ``bias_correction=False``).
    State: ``optax.ScaleByAdamState(count, mu, nu)`` in every mode.

    Reference: Kingma & Ba, Adam (2015); Orvieto & Gower, In Search of Adam's Secret Sauce,
    App. B.5 (ZI/GI, with/without bias correction).
    """
    check_decay("b1", b1)
    check_decay("b2", b2)
    check_init(init, bias_correction)
    if bias_correction:
        return optax.scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov)
    mu_dtype = utils.canonicalize_dtype(mu_dtype)

    def init_fn(params):
        return optax.ScaleByAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=optax.tree.zeros_like(params, dtype=mu_dtype),
            nu=optax.tree.zeros_like(params),
        )

    def update_fn(updates, state, params=None):
        del params
        first = (state.count == 0) if init == "first" else None
        mu = jax.tree.map(lambda g, t: _ema_or_first(g, t, b1, first), updates, state.mu)
        nu = jax.tree.map(lambda g, t: _ema_or_first(g * g, t, b2, first), updates, state.nu)
        if nesterov:
            mu_hat = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, mu, updates)
        else:
            mu_hat = mu
        updates = jax.tree.map(lambda m, v: m / (jnp.sqrt(v + eps_root) + eps), mu_hat, nu)
        count_inc = numerics.safe_increment(state.count)
        mu = optax.tree.cast(mu, mu_dtype)
        nu = optax.tree.cast_like(nu, state.nu)
        return updates, optax.ScaleByAdamState(count=count_inc, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


class MeanVar(NamedTuple):
    """A (mean, variance) pair of parameter-shaped trees, passed as the *update* from a
    moment tracker to a normalizer (see the ``optaxlab.transforms`` docstring)."""

    mean: Updates
    var: Updates


class GaussianVIState(NamedTuple):
    """State of `track_gaussian_vi`: step count, tracked mean m_t and variance s_t^2.

    Both are the raw (not bias-corrected) recursions of seed 004, Proposition 1 / Theorem 4.1;
    with zero init, m_t and s_t^2 + m_t^2 equal Adam's ``mu`` and ``nu`` for b1 = b2 = beta.
    """

    count: jax.Array  # shape=(), dtype=jnp.int32.
    mean: Updates
    var: Updates


def track_gaussian_vi(
    beta: jax.typing.ArrayLike = 0.95,
    debias: bool = True,
    *,
    init: str = "zero",
    accumulator_dtype: Any | None = None,
) -> optax.GradientTransformation:
    r"""Online Gaussian variational tracker of the gradient's mean and variance (seed 004).

    m_t   = beta m_{t-1} + (1 - beta) g_t
    s_t^2 = beta s_{t-1}^2 + beta (1 - beta) (g_t - m_{t-1})^2
    is the exact minimizer of -log N(g_t; m, s^2) + (1/lam) KL(N(m_{t-1}, s_{t-1}^2) || N(m, s^2))
    with beta = 1/(1 + lam) (Theorem 4.1), and s_t^2 = v_t - m_t^2 for Adam's v with b2 = beta
    (Proposition 1). ``init='zero'``: m_0 = s_0^2 = 0; ``init='first'``: m_1 = g_1, s_1^2 = 0.

    The *update* this transform emits is ``MeanVar(mean, var)``: with ``debias`` the
    bias-corrected m^ = m/c_t and s^^2 = v^ - m^^2 = (m^2 + s^2)/c_t - m^^2 (c_t = 1 - beta^t,
    clamped at 0 against round-off), else (m_t, s_t^2). Feed it to a normalizer such as
    ``scale_by_mollified_sign``. The state ``GaussianVIState(count, mean, var)`` holds the raw
    recursion, readable for logging.

    Reference: Orvieto & Gower, In Search of Adam's Secret Sauce (2025), Prop. 1 and Thm. 4.1.
    """
    check_decay("beta", beta)
    check_init(init, debias)
    accumulator_dtype = utils.canonicalize_dtype(accumulator_dtype)

    def init_fn(params):
        return GaussianVIState(
            count=jnp.zeros([], jnp.int32),
            mean=optax.tree.zeros_like(params, dtype=accumulator_dtype),
            var=optax.tree.zeros_like(params, dtype=accumulator_dtype),  # own buffers (donation)
        )

    def update_fn(updates, state, params=None):
        del params
        first = (state.count == 0) if init == "first" else None

        def step_mean(g, m):
            return _ema_or_first(g, m, beta, first)

        def step_var(g, m, s):
            d = g - m
            new = beta * s + beta * (1 - beta) * (d * d)
            return new if first is None else jnp.where(first, jnp.zeros_like(new), new)

        mean = jax.tree.map(step_mean, updates, state.mean)
        var = jax.tree.map(step_var, updates, state.mean, state.var)
        count_inc = numerics.safe_increment(state.count)
        if debias:
            # m^ = m/c, s^^2 = (m^2 + s^2)/c - m^2/c^2 = s^2/c - m^2 (1/c)(1/c - 1), c = 1 - beta^t:
            # scalar factors, so the per-coordinate work is a few multiplies (no divisions)
            inv_c = 1 / (1 - beta**count_inc)
            k = inv_c * (inv_c - 1)

            def var_hat(m, s):
                return jnp.maximum(s * inv_c.astype(s.dtype) - (m * m) * k.astype(m.dtype), 0)

            out = MeanVar(
                mean=jax.tree.map(lambda m: m * inv_c.astype(m.dtype), mean),
                var=jax.tree.map(var_hat, mean, var),
            )
        else:
            out = MeanVar(mean=mean, var=var)
        new_state = GaussianVIState(
            count=count_inc,
            mean=optax.tree.cast(mean, accumulator_dtype),
            var=optax.tree.cast(var, accumulator_dtype),
        )
        return out, new_state

    return optax.GradientTransformation(init_fn, update_fn)
