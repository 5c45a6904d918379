"""On-device statistics of one optimizer update: per-layer raw sums and fixed-bin histograms.

Everything here runs inside the jitted update and returns only small arrays. Per parameter leaf
(`leaf_sums`, mapped over the leaves) it sums the raw moments of the normalized update
Delta = update / lr, of the gradient and of the optimizer's moment estimates, and bins Delta and
the gradient: arithmetic binning (floor of the scaled value, clipped to an underflow and an
overflow bin; NaN to a bin of its own), then one scatter-add of ones into the joint
(Delta bin, gradient bin) grid of (bins + 3)^2 counters, whose two marginals are the two
histograms. The index array keeps the leaf's shape, so for a sharded leaf XLA counts per shard
and all-reduces the counters; no leaf is gathered (`jnp.bincount` of the raveled leaf would
all-gather a 2-D-sharded leaf to flatten it), and the plain sums are per-shard partial sums plus
an all-reduce too.

The sums are raw (count, sum x, sum x^2, sum |x|, sum x^3, sum x^4, min, max, ...) rather than
derived scalars: they add across leaves (group='module') and the host turns them into variances,
skewness and distances in float64 (`optaxlab.monitor.overlay.summarize`). Layer names are the
leaves' tree paths, spelled `jax.tree_util.keystr(path, simple=True, separator="/")`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optaxlab import theory
from optaxlab.monitor.config import Settings

# Columns of the per-layer rows (float32[L, F]). Sums are over the layer's coordinates.
LAYER_FIELDS = (
    "n",  # number of coordinates
    "d_nan",  # coordinates whose Delta is NaN (not binned)
    "d_sum",  # sum Delta
    "d_sum2",  # sum Delta^2
    "d_sumabs",  # sum |Delta|
    "d_sum3",  # sum Delta^3
    "d_sum4",  # sum Delta^4
    "dn_sum",  # sum and sum of squares of the binned Delta (Delta / its rms with delta_scale='rms')
    "dn_sum2",
    "d_min",  # min and max of the binned Delta
    "d_max",
    "d_tail",  # coordinates with |Delta| > tail
    "u_sum2",  # sum of squared raw updates (theta_t - theta_{t-1})^2
    "p_sum2",  # sum of squared parameters (before the update; 0 without params)
    "g_sum",  # sum g
    "g_sum2",  # sum g^2
    "g_nan",
    "gn_sum",  # sum and sum of squares of the binned (scaled) gradient, its min and max
    "gn_sum2",
    "gn_min",
    "gn_max",
    "spread_sum",  # sum of gamma = sqrt(v - m^2)/|m| over coordinates with m != 0
    "spread_n",
    "spread_logsum",  # sum of log(max(gamma, 1e-6)) over the same coordinates (geometric mean)
    "step_sum",  # sum of |m|/sqrt(v) = 1/sqrt(1 + gamma^2) (0 where v = 0)
    "step_n",
    "snr_sum",  # sum of |mean|/sqrt(var) for the Gaussian VI tracker, over var > 0
    "snr_n",
)
FIELD = {k: i for i, k in enumerate(LAYER_FIELDS)}
_MIN = np.array([k.endswith("_min") for k in LAYER_FIELDS])
_MAX = np.array([k.endswith("_max") for k in LAYER_FIELDS])


class Moments(NamedTuple):
    """One parameter leaf's first/second moment from the optimizer state."""

    first: jax.Array  # Adam's mu, or the tracker's mean
    second: jax.Array  # E[g^2]: Adam's nu, or the tracker's nu (its var + mean^2)
    kind: str  # 'adam' or 'vi' (the tracker: its SNR is logged); second = E[g^2] for both


def path_name(path) -> str:
    """A leaf's name: its key path as `jax.tree_util.keystr(path, simple=True, separator="/")`,
    e.g. 'blocks/0/mlp/up/kernel'."""
    return jax.tree_util.keystr(path, simple=True, separator="/")


def _is_variable(x) -> bool:  # a flax.nnx.Variable (nnx.Optimizer initializes with them)
    return hasattr(x, "get_value")


