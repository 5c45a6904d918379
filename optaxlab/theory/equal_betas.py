"""Equal betas ("In Search of Adam's Secret Sauce"): the sequence-operator view (App. E)
and the online Gaussian variational-inference reading of Adam (Theorem 4.1).

With b1 = b2 = b and zero init, Adam without bias correction maps a gradient sequence g_1..g_T to

    A_b(g)_t = m_t / sqrt(v_t) = m_t / sqrt(m_t^2 + s_t^2),   m = ema_b(g), v = ema_b(g^2),

a variance-mollified sign with s_t^2 = v_t - m_t^2 = b s_{t-1}^2 + b (1-b)(g_t - m_{t-1})^2
(Proposition 1). As an operator on sequences it is causal, invariant to positive scaling, odd and
bounded by 1 in magnitude (App. E). `filter_sequence` runs any optimizer's direction map over a 1-D
signal, so Signum (sign of the EMA) and EMA-of-sign can be compared with it.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    "adam_equal_betas_operator",
    "damped_periodic",
    "filter_sequence",
    "vi_objective",
    "vi_update",
]


def filter_sequence(
    transform: str | optax.GradientTransformation,
    signal,
    learning_rate: float = 1.0,
    hparams: dict[str, Any] | None = None,
) -> jax.Array:
    """Feed `signal` as the gradient stream of a scalar parameter; return the direction -u_t / lr.

    Pure filtering (no loss): the parameter never feeds back into the gradient.

    Args:
      transform: an `optax.GradientTransformation` (update = -lr * direction), 'theory',
        'adam_model' or an `optaxlab.optimizers` name (resolved lazily, with `hparams`).
      signal: (T,) or (T, k) array: T steps of k independent signals.
      learning_rate: lr to divide out (and to pass to a named transform).

    Returns:
      Array of the signal's shape.
    """
    from optaxlab.theory.simulate import resolve_transform

    tx = resolve_transform(transform, learning_rate, hparams)
    signal = jnp.asarray(signal)
    if signal.ndim not in (1, 2) or signal.shape[0] < 1:
        raise ValueError(f"signal must have shape (T,) or (T, k) with T >= 1; got {signal.shape}.")
    params = jnp.zeros(signal.shape[1:], signal.dtype)

    @jax.jit
    def run(signal):
        def step(state, g):
            u, state = tx.update(g, state, params)
            return state, -u / learning_rate

        _, out = jax.lax.scan(step, tx.init(params), signal)
        return out

    return run(signal)


def adam_equal_betas_operator(signal, beta: float, bias_correction: bool = False) -> jax.Array:
    """A_b(g)_t = m_t / sqrt(v_t) along axis 0 ("In Search of Adam's Secret Sauce", App. E; 0 where
    v_t = 0).

    With `bias_correction` it is m^_t / sqrt(v^_t) = optax.adam(b1 = b2 = beta, eps = 0)'s
    direction; without, eq. (2) of the paper. Closed-form reference for `filter_sequence`.
    """
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta={beta!r} is invalid: it must lie in [0, 1).")
    signal = jnp.asarray(signal)

    def step(carry, g):
        m, v, t = carry
        m = beta * m + (1 - beta) * g
        v = beta * v + (1 - beta) * g * g
        t = t + 1
        c = 1.0 - beta**t if bias_correction else 1.0
        out = jnp.where(v > 0, (m / c) / jnp.sqrt(jnp.where(v > 0, v, 1.0) / c), 0.0)
        return (m, v, t), out

    zeros = jnp.zeros(signal.shape[1:], signal.dtype)
    _, out = jax.lax.scan(step, (zeros, zeros, jnp.zeros([], signal.dtype)), signal)
    return out


def damped_periodic(
    steps: int = 400, period: float = 50.0, decay: float = 100.0, dtype=np.float32
) -> np.ndarray:
    """The App. E test signal: g_t = exp(-t / decay) sin(2 pi t / period), t = 1..steps."""
    t = np.arange(1, steps + 1, dtype=np.float64)
    return (np.exp(-t / decay) * np.sin(2 * np.pi * t / period)).astype(dtype)


def vi_update(m_prev, s2_prev, g, beta):
    """One step of online Gaussian VI ("In Search of Adam's Secret Sauce", Theorem 4.1),
    b = 1/(1 + lam).

    m_t = b m_{t-1} + (1-b) g_t,  s_t^2 = b s_{t-1}^2 + b (1-b) (g_t - m_{t-1})^2.
    """
    m = beta * m_prev + (1 - beta) * g
    s2 = beta * s2_prev + beta * (1 - beta) * (g - m_prev) ** 2
    return m, s2


def vi_objective(m, s2, m_prev, s2_prev, g, lam):
    """-log N(g; m, s2) + (1/lam) KL(N(m_prev, s2_prev) || N(m, s2)) ("In Search of Adam's Secret
    Sauce",
    Theorem 4.1).

    Its minimizer over (m, s2) is `vi_update(m_prev, s2_prev, g, 1/(1+lam))`.
    """
    nll = 0.5 * jnp.log(2 * jnp.pi * s2) + 0.5 * (g - m) ** 2 / s2
    kl = 0.5 * (jnp.log(s2 / s2_prev) + (s2_prev + (m_prev - m) ** 2) / s2 - 1.0)
    return nll + kl / lam
