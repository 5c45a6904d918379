"""`watch(tx)`: any optax transformation, with per-layer update statistics kept in its state.

    tx = monitor.watch(optax.adam(1e-3), learning_rate=1e-3, b1=0.9, b2=0.999)
    ...                                   # updates, state = tx.update(grads, state, params)
    monitor.write(writer, step, monitor.latest(state))   # on the host

The statistics (`optaxlab.monitor.stats`) are computed inside `update`, so inside whatever jitted
step calls it, and only small arrays are kept: a few raw sums per layer and two histograms.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optaxlab.monitor import stats as stats_lib
from optaxlab.monitor.config import Settings, settings


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=("step", "hparams", "layers", "hist"),
                   meta_fields=("names", "settings"))
@dataclasses.dataclass(frozen=True)
class Stats:
    """The statistics of one update (device arrays inside the step, numpy after a fetch).

    The layer names and the settings are static pytree metadata: they travel with the arrays
    through jit, `jax.device_get`, `jax.vmap` and checkpoints, with no lookup table.
    """

    names: tuple[str, ...]  # the monitored layers, row order of `layers` and `hist`
    settings: Settings
    step: Any  # int32[]: the update these statistics are from (1 = the first; 0 = none yet)
    hparams: Any  # float32[4]: lr, b1, b2, eps of that update (NaN where unknown)
    layers: Any  # float32[L, len(LAYER_FIELDS)]: raw sums per layer
    hist: Any  # int32[L, 2, bins + 2]: Delta and gradient histograms ([L, 2, 0] without)

    def row(self, layer: str) -> np.ndarray:
        """One layer's raw sums (LAYER_FIELDS order) as numpy."""
        return np.asarray(self.layers)[self.names.index(layer)]

    def histogram(self, layer: str, kind: str = "delta") -> np.ndarray:
        """One layer's 'delta' or 'grad' histogram: bins + 2 counts (underflow, bins, overflow)."""
        return np.asarray(self.hist)[self.names.index(layer), 0 if kind == "delta" else 1]

    def hparam(self, name: str) -> float | None:
        """'learning_rate', 'b1', 'b2' or 'eps' of the update as a float (None if unknown)."""
        x = float(np.asarray(self.hparams)[stats_lib.HPARAMS.index(name)])
        return None if math.isnan(x) else x


class WatchState(NamedTuple):
    """State of `watch`: its own update count, the watched transformation's state, and the
    statistics of the last monitored update."""

    count: jax.Array  # int32[]: updates done
    inner: optax.OptState
    stats: Stats


