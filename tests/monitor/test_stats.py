"""On-device statistics through `watch`: histogram counts, numpy agreement, sharding, the
optimizer-state lookup (moments, hyperparameters), filters and grouping."""

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


def _fixed(updates, state=()):
    """A transformation that returns the given updates and keeps the given state."""
    return optax.GradientTransformation(lambda p: state, lambda g, s, p=None: (updates, s))


def _stats(tx, grads, params, **settings):
    """Jitted updates of watch(tx), one per gradient of `grads` (a tree or a list of trees);
    (the last update's stats, its updates, the state)."""
    w = monitor.watch(tx, **settings)
    update = jax.jit(w.update)
    state = w.init(params)
    for g in grads if isinstance(grads, list) else [grads]:
        updates, state = update(g, state, params)
    return jax.device_get(monitor.latest(state)), updates, state


def _assert_sharded_matches(fn, args, ref, also_forbid=()):
    """fn(*args) on sharded args equals the unsharded `ref` (histograms exactly), and its HLO
    sums per-shard partials (all-reduce) without gathering or moving whole leaves."""
    compiled = fn.lower(*args).compile()
    got = jax.device_get(compiled(*args))
    assert got.names == ref.names
    np.testing.assert_array_equal(got.hist, ref.hist)
    np.testing.assert_allclose(got.layers, ref.layers, rtol=2e-5, atol=1e-3)
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


def test_counts_sum_and_equal_numpy_histogram():
    lr = 0.01
    params = _params(0)
    g1 = _grads(10, params)
    grads = jax.tree.map(lambda g: 0.5 * g + 0.1, g1)  # two steps: the moments are not trivial
    stats, u, _ = _stats(optax.adam(lr, b1=0.9, b2=0.99), [g1, grads], params,
                         learning_rate=lr, delta_range=1.0)  # small range: under/overflow used
    assert stats.names == ("dense/bias", "dense/kernel", "embed/embedding", "out/kernel")
    flat_u, flat_g = monitor.stats.named_leaves(u), monitor.stats.named_leaves(grads)
    outside = 0
    for name in stats.names:
        d = np.asarray(flat_u[name], np.float32) / np.float32(lr)  # Delta outside the update
        gn = np.asarray(flat_g[name], np.float64)
        gn = gn / np.sqrt(np.mean(gn**2))
        dh, gh = stats.histogram(name, "delta"), stats.histogram(name, "grad")
        assert dh.shape == (65 + 2,) and dh.dtype == np.int32
        assert dh.sum() == d.size and gh.sum() == d.size
        outside += dh[0] + dh[-1]
        # float32 binning vs numpy's float64 may differ only for values within round-off of an
        # edge (a moved value changes two bins by one each).
        assert np.abs(dh - _np_hist(d, 1.0, 65)).sum() <= 2 * _near_edge(d, 1.0, 65)
        assert np.abs(gh - _np_hist(gn, 6.0, 65)).sum() <= 2 * _near_edge(gn, 6.0, 65)
        v = stats.row(name)
        assert v[FIELD["n"]] == d.size
        np.testing.assert_allclose(v[FIELD["d_sum2"]], np.sum(d.astype(np.float64) ** 2), 1e-4)
        np.testing.assert_allclose(v[FIELD["d_min"]], d.min(), 1e-6)
        np.testing.assert_allclose(v[FIELD["d_max"]], d.max(), 1e-6)
    assert outside > 0  # the under/overflow bins were exercised
    assert int(stats.step) == 2
    assert stats.hparam("learning_rate") == pytest.approx(lr)


