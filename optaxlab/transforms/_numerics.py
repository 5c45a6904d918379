"""Accurate float32 bias corrections: b^t and 1 - b^t.

optax computes a bias correction as ``1 - decay**count`` in the parameters' precision. In float32
that loses digits twice: a Python decay such as 0.999 is first rounded to float32 (1 - b then
carries a 1.3e-5 relative error), and ``1 - b**t`` cancels catastrophically while b^t is close to
1. Adam at b2 = 0.999 is therefore ~1e-5 off torch (which computes the correction in float64), and
RAdam's rectification term, which subtracts two numbers near 2/(1 - b2), is ~1% off at its first
rectified steps. Here log(b) is taken in float64 on the host when b is a Python / numpy number
(in the traced dtype as log1p(b - 1) when it is an array: b - 1 is exact there), and
1 - b^t = -expm1(t log b): both are then accurate to a few float32 ulps for every t
(measured in ``experiments/benchmarks/bench_transforms.py --precision``).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from optaxlab.transforms._checks import is_host_number


def compute_dtype() -> Any:
    """float32, or float64 when x64 is enabled."""
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def log_decay(decay: Any) -> jax.Array:
    """log(decay) in the compute dtype; -inf at decay = 0."""
    dtype = compute_dtype()
    if is_host_number(decay):
        b = float(np.asarray(decay))
        return jnp.asarray(math.log(b) if b > 0 else -math.inf, dtype)
    b = jnp.asarray(decay, dtype)
    return jnp.log1p(b - 1)  # b - 1 is exact for b in [1/2, 1] (Sterbenz)


def decay_powers(decay: Any, count: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(b^t, 1 - b^t) for t = `count` >= 1, accurate in float32 (see the module docstring)."""
    x = jnp.asarray(count).astype(compute_dtype()) * log_decay(decay)
    return jnp.exp(x), -jnp.expm1(x)


def one_minus_power(decay: Any, count: jax.Array) -> jax.Array:
    """1 - b^t = -expm1(t log b), the bias-correction denominator, for `count` >= 1."""
    return decay_powers(decay, count)[1]


def host_float(x: Any) -> Any:
    """A Python float for host numbers (so arithmetic on it happens in float64), else `x`."""
    return float(np.asarray(x)) if is_host_number(x) else x
