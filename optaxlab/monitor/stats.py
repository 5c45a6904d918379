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

Cost: about one pass over the coordinates per statistic (~20 fused elementwise + reduce kernels)
plus one scatter, per block of leaves. Leaves of at most STACK_MAX_SIZE coordinates on one device
are stacked into blocks (as rows of up to 4096 coordinates, so different shapes share a block;
each statistic is one reduction giving a value per row, and one small segment sum adds the rows
into leaves), so many small leaves pay the per-kernel overhead once per block, not per leaf.
Bigger leaves are blocks of their own: on XLA:CPU the copy that stacking makes costs more than
the kernels it saves from ~16K coordinates on (lm_tiny: 21 leaves in 10 blocks, ~450 instead of
~1000 kernels, measure ~30% faster; 64 leaves of 16K: unchanged). Leaves on a multi-device mesh
are never stacked (their sharding is not known at trace time; stacking differently sharded
leaves would move data). See experiments/benchmarks/bench_monitor.py.
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


# Leaves of at most this many coordinates are stacked with their siblings (see `_blocks`);
# bigger ones are bandwidth bound, and stacking would copy them. 0 turns stacking off.
STACK_MAX_SIZE = 1 << 13
# ... and a block holds at most this many coordinates: materializing big stacked copies and
# temporaries costs more (fresh memory) than the per-kernel overhead stacking saves.
BLOCK_MAX_SIZE = 1 << 17
# Unsharded leaves are stacked as rows of ROW coordinates (or of the largest power of two,
# >= MIN_ROW, that divides their size), so that leaves of different shapes share one block.
ROW = 4096
MIN_ROW = 64


def _one_device(x) -> bool:
    """Whether x lives on one device (or on no mesh), so that stacking it moves no data.

    With Auto mesh axes (the trainer's) a traced value's partition spec is not known at trace
    time (XLA propagates it later), so leaves on a multi-device mesh are never stacked:
    stacking leaves that are sharded differently (a transposed out-projection, say) would
    reshard them, and the compiled step must not gather."""
    if not isinstance(x, jax.core.Tracer):
        sh = getattr(x, "sharding", None)
        return sh is None or len(sh.device_set) == 1
    mesh = getattr(getattr(jax.typeof(x), "sharding", None), "mesh", None)
    return mesh is None or mesh.empty or mesh.size == 1


class _Block(NamedTuple):
    """Leaves (indices into `measure`'s leaf list) computed together as one [rows, ...] array;
    `row_shape` is the shape each leaf is reshaped to (None: the leaf's own shape, one row per
    leaf, after a leading axis is added)."""

    leaves: list[int]
    row_shape: tuple[int, ...] | None


