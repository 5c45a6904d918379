"""Random gradient streams for checking optimizers step for step against references.

Used by optaxlab's own tests; handy for checking a new transform the same way.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

SHAPES = {"w": (12, 10), "b": (10,), "v": (70,)}  # 200 coordinates
STEPS = 120


def stream(kind: str, seed: int = 0, steps: int = STEPS, shapes: dict = SHAPES) -> dict:
    """Gradients [steps, *shape] per leaf with a per-coordinate scale (1e-2..1e1) and drift.

    kind: 'gaussian' (normal noise) or 'heavy' (Student-t with 1.5 degrees of freedom).
    """
    if kind not in ("gaussian", "heavy"):
        raise ValueError(f"kind={kind!r}; valid: 'gaussian', 'heavy'")
    rng = np.random.default_rng(seed)
    out = {}
    for k, shape in shapes.items():
        scale = 10.0 ** rng.uniform(-2, 1, size=shape)
        drift = rng.normal(size=shape)
        if kind == "gaussian":
            noise = rng.normal(size=(steps, *shape))
        else:
            noise = rng.standard_t(1.5, size=(steps, *shape))
        out[k] = (scale * (0.3 * drift + noise)).astype(np.float32)
    return out


def run(tx: optax.GradientTransformation, grads: dict):
    """All updates of `tx` over a stream (leading time axis) at zero params, and the final state.

    A jitted step in a Python loop: compiling one step costs about half a compiled scan."""
    params = jax.tree.map(lambda v: jnp.zeros(v.shape[1:], jnp.float32), grads)
    step, state, us = jax.jit(tx.update), tx.init(params), []
    for t in range(len(next(iter(grads.values())))):
        u, state = step(jax.tree.map(lambda v, t=t: v[t], grads), state, params)
        us.append(u)
    return jax.tree.map(lambda *x: np.stack(x), *us), state


def np_ema(g: np.ndarray, beta: float, init: str = "zero") -> np.ndarray:
    """Reference EMA over the leading time axis in float64: m_t = beta m_{t-1} + (1 - beta) g_t,
    m_0 = 0 ('zero') or m_1 = g_1 ('first', gradient init)."""
    g = g.astype(np.float64)
    m, out = np.zeros_like(g[0]), []
    for t in range(len(g)):
        m = g[0] if (init == "first" and t == 0) else beta * m + (1 - beta) * g[t]
        out.append(m)
    return np.stack(out)
