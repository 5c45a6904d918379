"""On-device statistics of one train step: fixed-bin histograms and raw moment sums per layer.

Everything here runs inside the jitted train step and returns only small arrays. The binning is
arithmetic (floor of the scaled value, clipped to an underflow and an overflow bin; NaN to a bin
of its own) followed by one scatter-add of ones into the joint (Delta bin, gradient bin) grid of
(bins + 3)^2 counters, whose two marginals are the two histograms. The index array keeps the
leaf's own shape: for a sharded leaf XLA then counts per shard and all-reduces the counters; no
leaf is gathered (`jnp.bincount` of the raveled leaf would all-gather a 2-D-sharded leaf to
flatten it).

Per layer `measure` returns raw sums (count, sum x, sum x^2, sum |x|, sum x^3, sum x^4, min, max,
...) rather than derived scalars: they add across leaves, shards and layers, and the host turns
them into variances, skewness, distances in float64 (`optaxlab.monitor.overlay.summarize`).

Cost: about one pass over the coordinates per statistic (~20 fused elementwise + reduce kernels
per leaf) plus one scatter; see experiments/benchmarks/bench_monitor.py.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optaxlab import theory
from optaxlab.monitor.config import Settings, settings

# Columns of the per-layer rows of `stats` (float32[L, F]). Sums are over the layer's coordinates.
LAYER_FIELDS = (
    "n",  # number of coordinates
    "d_nan",  # coordinates whose Delta is NaN (not binned)
    "d_sum",  # sum Delta
    "d_sum2",  # sum Delta^2
    "d_sumabs",  # sum |Delta|
    "d_sum3",  # sum Delta^3
    "d_sum4",  # sum Delta^4
    "dn_sum",  # sum and sum of squares of the binned Delta (Delta / d_scale)
    "dn_sum2",
    "d_min",  # min and max of the binned Delta
    "d_max",
    "d_tail",  # coordinates with |Delta| > tail
    "d_scale",  # scale Delta was divided by before binning (1 or rms, per leaf; summed)
    "u_sum2",  # sum of squared raw updates (theta_t - theta_{t-1})^2
    "p_sum2",  # sum of squared parameters (before the update)
    "g_sum",  # sum g
    "g_sum2",  # sum g^2
    "g_nan",
    "gn_sum",  # sum of the binned (scaled) gradient
    "gn_sum2",
    "gn_min",
    "gn_max",
    "spread_sum",  # sum of gamma = sqrt(v - m^2)/|m| over coordinates with m != 0, v > 0
    "spread_n",
    "spread_logsum",  # sum of log(max(gamma, 1e-6)) over the same coordinates (geometric mean)
    "step_sum",  # sum of |m|/sqrt(v) = 1/sqrt(1 + gamma^2) over coordinates with v > 0
    "step_n",
    "snr_sum",  # sum of |mean|/sqrt(var) for the Gaussian VI tracker, over var > 0
    "snr_n",
)
FIELD = {k: i for i, k in enumerate(LAYER_FIELDS)}
_ADD = tuple(k for k in LAYER_FIELDS if not k.endswith(("_min", "_max")))


class MomentPair(NamedTuple):
    """One parameter leaf's first/second moment from the optimizer state."""

    first: jax.Array  # Adam's mu, or the tracker's mean
    second: jax.Array  # Adam's nu (E[g^2]), or the tracker's var (E[g^2] - E[g]^2)
    kind: str  # 'adam' (second = E[g^2]) or 'vi' (second = variance)