def named_leaves(tree) -> dict[str, Any]:
    """{path_name: leaf} of a pytree, in `jax.tree.leaves` order; a `flax.nnx.Variable` is one
    leaf (its value), named by the path to it."""
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_variable)[0]
    return {path_name(p): x.get_value() if _is_variable(x) else x for p, x in leaves}


def layer_groups(names, s: Settings) -> dict[str, list[str]]:
    """The monitored layers and their leaves.

    Args:
      names: the leaf names (`named_leaves(params)`).
      s: the settings: group='leaf' (one layer per leaf) or 'module' (the leaves that share a
        parent path: 'blocks/0/mlp/kernel' and '.../bias' -> 'blocks/0/mlp'); include/exclude
        regexes filter layer names.

    Returns:
      {layer name: [leaf names]}, in sorted layer-name order.
    """
    groups: dict[str, list[str]] = {}
    for name in names:
        layer = name.rsplit("/", 1)[0] if s.group == "module" and "/" in name else name
        if s.selected(layer):
            groups.setdefault(layer, []).append(name)
    return {k: groups[k] for k in sorted(groups)}


# Moment-like optimizer states that are not (E[g], E[g^2]) or (mean, var) of the raw gradient
# (matched by type name: the monitor does not import optaxlab.transforms).
_NOT_MOMENTS = ("ScaleByACClipState", "ScaleByLaPropState")


def _is_moment_node(x) -> bool:
    fields = getattr(x, "_fields", None)
    if not isinstance(x, tuple) or fields is None or type(x).__name__ in _NOT_MOMENTS:
        return False
    return "nu" in fields and ("mu" in fields or "mean" in fields)


def find_moments(opt_state) -> dict[str, Moments]:
    """{leaf name: Moments} from the first (mu, nu) or (mean, nu) NamedTuple of a state.

    Adam's `ScaleByAdamState` gives kind 'adam', the Gaussian VI tracker's state kind 'vi'.
    The moment trees are matched to the parameters by path name, so wrappers (chain,
    inject_hyperparams, masked, MultiSteps, watch) are looked through. {} without such a state.
    """
    for node in jax.tree.leaves(opt_state, is_leaf=_is_moment_node):
        if _is_moment_node(node):
            adam = "mu" in node._fields
            first, second = (node.mu, node.nu) if adam else (node.mean, node.nu)
            f, s = named_leaves(first), named_leaves(second)
            return {k: Moments(f[k], s[k], "adam" if adam else "vi") for k in f if k in s}
    return {}


# Hyperparameter names of an inject_hyperparams state -> the monitor's (lr, b1, b2, eps).
HPARAMS = ("learning_rate", "b1", "b2", "eps")


def find_hyperparams(opt_state, optimizer: str | None = None) -> dict[str, Any]:
    """Learning rate, b1, b2 and eps from the first `optax.inject_hyperparams` state found;
    absent keys are left out.

    b1, b2 and eps are read through the optimizer registry's theory mapping ({field: hparam
    name or number}, `optaxlab.optimizers.entry(optimizer).theory`) when `optimizer` is given:
    adam_equal_betas' 'beta' gives b1 = b2, rmsprop's b1 is the number 0, and an optimizer
    that declares no theory gives only the learning rate. An inject_hyperparams state does not
    record its optimizer, so without `optimizer` (the fallback) each field is read from the
    hparam of its own name, else from the first hparam present that a registry row's theory
    mapping reads the field from under another name, rows in table order (built-ins first):
    'beta' for b1 and b2, from adam_equal_betas.

    Args:
      opt_state: any optimizer state (chains, masked, MultiSteps, watch are looked through).
      optimizer: a registered optimizer name (or reference), or None.

    Returns:
      {'learning_rate' | 'b1' | 'b2' | 'eps': value} (arrays from the state; numbers where the
      mapping gives a number).
    """
    is_hp = lambda x: isinstance(x, tuple) and "hyperparams" in getattr(x, "_fields", ())
    for node in jax.tree.leaves(opt_state, is_leaf=is_hp):
        if is_hp(node) and isinstance(node.hyperparams, Mapping):
            hp = dict(node.hyperparams)
            out = {"learning_rate": hp["learning_rate"]} if "learning_rate" in hp else {}
            for field, sources in _theory_sources(optimizer).items():
                for source in sources:
                    if not isinstance(source, str):
                        out[field] = float(source)
                        break
                    if source in hp:
                        out[field] = hp[source]
                        break
            return out
    return {}


