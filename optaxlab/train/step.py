"""The train step and the eval step: pure functions of pytrees, jitted with shardings.

One train step: loss and gradient -> (debug poison) -> finiteness check per parameter ->
optional global-norm clip of the raw gradient -> optimizer update (through
`optaxlab.monitor.watch` when monitored) -> apply.
A non-finite loss or gradient never reaches the state: params, rest and opt_state stay as they
were and `skipped` counts it; the host decides (nan_policy) whether to halt or go on.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from optaxlab import monitor
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


def _poison(grads, step, config):
    """Debug hook: NaN into the gradients whose name contains debug.nonfinite_param."""
    at, which = config.debug.nonfinite_at_step, config.debug.nonfinite_param

    def one(path, g):
        name = ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
        return jnp.where(step == at, jnp.nan, g) if which in name else g

    return jax.tree_util.tree_map_with_path(one, grads)


def train_step(state: TrainState, batch, *, graphdef, tx: optax.GradientTransformation,
               loss_fn: Callable, config, watch: optax.GradientTransformation | None = None):
    """One optimizer step. Returns (new state, metrics, the monitor's stats or None)."""
    step = state.step + 1

    def loss_of(params):
        model = merge(graphdef, params, state.rest)
        loss, aux = loss_fn(model, batch, train=True)
        return loss, (aux, split(model)[2])

    (loss, (aux, rest)), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
    if config.debug.nonfinite_at_step:
        grads = _poison(grads, step, config)
    leaf_finite = jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)])
    finite = jnp.isfinite(loss) & jnp.all(leaf_finite)
    grad_norm = optax.global_norm(grads)
    if config.grad_clip:
        scale = jnp.where(grad_norm < config.grad_clip, 1.0, config.grad_clip / grad_norm)
        grads = jax.tree.map(lambda g: g * scale.astype(g.dtype), grads)
    if watch is None:
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        stats = None
    else:  # monitor.watch(tx): its state lives for this step (checkpoints hold tx's state only)
        watched = monitor.attach(watch, state.opt_state, state.params, state.step)
        updates, watched = watch.update(grads, watched, state.params)
        opt_state, stats = watched.inner, monitor.latest(watched)  # (also a non-finite step's)
    lr = optim.learning_rate(opt_state)
    params = optax.apply_updates(state.params, updates)

    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    new_state = TrainState(
        step=step,
        params=keep(params, state.params),
        rest=keep(rest, state.rest),
        opt_state=keep(opt_state, state.opt_state),
        skipped=state.skipped + (~finite).astype(jnp.int32),
    )
    metrics = {"loss": loss, "grad_norm": grad_norm, "update_norm": optax.global_norm(updates),
               "lr": lr, "finite": finite, "leaf_finite": leaf_finite,
               "skipped": new_state.skipped, **{k: aux[k] for k in ("accuracy",) if k in aux}}
    return new_state, metrics, stats


def eval_step(params, rest, batch, *, graphdef, loss_fn: Callable):
    """Sums over one batch: loss_sum, count (and correct for classification)."""
    model = merge(graphdef, params, rest)
    _, aux = loss_fn(model, batch, train=False)
    return {k: aux[k] for k in ("loss_sum", "count", "correct") if k in aux}


def compile_steps(*, graphdef, tx, task: str, config, state_shardings, batch_sharding,
                  replicated, watch: optax.GradientTransformation | None = None):
    """(train step, eval step), both jitted. With `watch` (`optaxlab.monitor.watch(tx)`) the
    train step returns the monitor's statistics (computed on its `every`-th steps); without,
    it contains no monitor code."""
    loss_fn = LOSSES[task]
    train = jax.jit(functools.partial(train_step, graphdef=graphdef, tx=tx, loss_fn=loss_fn,
                                      config=config, watch=watch),
                    in_shardings=(state_shardings, batch_sharding),
                    out_shardings=(state_shardings, replicated, replicated),
                    donate_argnums=(0,))
    evaluate = jax.jit(functools.partial(eval_step, graphdef=graphdef, loss_fn=loss_fn),
                       in_shardings=(state_shardings.params, state_shardings.rest,
                                     batch_sharding),
                       out_shardings=replicated)
    return train, evaluate