def test_nan_and_lr_zero():
    params = {"w": jnp.ones((10, 10))}
    u = {"w": jnp.full((10, 10), 0.5).at[0, :3].set(jnp.nan)}
    g = {"w": jnp.ones((10, 10)).at[1, 1].set(jnp.nan)}
    for hist in (True, False):
        stats, _, _ = _stats(_fixed(u), g, params, learning_rate=0.0, histograms=hist)
        assert stats.names == ("w",)
        v = stats.row("w")
        assert (v[FIELD["d_nan"]], v[FIELD["g_nan"]], v[FIELD["n"]]) == (3, 1, 100)
        assert np.isnan(v[FIELD["d_sum"]])
        assert v[FIELD["spread_n"]] == 0  # no moments in the state
        if hist:
            h = stats.histogram("w")
            assert h.sum() == 97 and stats.histogram("w", "grad").sum() == 99  # NaN not binned
            center = (0.5 + 4.0) * 65 / (2 * 4.0)
            assert h[int(np.floor(center)) + 1] == 97  # lr = 0: Delta = updates
        else:
            assert stats.hist.shape == (1, 2, 0)


def test_sharded_equals_unsharded_without_gathering():
    devices = np.array(jax.devices()[:8])
    assert devices.size == 8, "conftest sets 8 simulated CPU devices"
    mesh = Mesh(devices.reshape(4, 2), ("fsdp", "tensor"))
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
    tx = monitor.watch(optax.adamw(lr, b1=0.9, b2=0.95, weight_decay=0.1), learning_rate=lr,
                       b1=0.9, b2=0.95)
    state = tx.init(params)

    def f(g, s, p):
        return monitor.latest(tx.update(g, s, p)[1])

    ref = jax.device_get(jax.jit(f)(grads, state, params))
    assert ref.layers[:, FIELD["spread_n"]].min() > 0  # Adam's moments were found
    shard = lambda tree: jax.tree.map(
        lambda x, sp: jax.device_put(x, NamedSharding(mesh, sp)), tree, specs
    )
    inner = state.inner
    state_sh = state._replace(inner=(inner[0]._replace(mu=shard(inner[0].mu),
                                                       nu=shard(inner[0].nu)), *inner[1:]))
    args = (shard(grads), state_sh, shard(params))
    assert not args[0]["attn"]["qkv"].sharding.is_fully_replicated
    _assert_sharded_matches(jax.jit(f), args, ref)


def test_sharded_equal_shapes_are_not_gathered():
    """Equal-shape leaves sharded differently (q and a transposed out-projection) on a
    multi-device mesh: same result as unsharded, and no gather or resharding in the HLO."""
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("fsdp", "tensor"))
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
    tx = monitor.watch(optax.sgd(0.01), learning_rate=0.01)
    state = tx.init(params)

    def f(g, p):
        return monitor.latest(tx.update(g, state, p)[1])

    ref = jax.device_get(jax.jit(f)(grads, params))
    shard = lambda t: jax.tree.map(
        lambda x, sp: jax.device_put(x, NamedSharding(mesh, sp)), t, specs
    )
    args = (shard(grads), shard(params))
    _assert_sharded_matches(jax.jit(f), args, ref, also_forbid=("collective-permute",))


class _VIState(NamedTuple):  # the fields of optaxlab.transforms.GaussianVIState
    count: jax.Array
    mean: dict
    nu: dict  # var + mean^2


def test_spread_identity_for_equal_betas_and_vi_snr():
    # Adam with b1 = b2, eps = 0: |Delta| = 1/sqrt(1 + gamma^2) per coordinate when gamma is
    # computed from bias-corrected moments (the gradient-spread paper), so mean |Delta| equals
    # the predicted step spread_step.
    b = 0.9
    params = {"w": jnp.zeros((50, 40))}
    tx = monitor.watch(optax.adam(1.0, b1=b, b2=b, eps=0.0), learning_rate=1.0, b1=b, b2=b)
    state = tx.init(params)
    update = jax.jit(tx.update)
    for i in range(4):
        g = {"w": _normal(i, (50, 40)) + 0.3}
        _, state = update(g, state, params)
    sc = monitor.summarize(jax.device_get(monitor.latest(state)))
    np.testing.assert_allclose(sc["spread_step/w"], sc["update_mean_abs/w"], rtol=1e-5)
    adam = state.inner[0]
    mu, nu = adam.mu["w"] / (1 - b**4), adam.nu["w"] / (1 - b**4)
    gamma = np.sqrt(np.maximum(nu - mu**2, 0)) / np.abs(mu)
    np.testing.assert_allclose(sc["spread/w"], gamma.mean(), rtol=1e-4)


