"""The train step and the eval step: pure functions of pytrees, jitted with shardings.

One train step: loss and gradient -> optimizer update (the registry chain, which also does any
gradient clipping: `optimizer.max_norm`; through `optaxlab.monitor.watch` when monitored) ->
apply -> finiteness check of the loss, the gradient, the new parameters and the new optimizer
state. Anything non-finite never reaches the state: params, rest and opt_state stay as they were
and `skipped` counts it; the host decides (nan_policy) whether to halt or go on. So a state that
is saved is always finite.

Gradient accumulation (`grad_accum_steps` = k > 1, `config.grad_accum_steps`): `loss_and_grads`
splits the batch into k microbatches (microbatch i holds rows i, i + k, i + 2k, ..., so each
device's rows split evenly and every microbatch stays sharded over the data axes) and scans
over them inside the one jitted step (`jax.lax.scan`), carrying the running sums of the
gradient, the loss and the aux sums; the result is the mean loss and mean gradient of the full
batch (what the optimizer and the monitor see) with activations for one microbatch at a time.
A `MicrobatchFold` folds each microbatch's gradient into a small carry inside the scan (e.g.
the sum of squared microbatch-gradient norms, for gradient-noise statistics) without storing
the k gradients; its result is `aux["microbatch"]`, which reaches `apply_gradients`.

`compile_steps` traces both steps under the mesh of `batch_sharding`
(`jax.sharding.use_abstract_mesh`), so the models' activation sharding constraints
(`optaxlab.train.mesh.constrain`) and `attention_impl='auto'` see the mesh and its platform.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from optaxlab import monitor, optimizers
from optaxlab.monitor import curvature, gradient_noise
from optaxlab.train import optim
from optaxlab.train.state import TrainState, merge, split


def lm_loss(model, batch, train: bool):
    """Mean next-token cross entropy; sums for evaluation. Uses the model's `token_losses`
    (the transformer's chunked cross entropy) when it has one."""
    del train
    if hasattr(model, "token_losses"):
        ce = model.token_losses(batch["inputs"], batch["targets"])
    else:
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
SUMMED_AUX = ("loss_sum", "count", "correct")  # aux entries that add over microbatches


class MicrobatchFold(NamedTuple):
    """Folds each microbatch's gradient into a small carry inside the accumulation scan.

    init(params) -> carry (a pytree of fixed shapes); update(carry, grads) -> carry, called
    once per microbatch with that microbatch's mean gradient (once with the full-batch gradient
    when grad_accum_steps = 1). The final carry is `aux["microbatch"]`. finish(carry,
    mean_grads) -> {name: scalar}, when given, adds those scalars to the train step's metrics.
    """

    init: Callable[[Any], Any]
    update: Callable[[Any, Any], Any]
    finish: Callable[[Any, Any], dict[str, jax.Array]] | None = None


def squared_norm_fold() -> MicrobatchFold:
    """Sum over microbatches of the squared global norm of the microbatch gradient."""
    return MicrobatchFold(init=lambda params: jnp.zeros((), jnp.float32),
                          update=lambda carry, g: carry + optax.tree.norm(g, squared=True))


def noise_fold(names: list[str], microbatch_size: int) -> MicrobatchFold:
    """The gradient-noise instrument (`optaxlab.monitor.gradient_noise`) as a fold: its metrics
    are 'noise/b_simple', 'noise/g2' (|G|^2), 'noise/trace' (tr(Sigma)), 'noise/snr' (over all
    coordinates) and 'noise/tail_index' (median over the layers), and 'noise/b_simple/<layer>',
    'noise/snr/<layer>', 'noise/tail_index/<layer>' per parameter leaf (`names`, in leaf order;
    the tail index only for leaves of >= 16 coordinates). `microbatch_size`: examples per
    microbatch (batch_size / grad_accum_steps), the b of B_simple's estimator."""

    def init(params):
        return gradient_noise.init(params, snr=True, tail=True)

    def finish(carry, mean_grads):
        out = gradient_noise.finish(carry._replace(first=None), mean_grads, microbatch_size)
        flat_sum_sq = ravel_pytree(carry.sum_sq)[0]
        pooled = gradient_noise.finish(
            gradient_noise.NoiseCarry(carry.count, sum(jax.tree.leaves(carry.sq_norm)),
                                      flat_sum_sq, None),
            ravel_pytree(mean_grads)[0], microbatch_size)
        metrics = {"noise/b_simple": out["global_b_simple"], "noise/g2": out["global_g2"],
                   "noise/trace": out["global_trace"], "noise/snr": pooled["snr"]}
        tails = {}
        for name, b, snr, first, m in zip(names, jax.tree.leaves(out["b_simple"]),
                                          jax.tree.leaves(out["snr"]),
                                          jax.tree.leaves(carry.first),
                                          jax.tree.leaves(mean_grads), strict=True):
            metrics[f"noise/b_simple/{name}"] = b
            metrics[f"noise/snr/{name}"] = snr
            if first.size >= 16:
                tails[f"noise/tail_index/{name}"] = gradient_noise.hill(
                    first - m.astype(jnp.float32))
        if tails:
            metrics["noise/tail_index"] = jnp.median(jnp.stack(list(tails.values())))
        return {**metrics, **tails}

    return MicrobatchFold(init=init, update=gradient_noise.fold, finish=finish)


def sharpness_metrics(params, rest, opt_state, batch, *, graphdef, loss_fn: Callable,
                      theory: dict[str, Any], iters: int = 20) -> dict[str, jax.Array]:
    """The sharpness instrument (`optaxlab.monitor.curvature`) at `params` on `batch`:
    'sharpness/lambda_max' (lambda_max(H), Lanczos with `iters` Hessian-vector products) and,
    for an optimizer whose state holds Adam's second moment nu (found as the monitor finds it,
    `monitor.stats.find_moments`) and whose theory settings (`theory`: b1, b2, eps,
    bias_correction of `monitor.theory_settings`) are known, 'sharpness/precond_lambda_max'
    (lambda_max(P^-1 H), P = sqrt(v_hat) + eps) and 'sharpness/threshold'
    ((2 + 2 b1) / ((1 - b1) lr) at the last update's lr)."""

    def loss_of(p):
        return loss_fn(merge(graphdef, p, rest), batch, train=True)[0].astype(jnp.float32)

    precond = curvature.state_second_moment(opt_state, params)
    if precond is None or any(theory.get(k) is None for k in ("b1", "b2")):
        return {"sharpness/lambda_max": curvature.sharpness(loss_of, params, iters=iters)}
    nu, count = precond
    out = curvature.sharpness_scalars(
        loss_of, params, nu, count, learning_rate=optim.learning_rate(opt_state),
        b1=theory["b1"], b2=theory["b2"], eps=theory.get("eps") or 0.0,
        bias_correction=theory.get("bias_correction", True) is not False, iters=iters)
    out["sharpness/threshold"] = out.pop("sharpness/adam_threshold")
    return out


def split_microbatches(batch, k: int):
    """[B, ...] leaves -> [k, B/k, ...]: microbatch i holds rows i, i + k, ... (each device's
    contiguous rows split evenly, so every microbatch keeps the batch sharding)."""
    from optaxlab.train import mesh as mesh_lib

    def one(x):
        if x.shape[0] % k:
            raise ValueError(f"grad_accum_steps={k} must divide the batch size {x.shape[0]}")
        y = x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1)
        return mesh_lib.constrain(y, (None, "batch") + (None,) * (x.ndim - 1))

    return jax.tree.map(one, batch)


