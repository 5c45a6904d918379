"""The train step and the eval step: pure functions of pytrees, jitted with shardings.

One train step: loss and gradient -> optimizer update (the registry chain, which also does any
gradient clipping: `optimizer.max_norm`; through `optaxlab.monitor.watch` when monitored) ->
apply -> finiteness check of the loss, the gradient, the new parameters and the new optimizer
state. Anything non-finite never reaches the state: params, rest and opt_state stay as they were
and `skipped` counts it; the host decides (nan_policy) whether to halt or go on. So a state that
is saved is always finite.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from optaxlab import monitor, optimizers
from optaxlab.train import optim
from optaxlab.train.state import TrainState, merge, split


def lm_loss(model, batch, train: bool):
    """Mean next-token cross entropy; sums for evaluation."""
    del train
    logits = model(batch["inputs"]).astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
    return ce.mean(), {"loss_sum": ce.sum(), "count": jnp.float32(ce.size)}


def classification_loss(model, batch, train: bool):
    """Mean cross entropy and accuracy of the logits for `image` against `label`."""
    logits = model(batch["image"], train=train).astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    return ce.mean(), {"loss_sum": ce.sum(), "count": jnp.float32(ce.size),
                       "correct": correct.sum(), "accuracy": correct.mean()}


LOSSES = {"lm": lm_loss, "classification": classification_loss}


def _all_finite(tree) -> jax.Array:
    """True when every float leaf of `tree` is finite (one fused reduction per leaf)."""
    checks = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(checks)) if checks else jnp.bool_(True)


def train_step(state: TrainState, batch, *, graphdef, tx: optax.GradientTransformation,
               loss_fn: Callable, watch: optax.GradientTransformation | None = None):
    """One optimizer step. Returns (new state, metrics, the monitor's stats or None).

    metrics['grad_finite'] / ['param_finite'] hold one flag per parameter leaf (in
    `jax.tree.leaves(params)` order) for the gradient and the updated parameter, and
    ['state_finite'] one flag for the new optimizer state and model variables, so the host can
    name what went wrong.
    """
    grads = loss_and_grads(state.params, state.rest, batch, graphdef=graphdef, loss_fn=loss_fn)
    return apply_gradients(state, grads, tx=tx, watch=watch)


def loss_and_grads(params, rest, batch, *, graphdef, loss_fn: Callable):
    """The model's half of a train step: (loss, aux, new model variables, gradients)."""

    def loss_of(params):
        model = merge(graphdef, params, rest)
        loss, aux = loss_fn(model, batch, train=True)
        return loss, (aux, split(model)[2])

    (loss, (aux, rest)), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
    return loss, aux, rest, grads


def apply_gradients(state: TrainState, loss_and_grads_out, *, tx: optax.GradientTransformation,
                    watch: optax.GradientTransformation | None = None):
    """The optimizer's half of a train step (see `train_step`), from `loss_and_grads`."""
    loss, aux, rest, grads = loss_and_grads_out
    step = state.step + 1
    grad_norm = optax.global_norm(grads)
    if watch is None:
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        stats = None
    else:  # monitor.watch(tx): its state lives for this step (checkpoints hold tx's state only)
        watched = monitor.attach(watch, state.opt_state, state.params, state.step)
        updates, watched = watch.update(grads, watched, state.params)
        opt_state, stats = watched.inner, monitor.latest(watched)  # (also a non-finite step's)
    lr = optim.learning_rate(opt_state)
    params = optax.apply_updates(state.params, updates)

    grad_finite = jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)])
    param_finite = jnp.stack([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params)])
    state_finite = _all_finite((opt_state, rest))
    finite = (jnp.isfinite(loss) & jnp.all(grad_finite) & jnp.all(param_finite)
              & state_finite)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    new_state = TrainState(
        step=step,
        params=keep(params, state.params),
        rest=keep(rest, state.rest),
        opt_state=keep(opt_state, state.opt_state),
        skipped=state.skipped + (~finite).astype(jnp.int32),
    )
    metrics = {"loss": loss, "grad_norm": grad_norm, "update_norm": optax.global_norm(updates),
               "lr": lr, "finite": finite, "grad_finite": grad_finite,
               "param_finite": param_finite, "state_finite": state_finite,
               "skipped": new_state.skipped, **{k: aux[k] for k in ("accuracy",) if k in aux}}
    return new_state, metrics, stats


def eval_step(params, rest, opt_state, batch, *, graphdef, loss_fn: Callable):
    """Sums over one batch: loss_sum, count (and correct for classification), at the
    optimizer's evaluation point (`optaxlab.optimizers.eval_params`: schedule-free's x, else
    `params` itself)."""
    model = merge(graphdef, optimizers.eval_params(opt_state, params), rest)
    _, aux = loss_fn(model, batch, train=False)
    return {k: aux[k] for k in ("loss_sum", "count", "correct") if k in aux}


def compile_steps(*, graphdef, tx, task: str, state_shardings, batch_sharding,
                  replicated, watch: optax.GradientTransformation | None = None):
    """(train step, eval step), both jitted. With `watch` (`optaxlab.monitor.watch(tx)`) the
    train step returns the monitor's statistics (computed on its `every`-th steps); without,
    it contains no monitor code."""
    loss_fn = LOSSES[task]
    train = jax.jit(functools.partial(train_step, graphdef=graphdef, tx=tx, loss_fn=loss_fn,
                                      watch=watch),
                    in_shardings=(state_shardings, batch_sharding),
                    out_shardings=(state_shardings, replicated, replicated),
                    donate_argnums=(0,))
    evaluate = jax.jit(functools.partial(eval_step, graphdef=graphdef, loss_fn=loss_fn),
                       in_shardings=(state_shardings.params, state_shardings.rest,
                                     state_shardings.opt_state, batch_sharding),
                       out_shardings=replicated)
    return train, evaluate