def test_spread_step_compares_with_the_measured_step_when_some_rows_never_see_a_gradient():
    # Rows without gradient (dead units, unseen embedding rows) do not move; the predicted step
    # counts them as 0 too, so the two means stay comparable (they differed 2x before).
    b = 0.9
    params = {"w": jnp.zeros((50, 40))}
    tx = monitor.watch(optax.adam(0.1, b1=b, b2=b, eps=1e-12), learning_rate=0.1, b1=b, b2=b,
                       theory=False)
    state = tx.init(params)
    for i in range(4):
        g = _normal(i, (50, 40)) + 0.3
        _, state = jax.jit(tx.update)({"w": g.at[:25].set(0.0)}, state, params)
    sc = monitor.summarize(jax.device_get(monitor.latest(state)))
    np.testing.assert_allclose(sc["spread_step/w"], sc["update_mean_abs/w"], rtol=1e-4)
    assert "snr/w" not in sc  # only for the VI tracker

    # The Gaussian VI tracker's (mean, nu) state: snr = mean |m|/sqrt(var), found in a chain.
    m = jnp.linspace(-1.0, 1.0, 200).reshape(20, 10)
    var = jnp.full((20, 10), 0.25).at[0, 0].set(0.0)
    p = {"w": jnp.zeros((20, 10))}
    vi = _VIState(jnp.asarray(3), {"w": m}, {"w": var + m * m})
    stats, _, _ = _stats(_fixed(p, (optax.EmptyState(), vi)), p, p, learning_rate=1.0)
    sc = monitor.summarize(stats)
    ok = np.asarray(var) > 0
    np.testing.assert_allclose(sc["snr/w"], np.mean(np.abs(m)[ok] / 0.5), rtol=1e-5)
    nz = np.asarray(m) != 0
    np.testing.assert_allclose(sc["spread/w"], np.mean(np.sqrt(var)[nz] / np.abs(m)[nz]), 1e-4)


def test_hyperparameters_and_moments_found_through_wrappers():
    params = _params(0)
    opt = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.inject_hyperparams(optax.adam)(learning_rate=0.1, b1=0.8, b2=0.97),
    )
    state = jax.jit(opt.init)(params)
    assert set(monitor.find_moments(state)) == set(monitor.stats.named_leaves(params))
    assert monitor.find_moments(state)["dense/kernel"].kind == "adam"
    hp = monitor.find_hyperparams(state)
    np.testing.assert_allclose([hp["learning_rate"], hp["b1"], hp["b2"]], [0.1, 0.8, 0.97])
    # lr, b1, b2 read from inject_hyperparams drive Delta and the theory overlay.
    stats, _, _ = _stats(opt, _grads(10, params), params)
    np.testing.assert_allclose(stats.hparams[:3], [0.1, 0.8, 0.97], rtol=1e-6)
    sc = monitor.summarize(stats)
    assert sc["theory/m_eff"] == pytest.approx(1.0)
    assert {"theory_tv/dense/kernel", "noise_tv/dense/kernel"} <= set(sc)
    assert monitor.find_moments(optax.sgd(0.1).init(params)) == {}
    # 'beta' (adam_equal_betas) gives b1 = b2; explicit settings win over found values
    eq = optax.inject_hyperparams(lambda learning_rate, beta: optax.adam(learning_rate, beta,
                                                                         beta))(0.1, 0.9)
    stats, _, _ = _stats(eq, _grads(10, params), params, b2=0.5)
    np.testing.assert_allclose(stats.hparams[:3], [0.1, 0.9, 0.5], rtol=1e-6)