def watch(
    tx: optax.GradientTransformation,
    config=None,
    *,
    learning_rate: float | optax.Schedule | None = None,
    **settings_kw,
) -> optax.GradientTransformationExtraArgs:
    r"""Wraps an optax transformation so that its updates are monitored, layer by layer.

    `update(grads, state, params)` runs `tx`, then (on every `every`-th update) computes per
    parameter leaf (or module), inside the same traced update:

    - the normalized update :math:`\Delta_t = (\theta_t - \theta_{t-1}) / \eta_t = u_t / \eta_t`
      ("On the Distributional Properties of Adaptive Gradients"): its histogram on fixed bins
      of :math:`[-R, R]` plus under/overflow, and the sums giving :math:`\mathrm{Var}[\Delta]`,
      :math:`\mathrm{Var}[|\Delta|]`, mean :math:`|\Delta|`, skewness, kurtosis, tail mass;
    - the gradient's histogram (of :math:`g / \mathrm{rms}(g)` by default) and norm;
    - the update/parameter RMS ratio;
    - from the optimizer state's first/second moments (Adam's :math:`(\mu, \nu)` or the
      Gaussian VI tracker's (mean, var)): the spread
      :math:`\gamma = \sqrt{v - m^2} / |m|` and the step it predicts,
      :math:`1 / \sqrt{1 + \gamma^2}` ("Gradient Spread as an Intuition for the Adam
      Optimizer"), and the tracker's SNR :math:`|m| / s` ("In Search of Adam's Secret Sauce").

    They are kept, small, in the state (`latest` reads them) and turned into TensorBoard
    histograms, scalars and the theory distances on the host by `write`. The updates are
    exactly `tx`'s.

    The learning rate :math:`\eta_t` is `learning_rate` (a float, or a schedule evaluated at
    the number of updates done before this one, as optax's own schedules are), else the
    'learning_rate' of an `optax.inject_hyperparams` state inside `tx`. The theory overlay
    needs the optimizer's b1/b2 (settings `b1`, `b2`, `eps`, `bias_correction`); when not
    given they are read from an `inject_hyperparams` state ('b1', 'b2'; 'beta' for both):
    optax's `ScaleByAdamState` and the VI tracker's state do not store them.

    `every=N` computes the statistics on updates N, 2N, ... only: the others run one scalar
    `lax.cond` on the update count and keep the previous statistics. Under `jax.vmap` over
    ensemble members, pass the state with `vmap_axes` so that the count stays unbatched and the
    cond a real branch (a batched predicate turns it into a select that computes both sides).
    With `every=0` `watch` returns `tx` itself (not wrapping costs nothing).

    Sharded parameters are counted per shard and the partial sums all-reduced: no leaf is
    gathered. Works under `jax.jit`, `optax.MultiSteps` (inside or outside), inside
    `optax.chain`, and with `flax.nnx.Optimizer`.

    Args:
      tx: the optax transformation to monitor (any; extra update arguments are passed on).
      config: a `config.monitor` block (`optaxlab.monitor.default_config()`), a dict, a
        `Settings`, or None (the defaults).
      learning_rate: the learning rate the update was scaled by (float or optax schedule);
        None: read it from an `inject_hyperparams` state in `tx`.
      **settings_kw: any field of `default_config()` (e.g. `every=10`, `b2=0.95`, `bins=129`),
        overriding `config`.

    Returns:
      An `optax.GradientTransformationExtraArgs` whose state is a `WatchState`.

    Raises:
      ValueError: for a bad setting or learning rate (at construction), or, at `init`, when
        there is no learning rate to normalize by.

    References:
      Zhang & Liu, On the Distributional Properties of Adaptive Gradients (UAI 2021,
      arXiv:2105.07222); Eigen, Gradient Spread as an Intuition for the Adam Optimizer (2025);
      Orvieto & Gower, In Search of Adam's Secret Sauce (2025, arXiv:2505.21829).
    """
    s = settings(config, **settings_kw)
    if s.every == 0:
        return tx
    _check_learning_rate(learning_rate)
    tx = optax.with_extra_args_support(tx)

    def groups_of(tree) -> dict[str, list[str]]:
        return stats_lib.layer_groups(stats_lib.named_leaves(tree), s)

    def init_fn(params):
        inner = tx.init(params)
        if learning_rate is None and "learning_rate" not in stats_lib.find_hyperparams(inner):
            raise ValueError(
                "monitor.watch: no learning rate to normalize the update by (Delta = update / lr):"
                " pass learning_rate= (a float or an optax schedule), or watch an "
                "optax.inject_hyperparams(...) optimizer, whose state holds it")
        names = tuple(groups_of(params))
        width = s.bins + 2 if s.histograms else 0
        stats = Stats(
            names=names, settings=s, step=jnp.zeros([], jnp.int32),
            hparams=jnp.full((len(stats_lib.HPARAMS),), jnp.nan, jnp.float32),
            layers=jnp.zeros((len(names), len(stats_lib.LAYER_FIELDS)), jnp.float32),
            hist=jnp.zeros((len(names), 2, width), jnp.int32),
        )
        return WatchState(count=jnp.zeros([], jnp.int32), inner=inner, stats=stats)

    def update_fn(updates, state, params=None, **extra_args):
        grads = updates
        updates, inner = tx.update(grads, state.inner, params, **extra_args)
        count = optax.safe_increment(state.count)

        def measure() -> Stats:
            return _measure(grads, updates, params, inner, state.count, count, learning_rate,
                            groups_of(grads), s)

        if s.every == 1:
            stats = measure()
        else:  # a scalar predicate of the count alone (see `vmap_axes`)
            stats = jax.lax.cond(count % s.every == 0, measure, lambda: state.stats)
        return updates, WatchState(count=count, inner=inner, stats=stats)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _check_learning_rate(lr) -> None:
    """ValueError unless lr is None, a schedule, a number >= 0 or a scalar array (e.g. the
    traced value inject_hyperparams passes to a factory)."""
    if lr is None or callable(lr):
        return
    if isinstance(lr, (jax.Array, np.ndarray, np.generic)) and np.ndim(lr) == 0:
        if isinstance(lr, jax.core.Tracer):
            return
        lr = float(lr)
    if not (isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr)
            and lr >= 0):
        raise ValueError(f"learning_rate={lr!r}: must be a finite number >= 0, an optax "
                         "schedule, or None (read it from an inject_hyperparams state)")


