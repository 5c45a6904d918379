"""Gradient spread ("Gradient Spread as an Intuition for the Adam Optimizer").

With first and second moment estimates m_t (of g) and v_t (of g^2), the spread is the coefficient of
variation of the gradient, gamma_t = sqrt(v_t - m_t^2) / |m_t|. For Adam with b1 = b2 (same init,
same bias correction, eps = 0) the update direction is exactly

    m_t / sqrt(v_t) = sign(m_t) / sqrt(1 + gamma_t^2),

so the predicted step magnitude is 1 / sqrt(1 + gamma^2): large steps where the gradient is
consistent (gamma -> 0), small ones where it is noise-dominated. Equivalently ("In Search of Adam's
Secret Sauce")
the direction is the variance-mollified sign m / sqrt(m^2 + s^2) with s^2 = v - m^2.
"""

from __future__ import annotations

import jax.numpy as jnp

__all__ = ["adam_direction", "predicted_step", "spread"]


def spread(m, v, eps: float = 0.0):
    """Spread gamma = sqrt(max(v - m^2, 0)) / |m|.

    Args:
      m: first-moment estimate (EMA of g), any shape.
      v: second-moment estimate (EMA of g^2), same shape. v >= m^2 holds for equal betas by
        Cauchy-Schwarz; round-off negatives are clipped to 0.
      eps: added to |m| in the denominator (0: gamma = inf where m = 0).
    """
    m, v = jnp.asarray(m), jnp.asarray(v)
    s = jnp.sqrt(jnp.maximum(v - m * m, 0.0))
    return s / (jnp.abs(m) + eps)


def predicted_step(gamma):
    """Predicted normalized step magnitude 1 / sqrt(1 + gamma^2) of Adam(b1 = b2)."""
    gamma = jnp.asarray(gamma)
    return 1.0 / jnp.sqrt(1.0 + gamma * gamma)


def adam_direction(m, v):
    """sign(m) / sqrt(1 + gamma^2) = m / sqrt(v) (0 where v = 0): Adam's direction with b1 = b2."""
    m, v = jnp.asarray(m), jnp.asarray(v)
    return jnp.where(v > 0, m / jnp.sqrt(jnp.where(v > 0, v, 1.0)), 0.0)