def test_find_hyperparams_reads_b1_b2_eps_through_the_registrys_theory_mapping(monkeypatch):
    """With the optimizer named, b1/b2/eps come from its registry row's theory mapping; without
    it, the documented fallback (own names, then the names the table's mappings use)."""
    from optaxlab import optimizers

    params = {"w": jnp.ones((2, 3))}

    def hp_of(name, optimizer=None, **kw):
        tx = optax.inject_hyperparams(optimizers.get(name),
                                      static_args=optimizers.static_hparams(name))(0.1, **kw)
        return {k: float(v) for k, v in
                monitor.find_hyperparams(tx.init(params), optimizer).items()}

    # adam_equal_betas: 'beta' is b1 = b2 by its mapping, with or without the name
    assert hp_of("adam_equal_betas", "adam_equal_betas", beta=0.8, eps=1e-6) == pytest.approx(
        {"learning_rate": 0.1, "b1": 0.8, "b2": 0.8, "eps": 1e-6})
    assert hp_of("adam_equal_betas", beta=0.8, eps=1e-6) == pytest.approx(
        {"learning_rate": 0.1, "b1": 0.8, "b2": 0.8, "eps": 1e-6})
    # rmsprop's mapping says b1 = 0 (a number, not an hparam)
    assert hp_of("rmsprop", "rmsprop", b2=0.9) == pytest.approx(
        {"learning_rate": 0.1, "b1": 0.0, "b2": 0.9, "eps": 1e-8})
    # signum declares no theory: its 'beta' is not a b1 once the optimizer is named ...
    assert hp_of("signum", "signum", beta=0.7) == {"learning_rate": pytest.approx(0.1)}
    # ... while the fallback, which cannot know, reads 'beta' as adam_equal_betas' mapping does
    assert hp_of("signum", beta=0.7)["b1"] == pytest.approx(0.7)
    # a registered optimizer's own mapping ('mom' for both betas)
    monkeypatch.setattr(optimizers, "_TABLE", dict(optimizers._TABLE))

    def my_adam(mom: float = 0.9, eps: float = 1e-8):
        return optax.scale_by_adam(b1=mom, b2=mom, eps=eps)

    optimizers.register("my_adam_stats", my_adam, theory={"b1": "mom", "b2": "mom",
                                                          "eps": "eps"})
    assert hp_of("my_adam_stats", "my_adam_stats", mom=0.6) == pytest.approx(
        {"learning_rate": 0.1, "b1": 0.6, "b2": 0.6, "eps": 1e-8})
    assert hp_of("adam_equal_betas", beta=0.8)["b1"] == pytest.approx(0.8)  # built-ins first
    assert monitor.find_hyperparams(optax.adam(0.1).init(params), "adam") == {}


def test_filters_and_module_grouping():
    params = _params(0)
    g = _grads(10, params)
    u = jax.tree.map(lambda x: -0.01 * jnp.sign(x), g)
    out, _, _ = _stats(_fixed(u), g, params, learning_rate=0.01, group="module",
                       exclude="^embed")
    assert out.names == ("dense", "out")
    leaf, _, _ = _stats(_fixed(u), g, params, learning_rate=0.01, include="dense")
    assert leaf.names == ("dense/bias", "dense/kernel")
    assert out.hist.shape == (2, 2, 65 + 2)
    np.testing.assert_array_equal(out.hist[0], leaf.hist.sum(axis=0))
    merged, parts = out.row("dense"), leaf.layers
    assert merged[FIELD["n"]] == 64 * 96 + 96
    assert merged[FIELD["gn_min"]] == parts[:, FIELD["gn_min"]].min()
    assert merged[FIELD["d_max"]] == parts[:, FIELD["d_max"]].max()
    np.testing.assert_allclose(merged[FIELD["g_sum2"]], parts[:, FIELD["g_sum2"]].sum(), 1e-6)


@pytest.mark.parametrize(
    "field,value",
    [("every", -1), ("bins", 1), ("delta_range", 0.0), ("grad_scale", "max"), ("group", "block"),
     ("include", "("), ("b2", 1.5), ("b1", 1.0), ("eps", -1.0), ("colour", "red")],
)
def test_bad_settings_raise(field, value):
    with pytest.raises(ValueError, match=f"monitor.{field}"):
        monitor.settings(**{field: value})
    with pytest.raises(ValueError, match=f"monitor.{field}"):
        monitor.watch(optax.sgd(0.1), learning_rate=0.1, **{field: value})