def _theory_sources(optimizer: str | None) -> dict[str, tuple[str | float, ...]]:
    """{b1 | b2 | eps: where to read it, in order} (see `find_hyperparams`), from the registry."""
    from optaxlab import optimizers  # lazy: the monitor imports nothing above it at import time

    fields = HPARAMS[1:]
    if optimizer is not None:
        theory = optimizers.entry(optimizer).theory or {}
        return {f: (theory[f],) for f in fields if f in theory}
    other: dict[str, dict[str, None]] = {f: {} for f in fields}  # ordered sets
    for name in optimizers.names():
        for f, source in (optimizers.entry(name).theory or {}).items():
            if f in other and isinstance(source, str) and source != f:
                other[f][source] = None
    return {f: (f, *other[f]) for f in fields}


def _bin_index(x: jax.Array, r: float, bins: int) -> jax.Array:
    """int32 bin of each coordinate (x keeps its shape): 0 underflow, 1..bins the bins of
    [-r, r), bins + 1 overflow, bins + 2 NaN."""
    t = jnp.floor((x + r) * (bins / (2.0 * r)))
    i = jnp.clip(t, -1.0, float(bins)) + 1.0
    return jnp.where(jnp.isnan(x), float(bins + 2), i).astype(jnp.int32)


def leaf_sums(g, u, p, moments: Moments | None, inv_lr, corr, s: Settings):
    """Raw sums of one leaf: (float32[len(LAYER_FIELDS)], int32[2, bins + 3] or None).

    Args:
      g, u, p: the leaf's gradient, update and parameter (p may be None).
      moments: the leaf's moment estimates from the optimizer state, or None.
      inv_lr: 1 / lr_t (traced scalar); Delta = u * inv_lr.
      corr: (1 - b1^t, 1 - b2^t) bias corrections of the moments, or None (raw moments).
      s: the settings.

    Returns:
      The sums in LAYER_FIELDS order and, with histograms, the Delta and gradient histograms
      (underflow, bins, overflow, NaN).
    """
    lead = lambda x: None if x is None else x[None]  # a leading axis (no reshape, no gather)
    m = None if moments is None else Moments(lead(moments.first), lead(moments.second),
                                             moments.kind)
    rows, hist = stacked_sums(lead(g), lead(u), lead(p), m, inv_lr, corr, s)
    return rows[0], None if hist is None else hist[0]