def _all_finite(tree) -> jax.Array:
    """True when every float leaf of `tree` is finite (one fused reduction per leaf)."""
    checks = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(checks)) if checks else jnp.bool_(True)


def train_step(state: TrainState, batch, *, graphdef, tx: optax.GradientTransformation,
               loss_fn: Callable, watch: optax.GradientTransformation | None = None,
               grad_accum_steps: int = 1, microbatch_fn: MicrobatchFold | None = None):
    """One optimizer step. Returns (new state, metrics, the monitor's stats or None).

    metrics['grad_finite'] / ['param_finite'] hold one flag per parameter leaf (in
    `jax.tree.leaves(params)` order) for the gradient and the updated parameter, and
    ['state_finite'] one flag for the new optimizer state and model variables, so the host can
    name what went wrong.
    """
    out = loss_and_grads(state.params, state.rest, batch, graphdef=graphdef, loss_fn=loss_fn,
                         grad_accum_steps=grad_accum_steps, microbatch_fn=microbatch_fn)
    new_state, metrics, stats = apply_gradients(state, out, tx=tx, watch=watch)
    if microbatch_fn is not None and microbatch_fn.finish is not None:
        metrics.update(microbatch_fn.finish(out[1]["microbatch"], out[3]))
    return new_state, metrics, stats