def test_missing_learning_rate_and_mismatched_trees_raise():
    p = {"a": jnp.ones(3), "b": jnp.ones(3)}
    with pytest.raises(ValueError, match="no learning rate"):
        monitor.watch(optax.sgd(0.1)).init(p)
    with pytest.raises(ValueError, match="learning_rate=-1"):
        monitor.watch(optax.sgd(0.1), learning_rate=-1)
    tx = monitor.watch(_fixed({"a": jnp.ones(3)}), learning_rate=1.0)
    with pytest.raises(ValueError, match="'b'"):
        tx.update(p, tx.init(p), p)


def test_spread_counts_when_moments_vanish():
    """Coordinates whose gradient was always 0 have m = v = 0: no spread, no predicted step;
    the counts and sums must equal numpy's."""
    rng = np.random.default_rng(3)
    params = {"a": jnp.zeros((64, 64)), "b": jnp.zeros((32, 128))}
    g = {k: rng.standard_normal(p.shape).astype(np.float32) for k, p in params.items()}
    g["a"][:5] = 0.0  # 320 coordinates of layer a never see a gradient
    g = jax.tree.map(jnp.asarray, g)
    stats, _, state = _stats(optax.adam(0.1, b1=0.9, b2=0.99), g, params, learning_rate=0.1,
                             histograms=False)
    adam = state.inner[0]
    for k in stats.names:
        m, v = np.asarray(adam.mu[k], np.float64), np.asarray(adam.nu[k], np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            gamma = np.sqrt(np.maximum(v - m * m, 0.0)) / np.abs(m)
        ok = np.isfinite(gamma)
        st = stats.row(k)
        assert st[FIELD["spread_n"]] == ok.sum() == (4096 - 320 if k == "a" else 4096)
        assert st[FIELD["step_n"]] == m.size  # a coordinate without gradient predicts step 0
        np.testing.assert_allclose(st[FIELD["spread_sum"]], gamma[ok].sum(), rtol=1e-4)
        np.testing.assert_allclose(st[FIELD["spread_logsum"]],
                                   np.log(np.maximum(gamma[ok], 1e-6)).sum(), rtol=1e-4,
                                   atol=1e-3)


@pytest.mark.parametrize("group", ["leaf", "module"])
def test_stacked_equal_shapes_match_leaf_by_leaf(monkeypatch, group):
    """On one device equal-shape leaves are counted stacked (`stats._can_stack`): the same
    histograms and sums as leaf by leaf, with Adam's moments, module grouping, a bf16 leaf of a
    shared shape (its own stack) and a leaf with a NaN."""
    from optaxlab.monitor import stats as stats_lib

    params = {f"b{i}": {"q": _normal(i, (16, 24)), "o": _normal(10 + i, (16, 24)),
                        "scale": _normal(20 + i, (24,))} for i in range(3)}
    params["b2"]["o"] = params["b2"]["o"].astype(jnp.bfloat16)
    grads = [_grads(40 + 5 * j, params) for j in range(3)]
    grads[-1]["b1"]["q"] = grads[-1]["b1"]["q"].at[3, 4].set(jnp.nan)
    tx = optax.adam(0.01, b2=0.95)
    kw = dict(learning_rate=0.01, b1=0.9, b2=0.95, group=group)
    monkeypatch.setattr(stats_lib, "_can_stack", lambda: False)
    ref, _, _ = _stats(tx, grads, params, **kw)
    monkeypatch.setattr(stats_lib, "_can_stack", lambda: True)
    got, _, _ = _stats(tx, grads, params, **kw)
    assert got.names == ref.names and len(got.names) == (9 if group == "leaf" else 3)
    np.testing.assert_array_equal(got.hist, ref.hist)
    assert got.hist.sum() > 0
    np.testing.assert_allclose(got.layers, ref.layers, rtol=1e-5, atol=1e-6)
    assert got.row("b1/q" if group == "leaf" else "b1")[FIELD["g_nan"]] == 1