def _blocks(leaves: list[tuple]) -> list[_Block]:
    """`leaves` (tuples (g, u, p, MomentPair or None)) grouped into blocks. Leaves on one
    device of at most STACK_MAX_SIZE coordinates with equal dtypes and moment kind are stacked
    as [size / c, c] rows (c = ROW or the largest power of two >= MIN_ROW dividing the size),
    or as [k, *shape] when no such c exists (leaves of equal shape only). Any other leaf is a
    block of its own, and a block that would exceed BLOCK_MAX_SIZE coordinates is closed (the
    next leaf starts a new one). Blocks keep the order of their first leaves."""
    out: list[_Block] = []
    sizes: list[int] = []  # coordinates per block
    where: dict[Any, int] = {}  # key -> the block that leaves of that key go to
    for i, (g, u, p, mp) in enumerate(leaves):
        arrays = (g, u, p) if mp is None else (g, u, p, mp.first, mp.second)
        key = row_shape = None
        if 0 < g.size <= STACK_MAX_SIZE and all(_one_device(a) for a in arrays):
            dtypes = tuple(str(a.dtype) for a in arrays)
            c = min(g.size & -g.size, ROW)  # the largest power of two dividing the size
            if c >= MIN_ROW and all(a.shape == g.shape for a in arrays):
                key, row_shape = ("rows", c, dtypes, mp and mp.kind), (g.size // c, c)
            else:
                key = ("shape", tuple(a.shape for a in arrays), dtypes, mp and mp.kind)
        if key is None or key not in where or sizes[where[key]] + g.size > BLOCK_MAX_SIZE:
            if key is not None:
                where[key] = len(out)
            sizes.append(g.size)
            out.append(_Block([i], row_shape))
        else:
            sizes[where[key]] += g.size
            out[where[key]].leaves.append(i)
    return out


def _block_stats(
    g: jax.Array,
    u: jax.Array,
    p: jax.Array,
    moments: MomentPair | None,
    seg: np.ndarray,
    sizes: np.ndarray,
    inv_lr: jax.Array,
    corr: tuple[jax.Array, jax.Array] | None,
    s: Settings,
) -> tuple[jax.Array, jax.Array | None]:
    """Raw sums of the k leaves stacked as rows in arrays [R, ...] (row r belongs to leaf
    seg[r], leaf j has sizes[j] coordinates): float32[k, len(LAYER_FIELDS)] (the histograms'
    NaN counts left 0), and with histograms the int32[R, ...] joint (Delta bin, gradient bin)
    index of each coordinate, in 0 .. (bins + 3)^2 - 1.

    Each statistic is its own fused elementwise + reduce pass over the non-leading axes, one
    reduction giving all rows' values (stacking the statistics instead, [K, ...], or one
    variadic lax.reduce over them is slower on XLA:CPU, and a variadic reduce is not
    partitioned: it would gather sharded leaves). Rows are then summed (min, max) into leaves.
    """
    f32 = jnp.float32
    g, u, p = g.astype(f32), u.astype(f32), p.astype(f32)
    k, n_rows = len(sizes), g.shape[0]
    axes = tuple(range(1, g.ndim))
    row = (n_rows,) + (1,) * (g.ndim - 1)  # a per-row value broadcast against [R, ...]
    d = u * inv_lr
    total = lambda x: jnp.sum(x, axis=axes)
    count = lambda b: total(b.astype(f32))  # (an int32 sum is not faster: not fused either)
    # Sums that other sums or the histogram give for free are derived, not reduced: u^2 from
    # Delta^2 and lr, the scaled sums from the unscaled ones, the NaN counts from the NaN bins,
    # min and max of Delta / scale from those of Delta (x -> x / scale, scale > 0, is monotone
    # also after rounding).
    d2 = d * d
    v = dict(
        d_sum=total(d),
        d_sum2=total(d2),
        d_sumabs=total(jnp.abs(d)),
        d_sum3=total(d2 * d),
        d_sum4=total(d2 * d2),
        d_tail=count(jnp.abs(d) > s.tail),
        g_sum=total(g),
        g_sum2=total(g * g),
        p_sum2=total(p * p),
    )
    # Counts need a compare, which XLA:CPU materializes before reducing (a plain sum it fuses),
    # so the counts below run only when a cheap plain-sum test says they can differ from the
    # healthy case: a NaN in a row of Delta (g) makes that row's sum of squares NaN.
    if not s.histograms:
        zeros = jnp.zeros((n_rows,), f32)
        v["d_nan"], v["g_nan"] = jax.lax.cond(
            jnp.any(jnp.isnan(v["d_sum2"]) | jnp.isnan(v["g_sum2"])),
            lambda: (count(jnp.isnan(d)), count(jnp.isnan(g))),
            lambda: (zeros, zeros),
        )
    if moments is not None:
        m, second = moments.first.astype(f32), moments.second.astype(f32)
        # v = E[g^2]: Adam's nu, or the tracker's var + mean^2.
        msq = second if moments.kind == "adam" else jnp.maximum(second, 0.0) + m * m
        if corr is not None:
            m, msq = m / corr[0], msq / corr[1]
        gamma = theory.spread(m, msq)  # inf where m = 0, nan where m = v = 0
        log_gamma = jnp.log(jnp.maximum(gamma, 1e-6))
        # predicted step 1/sqrt(1 + gamma^2) = |m|/sqrt(v): Adam's direction (0 where v = 0)
        step_sum = total(jnp.abs(theory.adam_direction(m, msq)))
        # Healthy case: gamma finite and v > 0 everywhere, which the plain sum of gamma (inf or
        # nan otherwise; gamma >= 0) and the min of v show; then the counts are the row sizes.
        # Otherwise count the coordinates where gamma is defined (m != 0) and where v > 0.
        raw_sum, raw_log = total(gamma), total(log_gamma)
        width = jnp.full((n_rows,), float(np.prod(g.shape[1:])), f32)

        def exact():
            ok = jnp.isfinite(gamma)
            return (total(jnp.where(ok, gamma, 0.0)), count(ok),
                    total(jnp.where(ok, log_gamma, 0.0)), count(msq > 0))

        healthy = jnp.all(jnp.isfinite(raw_sum) & (jnp.min(msq, axis=axes) > 0))
        spread_sum, spread_n, spread_logsum, step_n = jax.lax.cond(
            healthy, lambda: (raw_sum, width, raw_log, width), exact
        )
        v.update(spread_sum=spread_sum, spread_n=spread_n, spread_logsum=spread_logsum,
                 step_sum=step_sum, step_n=step_n)
        if moments.kind == "vi":
            var = jnp.maximum(msq - m * m, 0.0)
            pv = var > 0
            v["snr_sum"] = total(
                jnp.where(pv, jnp.abs(m) * jax.lax.rsqrt(jnp.where(pv, var, 1.0)), 0.0)
            )
            v["snr_n"] = count(pv)
    extremes = dict(
        d_min=jnp.min(d, axis=axes),
        d_max=jnp.max(d, axis=axes),
        gn_min=jnp.min(g, axis=axes),
        gn_max=jnp.max(g, axis=axes),
    )
    if n_rows != k:  # rows -> leaves: one small segment sum (min, max) for all statistics
        ids = jnp.asarray(seg, jnp.int32)

        def to_leaves(vals: dict[str, jax.Array], op) -> dict[str, jax.Array]:
            out = op(jnp.stack(list(vals.values()), axis=1), ids, num_segments=k)
            return {key: out[:, j] for j, key in enumerate(vals)}

        v = to_leaves(v, jax.ops.segment_sum)
        for op, kind in ((jax.ops.segment_min, "_min"), (jax.ops.segment_max, "_max")):
            extremes |= to_leaves({x: y for x, y in extremes.items() if x.endswith(kind)}, op)
    n = jnp.asarray(sizes, f32)

    def scale(sum2_key: str, kind: str):  # rms = sqrt(mean x^2), 1 when 0 or not finite
        if kind == "none":
            return jnp.ones((k,), f32)
        rms = jnp.sqrt(v[sum2_key] / n)
        return jnp.where((rms > 0) & jnp.isfinite(rms), rms, 1.0)

    d_scale = scale("d_sum2", s.delta_scale)
    g_scale = scale("g_sum2", s.grad_scale)
    v.update(
        dn_sum=v["d_sum"] / d_scale,
        dn_sum2=v["d_sum2"] / (d_scale * d_scale),
        gn_sum=v["g_sum"] / g_scale,
        gn_sum2=v["g_sum2"] / (g_scale * g_scale),
        u_sum2=v["d_sum2"] / (inv_lr * inv_lr),
        d_min=extremes["d_min"] / d_scale if s.delta_scale == "rms" else extremes["d_min"],
        d_max=extremes["d_max"] / d_scale if s.delta_scale == "rms" else extremes["d_max"],
        gn_min=extremes["gn_min"] / g_scale if s.grad_scale == "rms" else extremes["gn_min"],
        gn_max=extremes["gn_max"] / g_scale if s.grad_scale == "rms" else extremes["gn_max"],
        n=n,
        d_scale=d_scale,
    )
    zero = jnp.zeros((k,), f32)
    stats = jnp.stack([v.get(key, zero) for key in LAYER_FIELDS], axis=1)
    joint = None
    if s.histograms:
        per_row = lambda x: (x if n_rows == k else x[jnp.asarray(seg)]).reshape(row)
        dn = d / per_row(d_scale) if s.delta_scale == "rms" else d
        gn = g / per_row(g_scale) if s.grad_scale == "rms" else g
        n_bins = s.bins + 3
        joint = _bin_index(dn, s.delta_range, s.bins) * n_bins
        joint = joint + _bin_index(gn, s.grad_range, s.bins)
    return stats, joint


def _stacked(xs: list[jax.Array], row_shape: tuple[int, ...] | None) -> jax.Array:
    if row_shape is None:
        return xs[0][None] if len(xs) == 1 else jnp.stack(xs)
    rows = [x.reshape(-1, row_shape[-1]) for x in xs]
    return rows[0] if len(rows) == 1 else jnp.concatenate(rows)


def _layer_rows(leaf_rows: jax.Array, seg: np.ndarray, n_layers: int, hist: bool = False):
    """Per-layer rows from per-leaf rows [N, ...] (leaf j belongs to layer seg[j]): sums, and
    for LAYER_FIELDS rows (hist False) min and max in the min and max columns."""
    if len(seg) == n_layers:  # one leaf per layer: a permutation (usually the identity)
        inv = np.argsort(seg, kind="stable")
        return leaf_rows if np.array_equal(inv, np.arange(n_layers)) else leaf_rows[inv]
    ids = jnp.asarray(seg, jnp.int32)
    seg_op = lambda f: f(leaf_rows, ids, num_segments=n_layers, indices_are_sorted=False)
    if hist:
        return seg_op(jax.ops.segment_sum)
    is_min = np.array([k.endswith("_min") for k in LAYER_FIELDS])
    is_max = np.array([k.endswith("_max") for k in LAYER_FIELDS])
    return jnp.where(
        is_min,
        seg_op(jax.ops.segment_min),
        jnp.where(is_max, seg_op(jax.ops.segment_max), seg_op(jax.ops.segment_sum)),
    )


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
    n_layers, n_fields, n_bins = len(groups), len(LAYER_FIELDS), s.bins + 3
    leaves = [(gl[k], ul[k], pl[k], pairs.get(k)) for names in groups.values() for k in names]
    layer_of = [i for i, names in enumerate(groups.values()) for _ in names]
    # Small leaves are stacked into blocks (`_blocks`): each statistic is then one reduction per
    # block and the histograms one scatter (per-kernel overhead, not bandwidth, is their cost).
    rows, hists, order = [], [], []
    for block in _blocks(leaves):
        idx, rs = block.leaves, block.row_shape
        g, u, p = (_stacked([leaves[i][j] for i in idx], rs) for j in range(3))
        mp = leaves[idx[0]][3]
        if mp is not None:
            first = _stacked([leaves[i][3].first for i in idx], rs)
            mp = MomentPair(first, _stacked([leaves[i][3].second for i in idx], rs), mp.kind)
        sizes = np.asarray([leaves[i][0].size for i in idx], np.int64)
        seg = np.repeat(np.arange(len(idx)), 1 if rs is None else sizes // rs[-1])
        leaf_rows, joint = _block_stats(g, u, p, mp, seg, sizes, inv_lr, corr, s)
        rows.append(leaf_rows)
        order += idx
        if joint is not None:
            # one scatter per block: each leaf has its own (bins + 3)^2 counters
            base = jnp.asarray(seg.astype(np.int32) * (n_bins * n_bins))
            joint = joint + base.reshape((len(seg),) + (1,) * (joint.ndim - 1))
            counts = jnp.zeros((len(idx) * n_bins * n_bins,), jnp.int32)
            counts = counts.at[joint].add(1, mode="promise_in_bounds")
            counts = counts.reshape(len(idx), n_bins, n_bins)
            hists.append(jnp.stack([counts.sum(axis=2), counts.sum(axis=1)], axis=1))  # marginals
    out["layout"] = jnp.asarray(register_layout(tuple(groups)), jnp.int32)
    if not rows:
        out["stats"] = jnp.zeros((0, n_fields), jnp.float32)
        if s.histograms:
            out["delta_hist"] = out["grad_hist"] = jnp.zeros((0, s.bins + 2), jnp.int32)
        return out
    seg = np.asarray([layer_of[i] for i in order], np.int32)
    stats = _layer_rows(jnp.concatenate(rows), seg, n_layers)
    if s.histograms:
        hist = _layer_rows(jnp.concatenate(hists), seg, n_layers, hist=True)  # [L, 2, bins + 3]
        nan = hist[:, :, -1].astype(jnp.float32)  # the NaN bins
        stats = stats.at[:, [FIELD["d_nan"], FIELD["g_nan"]]].set(nan)
        out["delta_hist"], out["grad_hist"] = hist[:, 0, : s.bins + 2], hist[:, 1, : s.bins + 2]
    out["stats"] = stats
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