def loss_and_grads(params, rest, batch, *, graphdef, loss_fn: Callable,
                   grad_accum_steps: int = 1, microbatch_fn: MicrobatchFold | None = None):
    """The model's half of a train step: (loss, aux, new model variables, gradients).

    With grad_accum_steps = k > 1 the batch is split into k microbatches
    (`split_microbatches`) scanned in order: loss and gradients are the means over them (the
    full batch's, for equal-size microbatches), SUMMED_AUX entries are summed, other aux
    entries averaged, and the model variables (`rest`) are threaded through the microbatches.
    `microbatch_fn` (a `MicrobatchFold`) adds `aux["microbatch"]`.
    """
    k = int(grad_accum_steps)
    if k < 1:
        raise ValueError(f"grad_accum_steps={grad_accum_steps!r} must be an int >= 1")

    def one(rest, micro):
        def loss_of(params):
            model = merge(graphdef, params, rest)
            loss, aux = loss_fn(model, micro, train=True)
            return loss, (aux, split(model)[2])

        (loss, (aux, new_rest)), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
        return loss, aux, new_rest, grads

    if k == 1:
        loss, aux, rest, grads = one(rest, batch)
        if microbatch_fn is not None:
            aux = {**aux, "microbatch": microbatch_fn.update(microbatch_fn.init(params), grads)}
        return loss, aux, rest, grads

    micros = split_microbatches(batch, k)
    shapes = jax.eval_shape(one, rest, jax.tree.map(lambda x: x[0], micros))
    zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), (shapes[0], shapes[1], shapes[3]))
    fold0 = None if microbatch_fn is None else microbatch_fn.init(params)

    def body(carry, micro):
        (loss_sum, aux_sum, grad_sum), rest, fold = carry
        loss, aux, rest, grads = one(rest, micro)
        if microbatch_fn is not None:
            fold = microbatch_fn.update(fold, grads)
        sums = jax.tree.map(jnp.add, (loss_sum, aux_sum, grad_sum), (loss, aux, grads))
        return (sums, rest, fold), None

    ((loss, aux, grads), rest, fold), _ = jax.lax.scan(body, (zeros, rest, fold0), micros)
    mean = lambda x: x / k
    loss, grads = mean(loss), jax.tree.map(mean, grads)
    aux = {key: val if key in SUMMED_AUX else jax.tree.map(mean, val) for key, val in aux.items()}
    if microbatch_fn is not None:
        aux["microbatch"] = fold
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


def on_mesh(fn: Callable, mesh) -> Callable:
    """`fn` traced under `mesh` (`jax.sharding.use_abstract_mesh`), so that code inside it sees
    the mesh's axes and platform (activation sharding constraints, attention_impl='auto')."""
    abstract = mesh.abstract_mesh

    @functools.wraps(fn)
    def traced(*args, **kwargs):
        with jax.sharding.use_abstract_mesh(abstract):
            return fn(*args, **kwargs)

    return traced


def compile_steps(*, graphdef, tx, task: str, state_shardings, batch_sharding,
                  replicated, watch: optax.GradientTransformation | None = None,
                  grad_accum_steps: int = 1, microbatch_fn: MicrobatchFold | None = None):
    """(train step, eval step), both jitted and traced under `batch_sharding.mesh`. With
    `watch` (`optaxlab.monitor.watch(tx)`) the train step returns the monitor's statistics
    (computed on its `every`-th steps); without, it contains no monitor code.
    `grad_accum_steps` / `microbatch_fn`: see `loss_and_grads`."""
    loss_fn = LOSSES[task]
    mesh = batch_sharding.mesh
    step = functools.partial(train_step, graphdef=graphdef, tx=tx, loss_fn=loss_fn, watch=watch,
                             grad_accum_steps=grad_accum_steps, microbatch_fn=microbatch_fn)
    train = jax.jit(on_mesh(step, mesh),
                    in_shardings=(state_shardings, batch_sharding),
                    out_shardings=(state_shardings, replicated, replicated),
                    donate_argnums=(0,))
    evaluate = jax.jit(on_mesh(functools.partial(eval_step, graphdef=graphdef, loss_fn=loss_fn),
                               mesh),
                       in_shardings=(state_shardings.params, state_shardings.rest,
                                     state_shardings.opt_state, batch_sharding),
                       out_shardings=replicated)
    return train, evaluate