def _measure(grads, updates, params, inner, done, count, learning_rate, groups,
             s: Settings) -> Stats:
    """The statistics of one update (`done` updates before it, `count` = done + 1)."""
    names = stats_lib.named_leaves(grads)
    for k, tree in (("updates", updates), ("params", params)):
        if tree is not None:
            other = stats_lib.named_leaves(tree)
            missing = [n for n in names if n not in other]
            if missing:
                raise ValueError(f"monitor.watch: {k} lack the gradient leaves {missing[:5]}; "
                                 "grads, updates and params must have the same structure")
    hp = stats_lib.find_hyperparams(inner)
    f32 = jnp.float32
    if learning_rate is None:
        lr = jnp.asarray(hp["learning_rate"], f32)
    elif callable(learning_rate):
        lr = jnp.asarray(learning_rate(done), f32)
    else:
        lr = jnp.asarray(learning_rate, f32)
    known = {k: getattr(s, k) if getattr(s, k) is not None else hp.get(k)
             for k in ("b1", "b2", "eps")}
    moments = stats_lib.find_moments(inner)
    corr = None
    if moments and s.bias_correction and known["b1"] is not None and known["b2"] is not None:
        t = jnp.maximum(_moment_count(inner, count).astype(f32), 1.0)
        b1, b2 = jnp.asarray(known["b1"], f32), jnp.asarray(known["b2"], f32)
        corr = (1.0 - b1**t, jnp.where(b2 < 1.0, 1.0 - b2**t, 1.0))
    inv_lr = 1.0 / jnp.where(lr == 0, 1.0, lr)
    layers, hist = stats_lib.layer_stats(grads, updates, params, moments, inv_lr, corr, groups, s)
    nan = jnp.asarray(jnp.nan, f32)
    hparams = jnp.stack([lr] + [nan if known[k] is None else jnp.asarray(known[k], f32)
                                for k in ("b1", "b2", "eps")])
    return Stats(names=tuple(groups), settings=s, step=count, hparams=hparams, layers=layers,
                 hist=hist)


def _moment_count(inner, default):
    """The `count` of the optimizer state that holds the moments (their bias-correction step),
    else `default` (e.g. under MultiSteps the moments advance once per k watch updates)."""
    is_m = stats_lib._is_moment_node
    for node in jax.tree.leaves(inner, is_leaf=is_m):
        if is_m(node) and "count" in node._fields:
            return jnp.asarray(node.count)
    return default


def _value(x):
    """An array from an array or a `flax.nnx.Variable` (as in `nnx.Optimizer.opt_state`)."""
    return x.get_value() if hasattr(x, "get_value") else x


def _is_watch_state(x) -> bool:
    return isinstance(x, WatchState)


