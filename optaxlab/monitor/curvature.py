"""Sharpness: the top eigenvalue of the loss Hessian, plain and preconditioned.

lambda_max(H) by power iteration or Lanczos on Hessian-vector products (forward-over-reverse:
`jax.jvp` of `jax.grad`, never the Hessian itself), and the preconditioned sharpness
lambda_max(P^-1 H) for a diagonal preconditioner P (Adam's: P = diag(sqrt(v_hat) + eps)). P^-1 H is
not symmetric but is similar to P^-1/2 H P^-1/2, which is, with the same eigenvalues; the
iterations run on that symmetric form.

"Adaptive Gradient Methods at the Edge of Stability" (Cohen et al., 2022) finds that full-batch
Adam trains at preconditioned sharpness ~ (2 + 2 b1) / ((1 - b1) lr) (38 / lr for b1 = 0.9), the
threshold above which its preconditioned update would be unstable on a quadratic;
`adam_stability_threshold` gives it.

Memory: power iteration keeps two parameter-sized vectors; Lanczos keeps `iters` of them (full
reorthogonalization), so use it on small models or with few iterations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree


def hvp(loss_fn: Callable[[Any], jax.Array], params, v):
    """H v for the Hessian H of `loss_fn` at `params` (pytrees of the same structure)."""
    return jax.jvp(jax.grad(loss_fn), (params,), (v,))[1]


def _operator(loss_fn, params, precond):
    """The flat symmetric operator x -> P^-1/2 H P^-1/2 x and the flat size."""
    flat, unravel = ravel_pytree(params)
    inv_sqrt = None if precond is None else jax.lax.rsqrt(ravel_pytree(precond)[0]
                                                           .astype(flat.dtype))

    def op(x):
        y = x if inv_sqrt is None else inv_sqrt * x
        hy = ravel_pytree(hvp(loss_fn, params, unravel(y)))[0]
        return hy if inv_sqrt is None else inv_sqrt * hy

    return op, flat.size, flat.dtype


def power_iteration(loss_fn: Callable[[Any], jax.Array], params, *, precond=None,
                    iters: int = 20, key: jax.Array | None = None) -> jax.Array:
    """The eigenvalue of largest magnitude of H (or P^-1 H), by `iters` power iterations.

    Args:
      loss_fn: params -> scalar loss (close over the batch).
      params: the point at which the Hessian is taken.
      precond: a pytree like params of the positive diagonal of P (None: H itself).
      iters: iterations (each one Hessian-vector product).
      key: random start vector's key (default key 0).

    Returns:
      The Rayleigh quotient after the last iteration (a scalar array).
    """
    op, n, dtype = _operator(loss_fn, params, precond)
    v = jax.random.normal(jax.random.key(0) if key is None else key, (n,), dtype)
    v = v / jnp.linalg.norm(v)

    def body(_, carry):
        v, _ = carry
        w = op(v)
        lam = jnp.vdot(v, w)
        return w / jnp.maximum(jnp.linalg.norm(w), jnp.finfo(dtype).tiny), lam

    _, lam = jax.lax.fori_loop(0, iters, body, (v, jnp.zeros((), dtype)))
    return lam


def lanczos(loss_fn: Callable[[Any], jax.Array], params, *, precond=None, iters: int = 30,
            key: jax.Array | None = None) -> jax.Array:
    """The Ritz values (ascending) of `iters` Lanczos steps on H (or P^-1 H): the last one is
    lambda_max, the first lambda_min, both converging faster than power iteration.

    Full reorthogonalization against the stored basis (`iters` parameter-sized vectors).
    Arguments as for `power_iteration`; `iters` must not exceed the number of parameters.
    """
    op, n, dtype = _operator(loss_fn, params, precond)
    if iters > n:
        raise ValueError(f"lanczos: iters={iters} exceeds the number of parameters {n}")
    v0 = jax.random.normal(jax.random.key(0) if key is None else key, (n,), dtype)
    v0 = v0 / jnp.linalg.norm(v0)
    basis = jnp.zeros((iters, n), dtype).at[0].set(v0)

    def body(j, carry):
        basis, alpha, beta = carry
        v = basis[j]
        w = op(v)
        a = jnp.vdot(v, w)
        # Full reorthogonalization (twice is enough, "twice is enough" of Parlett) against the
        # rows filled so far; the unfilled rows are zero and drop out.
        for _ in range(2):
            w = w - basis.T @ (basis @ w)
        b = jnp.linalg.norm(w)
        nxt = jnp.where(b > 1e-12 * jnp.abs(a) + jnp.finfo(dtype).tiny, w / b, 0.0)
        basis = jax.lax.cond(j + 1 < iters, lambda B: B.at[j + 1].set(nxt), lambda B: B, basis)
        return basis, alpha.at[j].set(a), beta.at[j].set(b)

    _, alpha, beta = jax.lax.fori_loop(0, iters, body, (basis, jnp.zeros(iters, dtype),
                                                        jnp.zeros(iters, dtype)))
    t = jnp.diag(alpha) + jnp.diag(beta[:-1], 1) + jnp.diag(beta[:-1], -1)
    return jnp.linalg.eigvalsh(t)


def sharpness(loss_fn: Callable[[Any], jax.Array], params, *, precond=None,
              method: str = "lanczos", iters: int = 20, key: jax.Array | None = None
              ) -> jax.Array:
    """lambda_max of H (or of P^-1 H with `precond`): 'lanczos' (default: the largest Ritz
    value, the top algebraic eigenvalue) or 'power' (the largest in magnitude)."""
    if method == "lanczos":
        return lanczos(loss_fn, params, precond=precond, iters=iters, key=key)[-1]
    if method == "power":
        return power_iteration(loss_fn, params, precond=precond, iters=iters, key=key)
    raise ValueError(f"sharpness: method={method!r}; valid: 'lanczos', 'power'")


def adam_preconditioner(nu, count, *, b2: float, eps: float, bias_correction: bool = True):
    """Adam's diagonal P = sqrt(v_hat) + eps from its second moment `nu` at step `count`."""
    c = 1.0 - b2 ** jnp.asarray(count, jnp.float32) if bias_correction else 1.0
    return jax.tree.map(lambda v: jnp.sqrt(v / c) + eps, nu)