def _key_name(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def path_name(path) -> str:
    """'blocks/0/mlp/kernel' from a pytree key path (a trailing NNX '.value' is dropped)."""
    parts = [_key_name(k) for k in path]
    while parts and parts[-1] in ("value", "raw_value"):
        parts.pop()
    return "/".join(parts)


def _named_leaves(tree) -> dict[str, jax.Array]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {path_name(p): x for p, x in leaves}


def layer_groups(params, config) -> dict[str, list[str]]:
    """Layer name -> the parameter-leaf names it groups, after the include/exclude filters.

    Names come from the parameters' pytree paths; with group='module' the last path component
    (kernel, bias, scale, embedding) is dropped, so one module's leaves form one layer.
    """
    s = settings(config)
    groups: dict[str, list[str]] = {}
    for name in _named_leaves(params):
        layer = name.rsplit("/", 1)[0] if (s.group == "module" and "/" in name) else name
        if s.selected(layer):
            groups.setdefault(layer, []).append(name)
    return groups


# States whose (mu, nu) are *not* a gradient mean and second moment: ACClip's nu is an EMA of
# |g|^alpha and LaProp's mu is a momentum of normalized gradients, so seed 002's spread does not
# apply to them (matched by name: monitor does not import optaxlab.transforms).
_NOT_MOMENTS = ("ScaleByACClipState", "ScaleByLaPropState")


def _is_moment_node(x) -> bool:
    fields = getattr(x, "_fields", None)
    if not isinstance(x, tuple) or fields is None or type(x).__name__ in _NOT_MOMENTS:
        return False
    return ("mu" in fields and "nu" in fields) or ("mean" in fields and "var" in fields)


def _is_hparams_node(x) -> bool:
    fields = getattr(x, "_fields", None)
    return isinstance(x, tuple) and fields is not None and "hyperparams" in fields


def find_moments(opt_state) -> tuple[dict[str, MomentPair], Any, Any]:
    """Finds the first (mu, nu) or (mean, var) NamedTuple in an optimizer state.

    Returns (leaf name -> MomentPair, the state's `count` or None, a 'b2'/'beta' hyperparameter
    found in an `optax.inject_hyperparams` state or None). The moment trees are matched to the
    parameters by pytree path, so wrappers (chain, inject_hyperparams, masked, MultiSteps) are
    looked through. Optimizers without such a state give ({}, None, ...).
    """
    nodes, _ = jax.tree_util.tree_flatten(
        opt_state, is_leaf=lambda x: _is_moment_node(x) or _is_hparams_node(x)
    )
    pairs: dict[str, MomentPair] = {}
    count = b2 = None
    for node in nodes:
        if _is_hparams_node(node) and b2 is None:
            hp = node.hyperparams
            if isinstance(hp, Mapping):
                b2 = hp.get("b2", hp.get("beta"))
            sub, c, b = find_moments(node.inner_state if hasattr(node, "inner_state") else ())
            if sub and not pairs:
                pairs, count = sub, c
            b2 = b2 if b2 is not None else b
        elif _is_moment_node(node) and not pairs:
            adam = "mu" in node._fields
            first, second = (node.mu, node.nu) if adam else (node.mean, node.var)
            f, s = _named_leaves(first), _named_leaves(second)
            pairs = {k: MomentPair(f[k], s[k], "adam" if adam else "vi") for k in f if k in s}
            count = getattr(node, "count", None)
    return pairs, count, b2


def _bin_index(x: jax.Array, r: float, bins: int) -> jax.Array:
    """int32 bin of each coordinate (x keeps its shape): 0 underflow, 1..bins the bins of
    [-r, r), bins + 1 overflow, bins + 2 NaN."""
    t = jnp.floor((x + r) * (bins / (2.0 * r)))
    i = jnp.clip(t, -1.0, float(bins)) + 1.0
    return jnp.where(jnp.isnan(x), float(bins + 2), i).astype(jnp.int32)


def _leaf_stats(
    g: jax.Array,
    u: jax.Array,
    p: jax.Array,
    moments: MomentPair | None,
    inv_lr: jax.Array,
    corr: tuple[jax.Array, jax.Array] | None,
    s: Settings,
) -> tuple[dict[str, jax.Array], jax.Array | None]:
    """One leaf's raw sums (dict over LAYER_FIELDS) and its two histograms (int32[2, bins + 3]).

    Each statistic is its own fused elementwise + reduce pass (stacking them into one [K, ...]
    reduction is 10x slower on XLA:CPU, and a variadic reduce is not partitioned: it would
    gather sharded leaves). Both histograms come from one scatter into the joint
    (bins + 3) x (bins + 3) grid of (Delta bin, gradient bin), then its two marginals: one pass
    over the coordinates instead of two.
    """
    f32 = jnp.float32
    g, u, p = g.astype(f32), u.astype(f32), p.astype(f32)
    d = u * inv_lr
    n = float(d.size)
    one = lambda b: b.astype(f32)
    # Sums that other sums or the histogram give for free are derived, not reduced: u^2 from
    # Delta^2 and lr, the scaled sums from the unscaled ones, the NaN counts from the NaN bins.
    groups = [
        dict(
            d_sum=d,
            d_sum2=d * d,
            d_sumabs=jnp.abs(d),
            d_sum3=d * d * d,
            d_sum4=jnp.square(d * d),
            d_tail=one(jnp.abs(d) > s.tail),
        ),
        dict(g_sum=g, g_sum2=g * g),
        dict(p_sum2=p * p),
    ]
    if not s.histograms:
        groups.append(dict(d_nan=one(jnp.isnan(d)), g_nan=one(jnp.isnan(g))))
    if moments is not None:
        m, second = moments.first.astype(f32), moments.second.astype(f32)
        # v = E[g^2]: Adam's nu, or the tracker's var + mean^2.
        msq = second if moments.kind == "adam" else jnp.maximum(second, 0.0) + m * m
        if corr is not None:
            m, msq = m / corr[0], msq / corr[1]
        gamma = theory.spread(m, msq)  # inf where m = 0, nan where m = v = 0
        ok = jnp.isfinite(gamma)
        gamma = jnp.where(ok, gamma, 0.0)
        # predicted step 1/sqrt(1 + gamma^2) = |m|/sqrt(v): Adam's direction (0 where v = 0)
        step = jnp.abs(theory.adam_direction(m, msq))
        log_gamma = jnp.where(ok, jnp.log(jnp.maximum(gamma, 1e-6)), 0.0)
        rows = dict(
            spread_sum=gamma,
            spread_n=one(ok),
            spread_logsum=log_gamma,
            step_sum=step,
            step_n=one(msq > 0),
        )
        if moments.kind == "vi":
            var = jnp.maximum(msq - m * m, 0.0)
            pv = var > 0
            rows["snr_sum"] = jnp.where(
                pv, jnp.abs(m) * jax.lax.rsqrt(jnp.where(pv, var, 1.0)), 0.0
            )
            rows["snr_n"] = one(pv)
        groups.append(rows)
    # One reduction per statistic, each partitioned by XLA into per-shard partial results and
    # an all-reduce. (A single variadic lax.reduce over all of them is not partitioned -- it
    # would gather sharded leaves -- and on XLA:CPU it is slower, not faster.)
    v = {k: jnp.sum(x) for r in groups for k, x in r.items()}

    def scale(sum2_key: str, kind: str):  # rms = sqrt(mean x^2), 1 when 0 or not finite
        if kind == "none":
            return jnp.ones((), f32)
        rms = jnp.sqrt(v[sum2_key] / n)
        return jnp.where((rms > 0) & jnp.isfinite(rms), rms, 1.0)

    d_scale = scale("d_sum2", s.delta_scale)
    g_scale = scale("g_sum2", s.grad_scale)
    dn = d / d_scale if s.delta_scale == "rms" else d
    gn = g / g_scale if s.grad_scale == "rms" else g
    v.update(
        dn_sum=v["d_sum"] / d_scale,
        dn_sum2=v["d_sum2"] / (d_scale * d_scale),
        gn_sum=v["g_sum"] / g_scale,
        gn_sum2=v["g_sum2"] / (g_scale * g_scale),
        u_sum2=v["d_sum2"] / (inv_lr * inv_lr),
        d_max=jnp.max(dn),
        d_min=jnp.min(dn),
        gn_max=jnp.max(gn),
        gn_min=jnp.min(gn),
        n=jnp.asarray(n, f32),
        d_scale=d_scale,
    )
    zero = jnp.zeros((), f32)
    for k in LAYER_FIELDS:
        v.setdefault(k, zero)
    hist = None
    if s.histograms:
        n_bins = s.bins + 3
        joint = _bin_index(dn, s.delta_range, s.bins) * n_bins
        joint = joint + _bin_index(gn, s.grad_range, s.bins)
        counts = jnp.zeros((n_bins * n_bins,), jnp.int32)
        counts = counts.at[joint].add(1, mode="promise_in_bounds").reshape(n_bins, n_bins)
        hist = jnp.stack([counts.sum(axis=1), counts.sum(axis=0)])
        v["d_nan"] = hist[0, -1].astype(f32)  # the NaN bins
        v["g_nan"] = hist[1, -1].astype(f32)
    return v, hist


def _combine(a: dict[str, jax.Array], b: dict[str, jax.Array]) -> dict[str, jax.Array]:
    out = {k: a[k] + b[k] for k in _ADD}
    for k in LAYER_FIELDS:
        if k.endswith("_min"):
            out[k] = jnp.minimum(a[k], b[k])
        elif k.endswith("_max"):
            out[k] = jnp.maximum(a[k], b[k])
    return out


def measure(grads, updates, params, opt_state, learning_rate, step, config) -> dict[str, jax.Array]:
    """Per-layer statistics of one optimizer step; pure and jittable (call inside the step).

    Args:
      grads: the gradient pytree g_t (same structure as params).
      updates: optax's updates, theta_t - theta_{t-1}.
      params: the parameters theta_{t-1} (before the update).
      opt_state: the optimizer state after `update` (searched for (mu, nu) / (mean, var)).
      learning_rate: the scalar lr_t of this step; Delta = updates / lr_t (lr_t = 0 gives
        Delta = updates, i.e. 0 for optimizers that scale by lr).
      step: the 1-based step t (traced int32 is fine).
      config: the static `config.monitor` block.

    Returns:
      A flat dict of a few small arrays (few arrays: the host fetches them cheaply):
      'step', 'learning_rate', optionally 'hparam_b2'; 'layout' (int32 id of the layer-name
      list, see `layer_names`); 'stats' (float32[L, len(LAYER_FIELDS)], raw sums per layer in
      LAYER_FIELDS order); with histograms on, 'delta_hist' and 'grad_hist' (int32[L, bins + 2]:
      underflow, the bins, overflow).
    """
    s = settings(config)
    groups = layer_groups(params, s)
    gl, ul, pl = _named_leaves(grads), _named_leaves(updates), _named_leaves(params)
    missing = [k for k in pl if k not in gl or k not in ul]
    if missing:
        raise ValueError(
            f"monitor.measure: grads/updates lack parameter leaves {missing[:5]}; "
            "they must have the structure of params."
        )
    pairs, count, hp_b2 = find_moments(opt_state)
    lr = jnp.asarray(learning_rate, jnp.float32)
    inv_lr = 1.0 / jnp.where(lr == 0, 1.0, lr)
    corr = None
    if s.theory_b1 is not None and s.theory_b2 is not None and count is not None:
        c = jnp.maximum(jnp.asarray(count, jnp.float32), 1.0)
        corr = (1.0 - s.theory_b1**c, jnp.where(s.theory_b2 < 1.0, 1.0 - s.theory_b2**c, 1.0))
    out: dict[str, jax.Array] = {
        "step": jnp.asarray(step, jnp.int32),
        "learning_rate": jnp.asarray(learning_rate, jnp.float32),
    }
    if hp_b2 is not None:
        out["hparam_b2"] = jnp.asarray(hp_b2, jnp.float32)
    rows, hists = [], []
    for names in groups.values():
        acc = hist = None
        for k in names:
            v, h = _leaf_stats(gl[k], ul[k], pl[k], pairs.get(k), inv_lr, corr, s)
            acc = v if acc is None else _combine(acc, v)
            if h is not None:
                hist = h if hist is None else hist + h
        rows.append(jnp.stack([acc[k] for k in LAYER_FIELDS]))
        if hist is not None:
            hists.append(hist[:, : s.bins + 2])
    out["layout"] = jnp.asarray(register_layout(tuple(groups)), jnp.int32)
    out["stats"] = jnp.stack(rows) if rows else jnp.zeros((0, len(LAYER_FIELDS)), jnp.float32)
    if s.histograms:
        h = jnp.stack(hists) if hists else jnp.zeros((0, 2, s.bins + 2), jnp.int32)
        out["delta_hist"], out["grad_hist"] = h[:, 0], h[:, 1]
    return out


# Layer names are static (python strings): `measure` registers them at trace time under a
# 31-bit id that travels with the arrays, and the host side (`write`, in the same process) looks
# them up. Unknown ids (stats from another process) get positional names layer0, layer1, ...
_LAYOUTS: dict[int, tuple[str, ...]] = {}


def register_layout(names: tuple[str, ...]) -> int:
    """The id of a layer-name list (crc32 of the names), remembered for `layer_names`."""
    lid = zlib.crc32("\n".join(names).encode()) & 0x7FFFFFFF
    _LAYOUTS[lid] = tuple(names)
    return lid


def layer_names(stats: Mapping[str, Any]) -> list[str]:
    """The layer names of a `measure` output, row order of 'stats' / 'delta_hist'."""
    if "stats" not in stats:
        return []
    n = int(np.shape(stats["stats"])[0])
    names = _LAYOUTS.get(int(np.asarray(stats.get("layout", -1))))
    if names is None or len(names) != n:
        return [f"layer{i}" for i in range(n)]
    return list(names)


def layer_row(stats: Mapping[str, Any], key: str, layer: str) -> np.ndarray:
    """One layer's row of stats[key] ('stats', 'delta_hist' or 'grad_hist') as numpy."""
    return np.asarray(stats[key])[layer_names(stats).index(layer)]
