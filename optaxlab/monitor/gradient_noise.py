"""How noisy the gradient is, from the k microbatch gradients of one step (gradient accumulation).

Fold each microbatch gradient g_i (i = 1..k, each the mean over b examples) into a small carry
(`init`, `fold`), then `finish` with the accumulated gradient g_bar = (1/k) sum_i g_i:

- **Gradient noise scale** (McCandlish et al. 2018, "An Empirical Model of Large-Batch Training",
  App. A): with S = (1/k) sum_i |g_i|^2 (batch size b) and L = |g_bar|^2 (batch size k b), the
  unbiased estimates
      |G|^2   ~ (k L - S) / (k - 1),        tr(Sigma) ~ b k (S - L) / (k - 1)
  (Sigma the covariance of one example's gradient), and B_simple = tr(Sigma) / |G|^2, the critical
  batch size's simple estimate. Per layer and over the whole model. Ratios of unbiased estimates
  are biased for small k: average numerator and denominator over steps (`ratio` of two EMAs)
  before dividing, as the paper does.
- **Per-coordinate SNR** of a microbatch gradient: with var_c the sample variance of g_i,c over
  the k microbatches, snr = sum_c (g_bar_c^2 - var_c / k) / sum_c var_c per layer (signal with its
  noise removed, over noise: mean_c mu_c^2 / sigma_c^2 when the variances are equal), and the
  median over coordinates of g_bar_c^2 / var_c. Compare with the VI tracker's m^2 / s^2 (In Search
  of Adam's Secret Sauce): that one is over time, this one over the microbatches of one step.
- **Tail index** of the gradient noise: Hill's estimator on |g_1,c - g_bar_c| over a layer's
  coordinates ("Why Adam Beats SGD for Attention Models", Fig. 1, as a live curve).

Memory: `sq_norm` is one scalar per layer; SNR adds one parameter-sized buffer (sum of g^2), the
tail index another (the first microbatch's gradient). Nothing stores all k gradients.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class NoiseCarry(NamedTuple):
    count: jax.Array  # microbatches folded so far
    sq_norm: Any  # per leaf: sum_i |g_i|^2 (a scalar)
    sum_sq: Any  # per leaf: sum_i g_i^2 per coordinate (None when SNR is off)
    first: Any  # per leaf: g_1 (None when the tail index is off)


def init(params, *, snr: bool = False, tail: bool = False) -> NoiseCarry:
    zeros = lambda p: jnp.zeros(p.shape, jnp.float32)
    return NoiseCarry(jnp.zeros((), jnp.int32),
                      jax.tree.map(lambda p: jnp.zeros((), jnp.float32), params),
                      jax.tree.map(zeros, params) if snr else None,
                      jax.tree.map(zeros, params) if tail else None)


def fold(carry: NoiseCarry, grads) -> NoiseCarry:
    """Add one microbatch gradient (a pytree like params)."""
    g32 = jax.tree.map(lambda g: g.astype(jnp.float32), grads)
    sq = jax.tree.map(lambda s, g: s + jnp.sum(g * g), carry.sq_norm, g32)
    sum_sq = None if carry.sum_sq is None else jax.tree.map(lambda s, g: s + g * g,
                                                            carry.sum_sq, g32)
    first = None if carry.first is None else jax.tree.map(
        lambda f, g: jnp.where(carry.count == 0, g, f), carry.first, g32)
    return NoiseCarry(carry.count + 1, sq, sum_sq, first)


def hill(x: jax.Array, k: int | None = None) -> jax.Array:
    """Hill's tail index of |x| from its k largest values (default floor(sqrt(N))), in JAX
    (`optaxlab.theory.hill_estimator` is the float64 host version)."""
    a = jnp.abs(x.ravel()).astype(jnp.float32)
    k = int(a.size ** 0.5) if k is None else k
    top = jax.lax.top_k(a, k + 1)[0]
    tiny = jnp.finfo(jnp.float32).tiny
    return 1.0 / jnp.mean(jnp.log(jnp.maximum(top[:k], tiny) / jnp.maximum(top[k], tiny)))


def finish(carry: NoiseCarry, mean_grads, microbatch_size: int) -> dict[str, Any]:
    """The step's estimates: {'g2', 'trace', 'b_simple'} per leaf and 'global_*' over the model,
    plus 'snr', 'snr_median' (with SNR on) and 'tail_index' (with the tail on) per leaf.

    `mean_grads`: the accumulated gradient (1/k) sum_i g_i; `microbatch_size`: b, examples per
    microbatch. Needs k >= 2 microbatches (with k = 1 every estimate is NaN).
    """
    k = carry.count.astype(jnp.float32)
    b = float(microbatch_size)
    gbar = jax.tree.map(lambda g: g.astype(jnp.float32), mean_grads)
    big = jax.tree.map(lambda g: jnp.sum(g * g), gbar)  # L per leaf
    small = jax.tree.map(lambda s: s / k, carry.sq_norm)  # S per leaf
    g2 = jax.tree.map(lambda L, S: (k * L - S) / (k - 1), big, small)
    trace = jax.tree.map(lambda L, S: b * k * (S - L) / (k - 1), big, small)
    out: dict[str, Any] = {
        "g2": g2, "trace": trace,
        "b_simple": jax.tree.map(lambda t, g: t / g, trace, g2),
        "global_g2": sum(jax.tree.leaves(g2)), "global_trace": sum(jax.tree.leaves(trace)),
    }
    out["global_b_simple"] = out["global_trace"] / out["global_g2"]
    if carry.sum_sq is not None:
        var = jax.tree.map(lambda s, m: jnp.maximum(s / k - m * m, 0.0) * k / (k - 1),
                           carry.sum_sq, gbar)
        out["snr"] = jax.tree.map(lambda m, v: jnp.sum(m * m - v / k) / jnp.sum(v), gbar, var)
        out["snr_median"] = jax.tree.map(
            lambda m, v: jnp.median(m * m / jnp.maximum(v, jnp.finfo(jnp.float32).tiny)),
            gbar, var)
    if carry.first is not None:
        out["tail_index"] = jax.tree.map(lambda f, m: hill(f - m), carry.first, gbar)
    return out


def critical_batch_size(trace: float, g2: float) -> float:
    """B_simple = tr(Sigma) / |G|^2 from (averaged) estimates: the batch size above which a
    larger batch buys little (McCandlish et al. 2018)."""
    return trace / g2