def adam_stability_threshold(learning_rate: float, b1: float) -> float:
    """(2 + 2 b1) / ((1 - b1) lr): where full-batch Adam's preconditioned sharpness settles
    (Cohen et al., 2022); 38 / lr at b1 = 0.9."""
    return (2.0 + 2.0 * b1) / ((1.0 - b1) * learning_rate)


def state_second_moment(opt_state, params) -> tuple[Any, jax.Array] | None:
    """(nu, count): Adam's second moment as a tree like `params` and its update count, found in
    an optimizer state the way the monitor finds the moments (`stats.find_moments`: the first
    (mu, nu) or (mean, nu) NamedTuple, matched to the parameters by path name, so that chain,
    inject_hyperparams and other wrappers are looked through); None when the state has none
    (SGD, Lion, ...) or it does not cover every parameter."""
    from optaxlab.monitor import stats as stats_lib

    moments = stats_lib.find_moments(opt_state)
    names = list(stats_lib.named_leaves(params))
    if not moments or any(n not in moments for n in names):
        return None
    nu = jax.tree.unflatten(jax.tree.structure(params), [moments[n].second for n in names])
    count = None
    for node in jax.tree.leaves(opt_state, is_leaf=stats_lib._is_moment_node):
        if stats_lib._is_moment_node(node) and "count" in node._fields:
            count = jnp.asarray(node.count)
            break
    if count is None:
        return None
    return nu, count


def sharpness_scalars(loss_fn: Callable[[Any], jax.Array], params, nu, count, *,
                      learning_rate: float, b1: float, b2: float, eps: float,
                      bias_correction: bool = True, iters: int = 20,
                      key: jax.Array | None = None) -> dict[str, jax.Array]:
    """The sharpness instrument's TensorBoard scalars for an Adam-type optimizer.

    Args:
      loss_fn: params -> scalar loss on a fixed batch.
      params: the point at which H is taken.
      nu: the optimizer's second moment (same tree as params); count: its step count.
      learning_rate, b1, b2, eps: the optimizer's hyperparameters (learning_rate may be a
        traced scalar, e.g. the scheduled lr of the last update).
      bias_correction: whether v is bias-corrected (v_hat = v / (1 - b2^count)).
      iters: Lanczos iterations; key: its start vector's key.

    Returns:
      {'sharpness/lambda_max': lambda_max(H),
       'sharpness/precond_lambda_max': lambda_max(P^-1 H) with P = sqrt(v_hat) + eps,
       'sharpness/adam_threshold': (2 + 2 b1) / ((1 - b1) lr)}.
    """
    precond = adam_preconditioner(nu, count, b2=b2, eps=eps, bias_correction=bias_correction)
    return {
        "sharpness/lambda_max": sharpness(loss_fn, params, iters=iters, key=key),
        "sharpness/precond_lambda_max": sharpness(loss_fn, params, precond=precond,
                                                  iters=iters, key=key),
        "sharpness/adam_threshold": jnp.asarray(adam_stability_threshold(learning_rate, b1),
                                                jnp.float32),
    }
