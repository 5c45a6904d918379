"""Moment estimators: EMA / trace with gradient init, Adam, RMSprop and RAdam with accurate bias
corrections, and the online Gaussian (VI) mean/variance tracker.

Everything here extends an optax transform by a keyword optax lacks, or recomputes its bias
correction accurately, and keeps optax's state types (so optax's tools and optaxlab's monitor
read them unchanged):

- `ema(decay, debias, accumulator_dtype, init=)`: ``optax.ema`` plus gradient initialization.
- `trace(decay, nesterov, accumulator_dtype, dampening=)`: ``optax.trace`` plus torch's dampening.
- `scale_by_adam(..., bias_correction=, init=)`: ``optax.scale_by_adam`` plus the ablations of
  "In Search of Adam's Secret Sauce" (no bias correction, gradient init).
- `scale_by_rms(decay, eps, bias_correction)`: RMSprop as Adam with b1 = 0 (one buffer).
- `scale_by_radam(...)`: ``optax.scale_by_radam``.
- `track_gaussian_vi(beta, debias, init)`: the online Gaussian mean/variance tracker of
  "In Search of Adam's Secret Sauce" (Theorem 4.1). It emits a `MeanVar(mean, var)` pair of trees
  that `optaxlab.transforms.scale_by_mollified_sign` consumes (see the package docstring).

Why our own Adam / RMSprop / RAdam rather than optax's: optax computes the bias correction
1 - b^t in float32 as ``1 - b**t``, which is ~1e-5 relatively off at b = 0.999 and makes RAdam's
rectification ~1% off at its first rectified steps (see ``_numerics.py`` and the precision table
of ``experiments/benchmarks/bench_transforms.py --precision``). Everything else (the moment
recursions, the order of operations, the state types) is optax's, so where optax's correction is
accurate the updates agree with optax to float32 round-off.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from optax._src import numerics, utils
from optax._src.transform import ScaleByRmsWithCountState

# Argument checks. These transforms are public API (``optaxlab.transforms``, used directly in
# user chains), so each keeps one check per value; the checks are the rule functions of
# ``_checks``, the very ones the optimizer registry's table maps its keywords to, so each rule's
# text lives in one place. Built through the registry, a value is checked by the registry first
# (``optaxlab.optimizers.check``, which builds nothing) and again here by the same function.
from optaxlab.transforms._checks import (
    check_decay,
    check_init,
    check_nesterov_dampening,
    check_nonnegative,
    is_host_number,
)
from optaxlab.transforms._numerics import (
    compute_dtype,
    host_float,
    log_decay,
    one_minus_power,
)

Updates = Any


def _ema_or_first(g, t, decay, first):
    """(1 - decay) g + decay t, or g itself on the first step of a gradient-initialized EMA."""
    new = (1 - decay) * g + decay * t
    return new if first is None else jnp.where(first, g.astype(new.dtype), new)


def _divide(tree, c):
    """tree / c, a scalar cast to each leaf's dtype (optax's bias-correction division)."""
    return jax.tree.map(lambda t: t / c.astype(t.dtype), tree)


def ema(
    decay: jax.typing.ArrayLike,
    debias: bool = True,
    accumulator_dtype: Any | None = None,
    *,
    init: str = "zero",
) -> optax.GradientTransformation:
    r"""Exponential moving average with zero or gradient initialization.

    .. math::
      m_t = \beta m_{t-1} + (1 - \beta) g_t, \qquad
      \hat m_t = m_t / (1 - \beta^t) \text{ if debias}

    with m_0 = 0 (``init='zero'``, ``optax.ema``) or m_1 = g_1 (``init='first'``: gradient
    initialization, "GI" in "In Search of Adam's Secret Sauce", Section 3.3 and App. B.5). A
    gradient-initialized EMA is unbiased from the first step, so asking for both raises. Without
    ``debias`` and with zero init this *is* ``optax.ema``; the debiased form computes
    1 - beta^t accurately in float32 (see the module docstring).

    Args:
      decay: the decay rate beta in [0, 1).
      debias: divide by 1 - beta^t (zero init only).
      accumulator_dtype: dtype of the stored average (None: the gradient's).
      init: 'zero' (ZI) or 'first' (GI).

    Returns:
      An ``optax.GradientTransformation`` with state ``optax.EmaState(count, ema)``; its update
      is the (debiased) average.

    References:
      Orvieto & Gower, "In Search of Adam's Secret Sauce", 2025 (App. B.5: ZI / GI).
    """
    check_decay("decay", decay)
    check_init(init, debias)
    if init == "zero" and not debias:
        return optax.ema(decay, debias=False, accumulator_dtype=accumulator_dtype)
    decay = host_float(decay)
    accumulator_dtype = utils.canonicalize_dtype(accumulator_dtype)

    def init_fn(params):
        return optax.EmaState(
            count=jnp.zeros([], jnp.int32),
            ema=optax.tree.zeros_like(params, dtype=accumulator_dtype),
        )

    def update_fn(updates, state, params=None):
        del params
        first = (state.count == 0) if init == "first" else None
        new_ema = jax.tree.map(lambda g, t: _ema_or_first(g, t, decay, first), updates, state.ema)
        count_inc = numerics.safe_increment(state.count)
        out = _divide(new_ema, one_minus_power(decay, count_inc)) if debias else new_ema
        return out, optax.EmaState(count_inc, optax.tree.cast(new_ema, accumulator_dtype))

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

    .. math::
      b_1 = g_1, \qquad b_t = \mu b_{t-1} + (1 - \tau) g_t, \qquad
      u_t = b_t \text{ or } g_t + \mu b_t \text{ (nesterov)}

    With ``dampening=0`` (a Python number) this *is* ``optax.trace`` (state
    ``optax.TraceState``); otherwise the state is ``DampenedTraceState(count, trace)`` because
    torch initializes the buffer with the undampened gradient.

    Args:
      decay: the momentum mu in [0, 1).
      nesterov: Nesterov momentum (needs ``dampening=0``, as in torch).
      accumulator_dtype: dtype of the momentum buffer (None: the gradient's).
      dampening: tau in [0, 1].

    Returns:
      An ``optax.GradientTransformation``.

    References:
      Sutskever et al., "On the importance of initialization and momentum in deep learning",
      2013; ``torch.optim.SGD``.
    """
    check_decay("momentum", decay)
    if isinstance(dampening, (int, float)) and dampening == 0:
        return optax.trace(decay, nesterov=nesterov, accumulator_dtype=accumulator_dtype)
    check_nesterov_dampening(nesterov, dampening)
    check_decay("dampening", dampening, closed=True)
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
    r"""Adam's rescaling (``optax.scale_by_adam``) with accurate bias correction, and the
    Secret-Sauce ablations (bias correction off, gradient initialization).

    .. math::
      m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,
      \quad u_t = \frac{\hat m_t}{\sqrt{\hat v_t + \epsilon_{root}} + \epsilon}

    with :math:`\hat m_t = m_t / (1-\beta_1^t)`, :math:`\hat v_t = v_t / (1-\beta_2^t)` when
    ``bias_correction`` (1 - b^t computed as -expm1(t log b): accurate in float32, where optax's
    ``1 - b**t`` is ~1e-5 off at b = 0.999), else :math:`\hat m = m, \hat v = v`.
    ``nesterov`` uses :math:`\beta_1 \hat m_{t} + (1-\beta_1) \hat g_t` (optax's NAdam form).
    ``init='first'`` sets m_1 = g_1, v_1 = g_1^2 (GI; requires ``bias_correction=False``).

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator outside the square root.
      eps_root: added inside the square root.
      mu_dtype: dtype of the first moment (None: the gradient's).
      nesterov: NAdam's Nesterov momentum.
      bias_correction: divide the moments by 1 - b^t.
      init: 'zero' (ZI) or 'first' (GI).

    Returns:
      An ``optax.GradientTransformation`` with state ``optax.ScaleByAdamState(count, mu, nu)``.

    References:
      Kingma & Ba, "Adam: A Method for Stochastic Optimization", 2015;
      Dozat, "Incorporating Nesterov Momentum into Adam", 2016;
      Orvieto & Gower, "In Search of Adam's Secret Sauce", 2025 (App. B.5: ZI / GI, with and
      without bias correction).
    """
    check_decay("b1", b1)
    check_decay("b2", b2)
    check_nonnegative("eps", eps)
    check_nonnegative("eps_root", eps_root)
    check_init(init, bias_correction)
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
        count_inc = numerics.safe_increment(state.count)
        if bias_correction:
            c1 = one_minus_power(b1, count_inc)
            if nesterov:
                c1_next = one_minus_power(b1, numerics.safe_increment(count_inc))
                mu_hat = jax.tree.map(
                    lambda m, g: b1 * m + (1 - b1) * g, _divide(mu, c1_next), _divide(updates, c1)
                )
            else:
                mu_hat = _divide(mu, c1)
            nu_hat = _divide(nu, one_minus_power(b2, count_inc))
        else:
            if nesterov:
                mu_hat = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, mu, updates)
            else:
                mu_hat = mu
            nu_hat = nu
        updates = jax.tree.map(lambda m, v: m / (jnp.sqrt(v + eps_root) + eps), mu_hat, nu_hat)
        mu = optax.tree.cast(mu, mu_dtype)
        nu = optax.tree.cast_like(nu, state.nu)
        return updates, optax.ScaleByAdamState(count=count_inc, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def scale_by_rms(
    decay: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    bias_correction: bool = True,
) -> optax.GradientTransformation:
    r"""RMSprop's rescaling, eps outside the square root: Adam with b1 = 0 in one buffer.

    .. math::
      v_t = \beta v_{t-1} + (1-\beta) g_t^2, \qquad u_t = g_t / (\sqrt{\hat v_t} + \epsilon)

    with :math:`\hat v_t = v_t / (1 - \beta^t)` (accurate in float32) when ``bias_correction``
    (= ``torch.optim.AdamW(betas=(0, beta))``), else :math:`\hat v = v`
    (= ``torch.optim.RMSprop(alpha=beta)``, which is ``optax.scale_by_rms(decay, eps,
    eps_in_sqrt=False)`` and delegated to it).

    Args:
      decay: beta in [0, 1).
      eps: added to the denominator outside the square root.
      bias_correction: divide v by 1 - beta^t.

    Returns:
      An ``optax.GradientTransformation``; state ``ScaleByRmsWithCountState(count, nu)`` (optax's)
      with bias correction, ``optax.ScaleByRmsState(nu)`` without.

    References:
      Tieleman & Hinton, "Lecture 6.5 - RMSprop", COURSERA: Neural Networks for Machine
      Learning, 2012; Orvieto & Gower, "In Search of Adam's Secret Sauce", 2025 (RMSprop as
      Adam with b1 = 0).
    """
    check_decay("b2", decay)
    check_nonnegative("eps", eps)
    if not bias_correction:
        return optax.scale_by_rms(
            decay=decay, eps=eps, initial_scale=0.0, eps_in_sqrt=False, bias_correction=False
        )

    def init_fn(params):
        return ScaleByRmsWithCountState(
            count=jnp.zeros([], jnp.int32), nu=optax.tree.zeros_like(params)
        )

    def update_fn(updates, state, params=None):
        del params
        nu = jax.tree.map(lambda g, t: (1 - decay) * (g * g) + decay * t, updates, state.nu)
        count_inc = numerics.safe_increment(state.count)
        nu_hat = _divide(nu, one_minus_power(decay, count_inc))
        updates = jax.tree.map(lambda g, n: (1 / (jnp.sqrt(n) + eps)) * g, updates, nu_hat)
        return updates, ScaleByRmsWithCountState(count=count_inc, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


# Bernoulli-number coefficients 2 B_n / n! (n = 2, 4, ..., 12) of the series of RAdam's rho_t.
_RHO_SERIES = (1 / 6, -1 / 360, 1 / 15120, -1 / 604800, 1 / 23950080, -691 / 653837184000)


def _radam_rho(b2: Any, count: jax.Array) -> tuple[jax.Array, jax.Array]:
    r"""(rho_t, rho_inf) of RAdam without cancellation.

    rho_t = rho_inf - 2 t b^t / (1 - b^t) with rho_inf = 2 / (1 - b) - 1. With L = -log b and
    y = t L, B(z) = z / (e^z - 1) = sum_n B_n z^n / n!:  rho_t = (2/L) (B(-L) - B(y)) - 1
    = t + sum_{n even} (2 B_n / n!) (L^{n-1} - t y^{n-1}), used for y <= 1 (truncation error
    < 1e-12 relative); the direct form (no cancellation left there) above.
    """
    dtype = compute_dtype()
    t = count.astype(dtype)
    L = -log_decay(b2)
    y = t * L
    if is_host_number(b2):
        rho_inf = jnp.asarray(2.0 / (1.0 - float(b2)) - 1.0, dtype)
    else:
        rho_inf = 2.0 / (1.0 - jnp.asarray(b2, dtype)) - 1.0
    series = t
    for k, coef in enumerate(_RHO_SERIES):
        n = 2 * k + 2
        series = series + coef * (L ** (n - 1) - t * y ** (n - 1))
    direct = rho_inf - 2.0 * t / jnp.expm1(jnp.maximum(y, 1e-30))
    return jnp.where(y <= 1.0, series, direct), rho_inf


def scale_by_radam(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    threshold: jax.typing.ArrayLike = 5.0,
    *,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    r"""Rectified Adam (``optax.scale_by_radam``) with accurate bias corrections and rho_t.

    .. math::
      \rho_\infty = \frac{2}{1-\beta_2} - 1, \quad
      \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1 - \beta_2^t}, \quad
      r_t = \sqrt{\frac{(\rho_t - 4)(\rho_t - 2)\rho_\infty}
                       {(\rho_\infty - 4)(\rho_\infty - 2)\rho_t}}

    and u_t = r_t m^_t / (sqrt(v^_t + eps_root) + eps) when rho_t >= threshold, else m^_t
    (Adam's moments and bias corrections). In float32 optax's rho_t subtracts two numbers near
    2/(1 - b2) and is off by ~1% in r_t at the first rectified steps (defaults: step 6 gives
    -0.025523 for a unit gradient and learning rate, exact -0.025823); here rho_t comes from a
    cancellation-free series (see `_radam_rho`) and every 1 - b^t from -expm1(t log b).

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator outside the square root.
      eps_root: added inside the square root.
      threshold: rectify when rho_t >= threshold (optax's convention; 5 by default).
      nesterov: NAdam-style Nesterov momentum.

    Returns:
      An ``optax.GradientTransformation`` with state ``optax.ScaleByAdamState(count, mu, nu)``.

    References:
      Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020.
    """
    check_decay("b1", b1)
    check_decay("b2", b2)
    check_nonnegative("eps", eps)
    check_nonnegative("eps_root", eps_root)

    def init_fn(params):
        return optax.ScaleByAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=optax.tree.zeros_like(params),
            nu=optax.tree.zeros_like(params),
        )

    def update_fn(updates, state, params=None):
        del params
        mu = jax.tree.map(lambda g, t: (1 - b1) * g + b1 * t, updates, state.mu)
        nu = jax.tree.map(lambda g, t: (1 - b2) * (g * g) + b2 * t, updates, state.nu)
        count_inc = numerics.safe_increment(state.count)
        c1 = one_minus_power(b1, count_inc)
        if nesterov:
            c1_next = one_minus_power(b1, numerics.safe_increment(count_inc))
            mu_hat = jax.tree.map(
                lambda m, g: b1 * m + (1 - b1) * g, _divide(mu, c1_next), _divide(updates, c1)
            )
        else:
            mu_hat = _divide(mu, c1)
        nu_hat = _divide(nu, one_minus_power(b2, count_inc))
        rho, rho_inf = _radam_rho(b2, count_inc)
        rect = (rho - 4.0) * (rho - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho)
        r = jnp.sqrt(jnp.maximum(rect, 0.0))
        rectified = rho >= threshold
        updates = jax.tree.map(
            lambda m, v: jnp.where(
                rectified, r.astype(m.dtype) * m / (jnp.sqrt(v + eps_root) + eps), m
            ),
            mu_hat,
            nu_hat,
        )
        return updates, optax.ScaleByAdamState(count=count_inc, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


class MeanVar(NamedTuple):
    """A (mean, variance) pair of parameter-shaped trees, passed as the *update* from a
    moment tracker to a normalizer (see the ``optaxlab.transforms`` docstring)."""

    mean: Updates
    var: Updates


class GaussianVIState(NamedTuple):
    """State of `track_gaussian_vi`: step count, tracked mean m_t and raw second moment
    v_t = s_t^2 + m_t^2; the tracked variance s_t^2 is the property ``var``.

    Both are the raw (not bias-corrected) recursions of "In Search of Adam's Secret Sauce"; with
    zero init, ``mean`` and ``nu`` are Adam's ``mu`` and ``nu`` for b1 = b2 = beta
    (Proposition 1).
    """

    count: jax.Array  # shape=(), dtype=jnp.int32.
    mean: Updates
    nu: Updates

    @property
    def var(self) -> Updates:
        """The tracked variance s_t^2 = v_t - m_t^2 (Proposition 1), clamped at 0: absolute
        error ~ eps * v_t from the subtraction (relative error eps * (1 + m^2/s^2))."""
        return jax.tree.map(_variance, self.mean, self.nu)


def _variance(m, v):
    """s^2 = v - m^2, clamped at 0 against round-off."""
    return jnp.maximum(v - m * m, 0)


def track_gaussian_vi(
    beta: jax.typing.ArrayLike = 0.95,
    debias: bool = True,
    *,
    init: str = "zero",
    accumulator_dtype: Any | None = None,
) -> optax.GradientTransformation:
    r"""Online Gaussian variational tracker of the gradient's mean and variance.

    .. math::
      m_t = \beta m_{t-1} + (1 - \beta) g_t, \qquad
      s_t^2 = \beta s_{t-1}^2 + \beta (1 - \beta) (g_t - m_{t-1})^2

    is the exact minimizer of
    :math:`-\log N(g_t; m, s^2) + \frac{1}{\lambda} KL(N(m_{t-1}, s_{t-1}^2) \| N(m, s^2))` with
    beta = 1/(1 + lambda) (Theorem 4.1), and :math:`s_t^2 = v_t - m_t^2` for Adam's
    :math:`v_t = \beta v_{t-1} + (1-\beta) g_t^2` with b2 = beta (Proposition 1; the identity
    holds step by step from any (m, s^2), so also for gradient init). ``init='zero'``:
    m_0 = s_0^2 = 0; ``init='first'``: m_1 = g_1, s_1^2 = 0.

    The state stores m_t and v_t and derives s_t^2 = v_t - m_t^2 (``state.var``). Measured
    reason: XLA:CPU has no multi-output fusion, so storing s_t^2 makes its update read m as well
    as g and s (one more pass over memory than Adam's v): ``adam_equal_betas`` took 1.11x
    ``optax.adam(b1=b2, eps=0)`` that way, 1.01x this way (bench_transforms.py, 21M parameters).
    The price is float32 cancellation in s^2 where m^2 >> s^2 (absolute error ~ eps * v_t);
    the update m / sqrt(m^2 + s^2) = m / sqrt(v) does not suffer from it.

    The *update* this transform emits is ``MeanVar(mean, var)``: with ``debias`` the
    bias-corrected :math:`\hat m = m/c_t` and :math:`\hat s^2 = \hat v - \hat m^2`
    (c_t = 1 - beta^t, accurate in float32; clamped at 0 against round-off), else
    (m_t, s_t^2). Feed it to a normalizer such as ``scale_by_mollified_sign``.

    Args:
      beta: the decay in [0, 1) (beta = 1 / (1 + lambda), lambda the KL weight).
      debias: emit the bias-corrected pair (zero init only).
      init: 'zero' (ZI) or 'first' (GI).
      accumulator_dtype: dtype of the stored mean and second moment (None: the gradient's).

    Returns:
      An ``optax.GradientTransformation`` whose update is a ``MeanVar`` and whose state
      ``GaussianVIState(count, mean, nu)`` holds the raw recursion, readable for logging
      (``state.mean``, ``state.var``).

    References:
      Orvieto & Gower, "In Search of Adam's Secret Sauce", 2025 (Proposition 1, Theorem 4.1).
    """
    check_decay("beta", beta)
    check_init(init, debias)
    accumulator_dtype = utils.canonicalize_dtype(accumulator_dtype)
    if is_host_number(beta):
        beta = float(beta)

    def init_fn(params):
        return GaussianVIState(
            count=jnp.zeros([], jnp.int32),
            mean=optax.tree.zeros_like(params, dtype=accumulator_dtype),
            nu=optax.tree.zeros_like(params, dtype=accumulator_dtype),  # own buffers (donation)
        )

    def update_fn(updates, state, params=None):
        del params
        first = (state.count == 0) if init == "first" else None
        mean = jax.tree.map(lambda g, m: _ema_or_first(g, m, beta, first), updates, state.mean)
        nu = jax.tree.map(lambda g, v: _ema_or_first(g * g, v, beta, first), updates, state.nu)
        count_inc = numerics.safe_increment(state.count)
        if debias:
            c = one_minus_power(beta, count_inc)
            mean_hat, nu_hat = _divide(mean, c), _divide(nu, c)
            out = MeanVar(mean=mean_hat, var=jax.tree.map(_variance, mean_hat, nu_hat))
        else:
            out = MeanVar(mean=mean, var=jax.tree.map(_variance, mean, nu))
        new_state = GaussianVIState(
            count=count_inc,
            mean=optax.tree.cast(mean, accumulator_dtype),
            nu=optax.tree.cast(nu, accumulator_dtype),
        )
        return out, new_state

    return optax.GradientTransformation(init_fn, update_fn)


__all__ = [
    "DampenedTraceState",
    "GaussianVIState",
    "MeanVar",
    "ema",
    "scale_by_adam",
    "scale_by_radam",
    "scale_by_rms",
    "trace",
    "track_gaussian_vi",
]