def stacked_sums(g, u, p, moments: Moments | None, inv_lr, corr, s: Settings):
    """`leaf_sums` of k leaves of one shape at once, stacked on a leading axis of size k.

    Returns:
      (float32[k, len(LAYER_FIELDS)], int32[k, 2, bins + 3] or None).
    """
    f32 = jnp.float32
    k = g.shape[0]
    axes = tuple(range(1, g.ndim))
    col = lambda x: x.reshape((k,) + (1,) * len(axes))  # [k] -> broadcasts against a leaf
    n = jnp.full((k,), math.prod(g.shape[1:]), f32)
    g, u = g.astype(f32), u.astype(f32)
    total = lambda x: jnp.sum(x, axis=axes, dtype=f32)
    count = lambda b: jnp.sum(b, axis=axes, dtype=f32)
    d = u * inv_lr
    d2 = d * d
    v = dict(
        n=n,
        d_sum=total(d),
        d_sum2=total(d2),
        d_sumabs=total(jnp.abs(d)),
        d_sum3=total(d2 * d),
        d_sum4=total(d2 * d2),
        d_tail=count(jnp.abs(d) > s.tail),
        g_sum=total(g),
        g_sum2=total(g * g),
        d_min=jnp.min(d, axis=axes),
        d_max=jnp.max(d, axis=axes),
        gn_min=jnp.min(g, axis=axes),
        gn_max=jnp.max(g, axis=axes),
    )
    v["u_sum2"] = v["d_sum2"] / (inv_lr * inv_lr)  # u = Delta * lr
    if p is not None:
        p = p.astype(f32)
        v["p_sum2"] = total(p * p)
    if moments is not None:
        m, second = moments.first.astype(f32), moments.second.astype(f32)
        msq = second  # E[g^2]: Adam's nu, or the tracker's nu = var + mean^2
        if corr is not None:
            m, msq = m / corr[0], msq / corr[1]
        gamma = theory.spread(m, msq)  # inf where m = 0, nan where m = v = 0
        ok = jnp.isfinite(gamma)
        v["spread_sum"] = total(jnp.where(ok, gamma, 0.0))
        v["spread_n"] = count(ok)
        v["spread_logsum"] = total(jnp.where(ok, jnp.log(jnp.maximum(gamma, 1e-6)), 0.0))
        # predicted step 1/sqrt(1 + gamma^2) = |m|/sqrt(v): Adam's direction, 0 where v = 0
        # (a coordinate that never had a gradient does not move), averaged over every
        # coordinate as update_mean_abs is, so the two compare also with dead units or unseen
        # embedding rows.
        v["step_sum"] = total(jnp.abs(theory.adam_direction(m, msq)))
        v["step_n"] = n
        if moments.kind == "vi":
            var = jnp.maximum(msq - m * m, 0.0)
            pos = var > 0
            snr = jnp.abs(m) * jax.lax.rsqrt(jnp.where(pos, var, 1.0))
            v["snr_sum"] = total(jnp.where(pos, snr, 0.0))
            v["snr_n"] = count(pos)

    def scale(sum2, kind):  # rms = sqrt(mean x^2); 1 when 0 or not finite
        if kind == "none":
            return jnp.ones((k,), f32)
        rms = jnp.sqrt(sum2 / n)
        return jnp.where((rms > 0) & jnp.isfinite(rms), rms, 1.0)

    d_scale, g_scale = scale(v["d_sum2"], s.delta_scale), scale(v["g_sum2"], s.grad_scale)
    # Sums of the binned values, their min and max (x -> x / scale is monotone for scale > 0).
    v.update(dn_sum=v["d_sum"] / d_scale, dn_sum2=v["d_sum2"] / (d_scale * d_scale),
             gn_sum=v["g_sum"] / g_scale, gn_sum2=v["g_sum2"] / (g_scale * g_scale),
             d_min=v["d_min"] / d_scale, d_max=v["d_max"] / d_scale,
             gn_min=v["gn_min"] / g_scale, gn_max=v["gn_max"] / g_scale)
    hist = None
    if s.histograms:
        n_bins = s.bins + 3
        joint = _bin_index(d / col(d_scale), s.delta_range, s.bins) * n_bins
        joint = joint + _bin_index(g / col(g_scale), s.grad_range, s.bins)
        if k > 1:  # each leaf its own block of counters
            joint = joint + jax.lax.broadcasted_iota(jnp.int32, g.shape, 0) * (n_bins * n_bins)
        counts = jnp.zeros((k * n_bins * n_bins,), jnp.int32)
        counts = counts.at[joint].add(1, mode="promise_in_bounds").reshape(k, n_bins, n_bins)
        hist = jnp.stack([counts.sum(axis=2), counts.sum(axis=1)], axis=1)  # Delta, gradient
        v["d_nan"], v["g_nan"] = hist[:, 0, -1].astype(f32), hist[:, 1, -1].astype(f32)
    else:
        v["d_nan"], v["g_nan"] = count(jnp.isnan(d)), count(jnp.isnan(g))
    zero = jnp.zeros((k,), f32)
    return jnp.stack([v.get(f, zero) for f in LAYER_FIELDS], axis=1), hist


# On one device, leaves of one shape and dtype (the blocks of a transformer repeat theirs) are
# stacked and counted together: a few dozen XLA kernels per shape rather than per leaf (on
# XLA:CPU the 21 leaves of lm_tiny took ~1000 kernels, ~0.7 ms of a 15 ms step). Stacking
# copies the leaves, so only those of at most STACK_MAX coordinates are stacked. With several
# devices equal shapes may be sharded differently (q and a transposed out-projection), and a
# stack would reshard them: each leaf is then counted on its own, per shard.
STACK_MAX = 1 << 20


