"""On-device statistics: histogram counts, numpy agreement, sharding, state lookup, filters."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from optaxlab import monitor
from optaxlab.monitor.stats import FIELD


# Test data comes from numpy (eager jax.random would compile one kernel per call and shape).
def _normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _params(seed):
    return {
        "dense": {"kernel": _normal(seed, (64, 96)), "bias": _normal(seed + 1, (96,))},
        "embed": {"embedding": _normal(seed + 2, (128, 32))},
        "out": {"kernel": _normal(seed + 3, (32, 16))},
    }


def _grads(seed, params):
    leaves, tree = jax.tree.flatten(params)
    return jax.tree.unflatten(tree, [_normal(seed + i, x.shape) for i, x in enumerate(leaves)])


def _measure(g, u, p, s, lr, step, cfg):
    """measure under jit (as in the train step; eager dispatch of its many ops is slow)."""
    f = jax.jit(lambda g, u, p, s: monitor.measure(g, u, p, s, lr, step, cfg))
    return jax.device_get(f(g, u, p, s))


def _assert_sharded_matches(fn, args, ref, also_forbid=()):
    """fn(*args) on sharded args equals the unsharded `ref` (histograms exactly), and its HLO
    sums per-shard partials (all-reduce) without gathering or moving whole leaves."""
    compiled = fn.lower(*args).compile()
    got = jax.device_get(compiled(*args))
    assert set(got) == set(ref)
    for k in ref:
        if "hist" in k:
            np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
        else:
            np.testing.assert_allclose(got[k], ref[k], rtol=2e-5, atol=1e-3, err_msg=k)
    hlo = compiled.as_text()
    assert "all-reduce" in hlo  # per-shard partial counts and sums, then a sum
    for op in ("all-gather", "all-to-all", *also_forbid):
        assert op not in hlo, op


def _np_hist(x, r, bins):
    """Reference: numpy.histogram on [-r, r] plus under/overflow counts."""
    x = np.asarray(x, np.float64).ravel()
    x = x[~np.isnan(x)]
    inner, _ = np.histogram(x[(x >= -r) & (x < r)], bins=bins, range=(-r, r))
    return np.concatenate([[np.sum(x < -r)], inner, [np.sum(x >= r)]])


def _near_edge(x, r, bins, tol=1e-5):
    x = np.asarray(x, np.float64).ravel()
    t = (x + r) * bins / (2 * r)
    return int(np.sum(np.abs(t - np.round(t)) < tol * bins))


def _adam_step(cfg, opt, params, grads, lr):
    """Two optimizer steps (so the moments are not trivial), the second one measured."""

    @jax.jit
    def run(params, grads):
        state = opt.init(params)
        u, state = opt.update(grads, state, params)
        params = optax.apply_updates(params, u)
        g2 = jax.tree.map(lambda g: 0.5 * g + 0.1, grads)
        u, state = opt.update(g2, state, params)
        return g2, u, monitor.measure(g2, u, params, state, lr, 2, cfg)

    g2, u, stats = run(params, grads)
    return g2, u, jax.device_get(stats)


def test_counts_sum_and_equal_numpy_histogram():
    cfg = monitor.default_config()
    cfg.delta_range = 1.0  # small range so that under/overflow bins are exercised
    lr = 0.01
    params = _params(0)
    grads = _grads(10, params)
    opt = optax.adam(lr, b1=0.9, b2=0.99)
    g, u, stats = _adam_step(cfg, opt, params, grads, lr)
    names = monitor.layer_groups(params, cfg)
    assert set(names) == {"dense/kernel", "dense/bias", "embed/embedding", "out/kernel"}
    flat_u = {monitor.stats.path_name(p): x for p, x in jax.tree_util.tree_flatten_with_path(u)[0]}
    flat_g = {monitor.stats.path_name(p): x for p, x in jax.tree_util.tree_flatten_with_path(g)[0]}
    outside = 0
    for name in names:
        d = np.asarray(flat_u[name], np.float32) / np.float32(lr)  # Delta outside the step
        gn = np.asarray(flat_g[name], np.float64)
        gn = gn / np.sqrt(np.mean(gn**2))
        dh = monitor.layer_row(stats, "delta_hist", name)
        gh = monitor.layer_row(stats, "grad_hist", name)
        assert dh.shape == (cfg.bins + 2,) and dh.dtype == np.int32
        assert dh.sum() == d.size and gh.sum() == d.size
        ref_d, ref_g = _np_hist(d, 1.0, cfg.bins), _np_hist(gn, 6.0, cfg.bins)
        outside += dh[0] + dh[-1]
        # float32 binning vs numpy's float64 may differ only for values within round-off of an
        # edge (a moved value changes two bins by one each).
        assert np.abs(dh - ref_d).sum() <= 2 * _near_edge(d, 1.0, cfg.bins)
        assert np.abs(gh - ref_g).sum() <= 2 * _near_edge(gn, 6.0, cfg.bins)
        v = monitor.layer_row(stats, "stats", name)
        assert v[FIELD["n"]] == d.size
        np.testing.assert_allclose(v[FIELD["d_sum2"]], np.sum(d.astype(np.float64) ** 2), 1e-4)
        np.testing.assert_allclose(v[FIELD["d_min"]], d.min(), 1e-6)
        np.testing.assert_allclose(v[FIELD["d_max"]], d.max(), 1e-6)
    assert outside > 0  # the under/overflow bins were exercised
    assert int(stats["step"]) == 2
    np.testing.assert_allclose(stats["learning_rate"], lr)


def test_nan_and_lr_zero():
    cfg = monitor.default_config()
    params = {"w": jnp.ones((10, 10))}
    u = {"w": jnp.full((10, 10), 0.5).at[0, :3].set(jnp.nan)}
    g = {"w": jnp.ones((10, 10))}
    out = _measure(g, u, params, (), 0.0, 1, cfg)
    assert monitor.layer_names(out) == ["w"]
    h = out["delta_hist"][0]
    assert h.sum() == 97  # NaN coordinates are not binned
    assert out["stats"][0, FIELD["d_nan"]] == 3
    center = (0.5 + cfg.delta_range) * cfg.bins / (2 * cfg.delta_range)
    assert h[int(np.floor(center)) + 1] == 97  # lr = 0: Delta = updates


def test_sharded_equals_unsharded_without_gathering():
    devices = np.array(jax.devices()[:8])
    assert devices.size == 8, "conftest sets 8 simulated CPU devices"
    mesh = Mesh(devices.reshape(4, 2), ("fsdp", "tensor"))
    cfg = monitor.default_config()
    lr = 0.003
    params = {
        "attn": {"qkv": _normal(0, (128, 96))},
        "mlp": {"fc": _normal(1, (96, 256))},
        "norm": {"scale": jnp.ones((96,))},
    }
    specs = {
        "attn": {"qkv": P("fsdp", "tensor")},
        "mlp": {"fc": P("tensor", "fsdp")},
        "norm": {"scale": P("fsdp")},
    }
    grads = _grads(20, params)
    opt = optax.adamw(lr, b1=0.9, b2=0.95, weight_decay=0.1)
    updates, state = jax.jit(lambda g, p: opt.update(g, opt.init(p), p))(grads, params)

    def f(g, u, p, s):
        return monitor.measure(g, u, p, s, lr, 1, cfg)

    ref = jax.device_get(jax.jit(f)(grads, updates, params, state))
    shard = lambda tree: jax.tree.map(
        lambda x, sp: jax.device_put(x, NamedSharding(mesh, sp)), tree, specs
    )
    state_sh = (
        state[0]._replace(mu=shard(state[0].mu), nu=shard(state[0].nu)),
        *state[1:],
    )
    args = (shard(grads), shard(updates), shard(params), state_sh)
    assert not args[0]["attn"]["qkv"].sharding.is_fully_replicated
    _assert_sharded_matches(jax.jit(f), args, ref)


class _VIState(NamedTuple):
    count: jax.Array
    mean: dict
    var: dict


def test_spread_identity_for_equal_betas_and_vi_snr():
    # Adam with b1 = b2, eps = 0: |Delta| = 1/sqrt(1 + gamma^2) per coordinate when gamma
    # is computed from bias-corrected moments (seed 002), so mean |Delta| == spread_step.
    b = 0.9
    cfg = monitor.default_config()
    cfg.theory_b1, cfg.theory_b2 = b, b
    params = {"w": jnp.zeros((50, 40))}
    opt = optax.adam(1.0, b1=b, b2=b, eps=0.0)
    state = opt.init(params)
    update = jax.jit(opt.update)
    for i in range(4):
        g = {"w": _normal(i, (50, 40)) + 0.3}
        u, state = update(g, state, params)
    out = _measure(g, u, params, state, 1.0, 4, cfg)
    sc = monitor.summarize(out, cfg)
    np.testing.assert_allclose(sc["spread_step/w"], sc["update_mean_abs/w"], rtol=1e-5)
    mu, nu = state[0].mu["w"] / (1 - b**4), state[0].nu["w"] / (1 - b**4)
    gamma = np.sqrt(np.maximum(nu - mu**2, 0)) / np.abs(mu)
    np.testing.assert_allclose(sc["spread/w"], gamma.mean(), rtol=1e-4)
    assert "snr/w" not in sc  # only for the VI tracker

    # The Gaussian VI tracker's (mean, var) state: snr = mean |m|/sqrt(var), found in a chain.
    m = jnp.linspace(-1.0, 1.0, 200).reshape(20, 10)
    var = jnp.full((20, 10), 0.25).at[0, 0].set(0.0)
    vi = _VIState(jnp.asarray(3), {"w": m}, {"w": var})
    p = {"w": jnp.zeros((20, 10))}
    out = _measure(p, p, p, (optax.EmptyState(), vi), 1.0, 3, monitor.default_config())
    sc = monitor.summarize(out, monitor.default_config())
    ok = np.asarray(var) > 0
    np.testing.assert_allclose(sc["snr/w"], np.mean(np.abs(m)[ok] / 0.5), rtol=1e-5)
    nz = np.asarray(m) != 0
    np.testing.assert_allclose(sc["spread/w"], np.mean(np.sqrt(var)[nz] / np.abs(m)[nz]), 1e-4)


def test_find_moments_through_wrappers():
    params = _params(0)
    opt = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.inject_hyperparams(optax.adam)(learning_rate=0.1, b1=0.8, b2=0.97),
    )
    state = jax.jit(opt.init)(params)
    pairs, count, b2 = monitor.find_moments(state)
    assert set(pairs) == {"dense/kernel", "dense/bias", "embed/embedding", "out/kernel"}
    assert pairs["dense/kernel"].kind == "adam"
    assert int(count) == 0
    np.testing.assert_allclose(b2, 0.97)
    # b2 read from inject_hyperparams drives the overlay when config.theory_b2 is None.
    g = _grads(10, params)
    u, state = jax.jit(opt.update)(g, state, params)
    out = _measure(g, u, params, state, 0.1, 1, monitor.default_config())
    sc = monitor.summarize(out, monitor.default_config())
    assert sc["theory/m_eff"] == pytest.approx(1.0)
    assert "theory_tv/dense/kernel" in sc
    assert monitor.find_moments(optax.sgd(0.1).init(params))[0] == {}


def test_filters_and_module_grouping():
    params = _params(0)
    g = _grads(10, params)
    u = jax.tree.map(lambda x: -0.01 * jnp.sign(x), g)
    cfg = monitor.default_config()
    cfg.group = "module"
    cfg.exclude = "^embed"
    out = _measure(g, u, params, (), 0.01, 1, cfg)
    assert monitor.layer_names(out) == ["dense", "out"]
    leaf = monitor.default_config()
    leaf.include = "dense"
    out2 = _measure(g, u, params, (), 0.01, 1, leaf)
    assert monitor.layer_names(out2) == ["dense/bias", "dense/kernel"]
    assert out["delta_hist"].shape == (2, 65 + 2)
    np.testing.assert_array_equal(out["delta_hist"][0], out2["delta_hist"].sum(axis=0))
    assert monitor.layer_row(out, "stats", "dense")[FIELD["n"]] == 64 * 96 + 96
    # scalars only: no histogram arrays
    so = monitor.default_config()
    so.histograms = False
    out3 = _measure(g, u, params, (), 0.01, 1, so)
    assert not any("hist" in k for k in out3) and "out/kernel" in monitor.layer_names(out3)
    assert out3["stats"].shape == (4, len(monitor.LAYER_FIELDS))


@pytest.mark.parametrize(
    "field,value",
    [
        ("every", -1),
        ("bins", 1),
        ("delta_range", 0.0),
        ("grad_scale", "max"),
        ("group", "block"),
        ("include", "("),
        ("theory_b2", 1.5),
    ],
)
def test_bad_config_raises(field, value):
    cfg = monitor.default_config()
    cfg[field] = value
    with pytest.raises(ValueError, match=field):
        monitor.settings(cfg)


def test_measure_rejects_mismatched_trees():
    p = {"a": jnp.ones(3), "b": jnp.ones(3)}
    with pytest.raises(ValueError, match="b"):
        monitor.measure({"a": jnp.ones(3)}, p, p, (), 1.0, 1, monitor.default_config())


def _mixed_params(seed):
    """Leaves that stack (equal shapes, rows of 4096 from different shapes, sizes that are not a
    multiple of 64), one too big to stack, and a bfloat16 leaf."""
    return {
        "blocks": {
            i: {
                "attn": {
                    "q": _normal(seed + 10 * i, (64, 64)),
                    "o": _normal(seed + 10 * i + 1, (64, 64)),
                },
                "mlp": {
                    "kernel": _normal(seed + 10 * i + 2, (64, 192)),
                    "bias": _normal(seed + 10 * i + 3, (192,)),
                },
                "norm": {"scale": 1.0 + _normal(seed + 10 * i + 4, (64,))},
                "odd": {"kernel": _normal(seed + 10 * i + 5, (3, 5))},
            }
            for i in range(2)
        },
        "embed": {"embedding": _normal(seed + 50, (256, 96))},
        "head": {"kernel": _normal(seed + 51, (96, 8)).astype(jnp.bfloat16)},
    }


@pytest.mark.parametrize("group", ["leaf", "module"])
@pytest.mark.parametrize("histograms", [True, False])
def test_stacked_blocks_equal_per_leaf(monkeypatch, group, histograms):
    """Stacking small leaves into blocks (the default) gives what one block per leaf gives."""
    params = _mixed_params(0)
    grads = jax.tree.map(lambda p: (p * 0.3 + 0.05).astype(p.dtype), params)
    opt = optax.adam(0.01, b1=0.9, b2=0.99)
    cfg = monitor.default_config()
    cfg.group, cfg.histograms, cfg.delta_scale = group, histograms, "rms"
    cfg.theory_b1, cfg.theory_b2 = 0.9, 0.99

    def run(stack_max):
        monkeypatch.setattr(monitor.stats, "STACK_MAX_SIZE", stack_max)
        return _adam_step(cfg, opt, params, grads, 0.01)[2]

    blocks = monitor.stats._blocks(
        [(x, x, x, None) for x in jax.tree.leaves(params)]  # the stacking itself is exercised
    )
    assert len(blocks) < len(jax.tree.leaves(params))
    got, ref = run(monitor.stats.STACK_MAX_SIZE), run(0)
    assert set(got) == set(ref)
    assert monitor.layer_names(got) == monitor.layer_names(ref)
    for k in ref:
        if "hist" in k or k in ("layout", "step"):
            np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
        else:
            np.testing.assert_allclose(got[k], ref[k], rtol=2e-5, atol=1e-5, err_msg=k)
    for f in ("n", "d_nan", "g_nan", "d_tail", "spread_n", "step_n"):  # counts are exact
        np.testing.assert_array_equal(got["stats"][:, FIELD[f]], ref["stats"][:, FIELD[f]], f)


def test_stacked_blocks_nan_and_no_moments():
    """NaNs in one stacked leaf stay in its layer; optimizers without moments; lr = 0."""
    params = {"a": jnp.ones((64, 64)), "b": jnp.ones((32, 128)), "c": jnp.ones((64,))}
    u = {"a": jnp.full((64, 64), 0.5).at[0, :3].set(jnp.nan), "b": -params["b"], "c": params["c"]}
    g = {"a": params["a"], "b": params["b"].at[1, 1].set(jnp.nan), "c": params["c"]}
    for hist in (True, False):
        cfg = monitor.default_config()
        cfg.histograms = hist
        out = _measure(g, u, params, (), 0.0, 1, cfg)
        assert monitor.layer_names(out) == ["a", "b", "c"]
        st = out["stats"]
        np.testing.assert_array_equal(st[:, FIELD["d_nan"]], [3, 0, 0])
        np.testing.assert_array_equal(st[:, FIELD["g_nan"]], [0, 1, 0])
        np.testing.assert_array_equal(st[:, FIELD["n"]], [4096, 4096, 64])
        assert np.isnan(st[0, FIELD["d_sum"]]) and st[1, FIELD["d_sum"]] == -4096
        np.testing.assert_array_equal(st[:, FIELD["spread_n"]], [0, 0, 0])
        if hist:
            np.testing.assert_array_equal(out["delta_hist"].sum(axis=1), [4093, 4096, 64])
            np.testing.assert_array_equal(out["grad_hist"].sum(axis=1), [4096, 4095, 64])


def test_sharded_equal_shapes_are_not_stacked_or_gathered():
    """Equal-shape leaves sharded differently (q and a transposed out-projection) on a
    multi-device mesh: same result as unsharded, and no gather or resharding in the HLO."""
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("fsdp", "tensor"))
    cfg = monitor.default_config()
    params = {
        "q": {"kernel": _normal(0, (64, 64))},
        "o": {"kernel": _normal(1, (64, 64))},
        "n1": {"scale": _normal(2, (64,))},
        "n2": {"scale": _normal(3, (64,))},
    }
    specs = {
        "q": {"kernel": P("fsdp", "tensor")},
        "o": {"kernel": P("tensor", "fsdp")},
        "n1": {"scale": P("fsdp")},
        "n2": {"scale": P("tensor")},
    }
    grads = _grads(30, params)
    updates = jax.tree.map(lambda x: -0.01 * x, grads)

    def f(g, u, p):
        return monitor.measure(g, u, p, (), 0.01, 1, cfg)

    ref = jax.device_get(jax.jit(f)(grads, updates, params))
    shard = lambda t: jax.tree.map(
        lambda x, sp: jax.device_put(x, NamedSharding(mesh, sp)), t, specs
    )
    args = (shard(grads), shard(updates), shard(params))
    _assert_sharded_matches(jax.jit(f), args, ref, also_forbid=("collective-permute",))


@pytest.mark.parametrize("stack_max", [0, None])
def test_spread_counts_when_moments_vanish(monkeypatch, stack_max):
    """Coordinates whose gradient was always 0 have m = v = 0: no spread, no predicted step.
    The counts then come from the exact (compare-and-count) branch, a healthy leaf's from the
    row sizes; both must equal numpy's counts and sums."""
    if stack_max is not None:
        monkeypatch.setattr(monitor.stats, "STACK_MAX_SIZE", stack_max)
    rng = np.random.default_rng(3)
    params = {"a": jnp.zeros((64, 64)), "b": jnp.zeros((32, 128)), "c": jnp.zeros((4096,))}
    g = {k: rng.standard_normal(p.shape).astype(np.float32) for k, p in params.items()}
    g["a"][:5] = 0.0  # 320 coordinates of layer a never see a gradient
    g = jax.tree.map(jnp.asarray, g)
    opt = optax.adam(0.1, b1=0.9, b2=0.99)
    u, state = opt.update(g, opt.init(params), params)
    cfg = monitor.default_config()
    cfg.histograms = False
    out = _measure(g, u, params, state, 0.1, 1, cfg)
    mu, nu = state[0].mu, state[0].nu
    for i, k in enumerate(monitor.layer_names(out)):
        m, v = np.asarray(mu[k], np.float64), np.asarray(nu[k], np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            gamma = np.sqrt(np.maximum(v - m * m, 0.0)) / np.abs(m)
        ok = np.isfinite(gamma)
        st = out["stats"][i]
        assert st[FIELD["spread_n"]] == ok.sum() == (4096 - 320 if k == "a" else 4096)
        assert st[FIELD["step_n"]] == (v > 0).sum()
        np.testing.assert_allclose(st[FIELD["spread_sum"]], gamma[ok].sum(), rtol=1e-4)
        np.testing.assert_allclose(
            st[FIELD["spread_logsum"]], np.log(np.maximum(gamma[ok], 1e-6)).sum(), rtol=1e-4,
            atol=1e-3,
        )
        assert np.isfinite(st[FIELD["step_sum"]])