def _watch_states(opt_state) -> list[WatchState]:
    # One flatten with an isinstance test (~20 us for a 22-leaf Adam state) rather than
    # `optax.tree.get_all_with_path(opt_state, "WatchState")` (~0.4 ms: key paths of every node).
    return [x for x in jax.tree.leaves(opt_state, is_leaf=_is_watch_state)
            if isinstance(x, WatchState)]


def latest(opt_state) -> Stats | None:
    """The statistics of the last monitored update kept in an optimizer state.

    Searches the whole state (so `watch` may sit under `optax.inject_hyperparams`,
    `optax.MultiSteps`, in a chain, or in `flax.nnx.Optimizer.opt_state`).

    Args:
      opt_state: a state holding exactly one `WatchState`.

    Returns:
      A `Stats` (device arrays; `write` fetches them), or None when the state has no
      `WatchState` or (outside a trace) nothing has been monitored yet. With `every=N`
      between monitored updates this is the previous monitored update's statistics:
      `stats.step` tells which update they are from.

    Raises:
      ValueError: when the state holds several `WatchState`s (nested `watch`).
    """
    found = _watch_states(opt_state)
    if not found:
        return None
    if len(found) > 1:
        raise ValueError(f"monitor.latest: the optimizer state holds {len(found)} watch states "
                         "(nested monitor.watch); pass the state of one of them")
    stats = jax.tree.map(_value, found[0].stats, is_leaf=lambda x: hasattr(x, "get_value"))
    if not isinstance(stats.step, jax.core.Tracer) and not np.any(np.asarray(stats.step)):
        return None  # (a vmapped state has one step per member)
    return stats


def attach(watched: optax.GradientTransformation, inner, params, count) -> WatchState:
    """A `WatchState` of `watched` around a state of the transformation it watches.

    For trainers that keep (and checkpoint) the watched transformation's state only and attach
    the monitor for one update::

      updates, w = watched.update(grads, attach(watched, opt_state, params, step), params)
      opt_state, stats = w.inner, latest(w)

    Checkpoints then do not depend on the monitor's settings (every, bins, layers), and
    `every` counts `count` (e.g. the trainer's step). Traceable: the statistics' template
    comes from `jax.eval_shape(watched.init, params)`, so nothing is computed for it.

    Args:
      watched: the transformation returned by `watch(tx, ...)`.
      inner: a state of `tx` (what `WatchState.inner` holds).
      params: the parameters (for the layer layout).
      count: the number of updates done (int or traced int32 scalar).

    Returns:
      `WatchState(count, inner, stats)` with zero statistics (`latest` gives None for it).
    """
    shapes = jax.eval_shape(watched.init, params)
    stats = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes.stats)
    return WatchState(count=jnp.asarray(count, jnp.int32), inner=inner, stats=stats)


def vmap_axes(opt_state, axis: int = 0):
    """`in_axes` / `out_axes` for `jax.vmap` over ensemble members of a state with `watch`.

    Members of one vmapped step update in lockstep, so one update count serves them all; kept
    unbatched, the `every` predicate stays a scalar and `lax.cond` a real branch (batched, vmap
    turns the cond into a select: every member would compute its statistics on every step).
    Build the batched state with the same axes, e.g.
    `jax.vmap(tx.init, out_axes=vmap_axes(jax.eval_shape(tx.init, params)))(member_params)`.

    Args:
      opt_state: a (batched or abstract) optimizer state holding `WatchState`s.
      axis: the member axis.

    Returns:
      A pytree prefix of `opt_state`: `axis` everywhere except None at each `WatchState.count`.
    """
    def one(x):
        if isinstance(x, WatchState):
            return WatchState(count=None, inner=vmap_axes(x.inner, axis),
                              stats=jax.tree.map(lambda _: axis, x.stats))
        return axis

    return jax.tree.map(one, opt_state, is_leaf=lambda x: isinstance(x, WatchState))