def _can_stack() -> bool:
    return jax.device_count() == 1


def all_leaf_sums(gl, ul, pl, moments: Mapping[str, Moments], names, inv_lr, corr,
                  s: Settings):
    """`leaf_sums` of the leaves `names`; on one device, leaves of equal shape stacked.

    Returns:
      (float32[len(names), F], int32[len(names), 2, bins + 3] or None), rows in `names` order.
    """
    parts, order = [], []
    stack = _can_stack()
    same: dict[tuple, list[str]] = {}
    for k in names:
        mom = moments.get(k)
        key = (gl[k].shape, gl[k].dtype, ul[k].dtype, k in pl and pl[k].dtype,
               mom and (mom.kind, mom.first.dtype, mom.second.dtype))
        if gl[k].size > STACK_MAX or not stack:
            key = (k,)  # alone
        same.setdefault(key, []).append(k)
    for ks in same.values():
        mom = moments.get(ks[0])
        if len(ks) == 1:
            lead = lambda xs: xs[0][None]  # a leading axis (no reshape, no gather)
        else:
            lead = jnp.stack
        if mom is not None:
            mom = Moments(lead([moments[k].first for k in ks]),
                          lead([moments[k].second for k in ks]), mom.kind)
        parts.append(stacked_sums(lead([gl[k] for k in ks]), lead([ul[k] for k in ks]),
                                  lead([pl[k] for k in ks]) if ks[0] in pl else None, mom,
                                  inv_lr, corr, s))
        order += ks
    if not parts:
        return jnp.zeros((0, len(LAYER_FIELDS)), jnp.float32), None
    where = {k: i for i, k in enumerate(order)}
    perm = np.array([where[k] for k in names])
    identity = bool((perm == np.arange(len(perm))).all())
    cat = lambda xs: xs[0] if len(xs) == 1 else jnp.concatenate(xs)
    rows = cat([r for r, _ in parts])
    hist = None if parts[0][1] is None else cat([h for _, h in parts])
    if not identity:
        rows = rows[perm]
        hist = None if hist is None else hist[perm]
    return rows, hist


def _merge(rows: list[jax.Array]) -> jax.Array:
    """One layer's row from its leaves' rows: sums, and min / max in the min / max columns."""
    if len(rows) == 1:
        return rows[0]
    r = jnp.stack(rows)
    return jnp.where(_MIN, r.min(0), jnp.where(_MAX, r.max(0), r.sum(0)))


def layer_stats(grads, updates, params, moments: Mapping[str, Moments], inv_lr, corr,
                groups: Mapping[str, list[str]], s: Settings):
    """(float32[L, F] raw sums, int32[L, 2, bins + 2] histograms or [L, 2, 0]) per layer of
    `groups` ({layer: [leaf names]}, from `layer_groups`). Pure and jittable."""
    gl, ul = named_leaves(grads), named_leaves(updates)
    pl = named_leaves(params) if params is not None else {}
    names = [k for ks in groups.values() for k in ks]
    leaf_rows, leaf_hist = all_leaf_sums(gl, ul, pl, moments, names, inv_lr, corr, s)
    n = len(groups)
    width = s.bins + 2 if s.histograms else 0
    if len(names) == n:  # one leaf per layer (group='leaf')
        stats = leaf_rows
        hist = (leaf_hist[:, :, :width] if s.histograms and n
                else jnp.zeros((n, 2, width), jnp.int32))
        return stats, hist
    rows, hists, i = [], [], 0
    for leaves in groups.values():
        rows.append(_merge([leaf_rows[j] for j in range(i, i + len(leaves))]))
        if s.histograms:  # NaN bin dropped
            hists.append(leaf_hist[i : i + len(leaves)].sum(0)[:, :width])
        i += len(leaves)
    stats = jnp.stack(rows) if rows else jnp.zeros((0, len(LAYER_FIELDS)), jnp.float32)
    hist = jnp.stack(hists) if hists else jnp.zeros((n, 2, width), jnp.int32)
    return stats, hist
