"""Test helpers: random gradient streams for checking optimizers step for step against
references, and `nonfinite_at`, a transform that injects NaN updates at a chosen step.

Used by optaxlab's own tests; handy for checking a new transform (or a training loop's NaN
handling) the same way. `tiny_lm` is the few-step lm_tiny the trainer tests share.
"""

from typing import NamedTuple

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


class NonfiniteAtState(NamedTuple):
    count: jax.Array  # int32, updates done


def nonfinite_at(step: int, pattern: str = "") -> optax.GradientTransformation:
    """Test-only transform: NaN updates, at the `step`-th update (1-based), for every leaf whose
    name contains `pattern` ('' = every leaf); the updates pass through unchanged otherwise.

    Leaf names are `jax.tree_util.keystr(path, simple=True, separator="/")` of the updates tree,
    e.g. "blocks/0/mlp/down/kernel". Put it after an optimizer to make one step's update (and so
    the new parameters) non-finite from outside the train step:
    `train(config, workdir, wrap_optimizer=lambda tx: optax.chain(tx, nonfinite_at(5, "down")))`.
    `step <= 0` never fires (same state structure, handy for resuming such a run).

    Args:
      step: the update (1, 2, ...) whose updates become NaN.
      pattern: substring of the leaf names to poison.

    Returns:
      An `optax.GradientTransformation` whose state counts the updates.
    """

    def init(params):
        del params
        return NonfiniteAtState(count=jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        del params
        count = state.count + 1

        def poison(path, u):
            name = jax.tree_util.keystr(path, simple=True, separator="/")
            if pattern not in name:
                return u
            return jnp.where(count == step, jnp.full_like(u, jnp.nan), u)

        return jax.tree_util.tree_map_with_path(poison, updates), NonfiniteAtState(count)

    return optax.GradientTransformation(init, update)


def tiny_lm(**fields):
    """optaxlab/configs/lm_tiny.py shrunk to a 10-step, one-layer, d_model 32 run on 8 x 32
    tokens (log every step, no eval, checkpoints every 5, no monitor, no progress bar);
    `fields` override
    dotted config fields, e.g. ``tiny_lm(**{"optimizer.learning_rate": 1e-2})``."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent / "configs" / "lm_tiny.py"
    spec = importlib.util.spec_from_file_location("config_lm_tiny", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config()
    c.steps, c.batch_size, c.seq_len, c.log_every = 10, 8, 32, 1
    c.model.d_model, c.model.n_layers, c.model.n_heads, c.model.max_len = 32, 1, 4, 32
    c.eval_every, c.checkpoint_every, c.keep_checkpoints = 0, 5, 3
    c.monitor.every, c.progress_bar, c.data.num_threads = 0, False, 0
    for k, v in fields.items():
        node = c
        *parents, leaf = k.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = v
    return c
