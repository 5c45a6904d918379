"""`monitor.watch` as an optax transformation: `every`, vmap over members, MultiSteps,
inject_hyperparams, schedules, flax.nnx.Optimizer, and `latest` anywhere in a state."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from optaxlab import monitor


def _normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


PARAMS = {"a": {"kernel": _normal(0, (16, 8))}, "b": {"bias": _normal(1, (8,))}}


def _grads(seed):
    return jax.tree.map(lambda p: _normal(seed + p.size, p.shape) + 0.1, PARAMS)


def _assert_same(a, b, spread=True, rtol=1e-5):
    """Equal stats; spread=False skips the spread columns (at step 1 the bias-corrected spread
    is sqrt(g^2 - g^2)/|g| = 0 up to rounding, which differs with how b1, b2 are rounded)."""
    assert a.names == b.names and int(a.step) == int(b.step)
    np.testing.assert_array_equal(a.hist, b.hist)
    cols = [i for i, k in enumerate(monitor.LAYER_FIELDS) if spread or "spread" not in k]
    np.testing.assert_allclose(a.layers[:, cols], b.layers[:, cols], rtol=rtol, atol=1e-6)
    np.testing.assert_allclose(a.hparams, b.hparams, rtol=1e-6)


def _run(tx, grads_list, params=PARAMS):
    update = jax.jit(tx.update)
    state = tx.init(params)
    out = []
    for g in grads_list:
        _, state = update(g, state, params)
        out.append(jax.device_get(monitor.latest(state)))
    return out, state


def test_every_n_keeps_the_last_monitored_update():
    grads = [_grads(i) for i in range(6)]
    every3, _ = _run(monitor.watch(optax.adam(0.1), learning_rate=0.1, every=3), grads)
    every1, _ = _run(monitor.watch(optax.adam(0.1), learning_rate=0.1), grads)
    assert every3[0] is None and every3[1] is None  # nothing monitored yet
    assert [int(s.step) for s in every3[2:]] == [3, 3, 3, 6]
    _assert_same(every3[2], every1[2])
    _assert_same(every3[4], every1[2])  # kept between monitored updates
    _assert_same(every3[5], every1[5])
    tx = monitor.watch(optax.adam(0.1), learning_rate=0.1, every=3)
    jaxpr = str(jax.make_jaxpr(tx.update)(grads[0], tx.init(PARAMS), PARAMS))
    assert "cond[" in jaxpr  # the statistics are a branch, skipped on other updates
    # every = 0: not wrapped at all; an unwatched state has no statistics
    plain = optax.adam(0.1)
    assert monitor.watch(plain, every=0) is plain
    assert monitor.latest(plain.init(PARAMS)) is None


def test_vmap_over_members_matches_solo_runs():
    """Members differ in learning rate (an inject_hyperparams state per member) and data."""
    tx = monitor.watch(optax.inject_hyperparams(optax.adam)(learning_rate=0.1), every=2)
    lrs = (0.1, 0.01, 0.3)
    params = [jax.tree.map(lambda p, i=i: p * (i + 1), PARAMS) for i in range(3)]

    def member_state(i):
        s = tx.init(params[i])
        hp = dict(s.inner.hyperparams, learning_rate=jnp.asarray(lrs[i], jnp.float32))
        return s._replace(inner=s.inner._replace(hyperparams=hp))

    grads = [[_grads(10 * t + i) for i in range(3)] for t in range(4)]
    solo = []
    for i in range(3):
        state = member_state(i)
        for t in range(4):
            _, state = jax.jit(tx.update)(grads[t][i], state, params[i])
        solo.append(jax.device_get(monitor.latest(state)))
    stack = lambda trees: jax.tree.map(lambda *x: jnp.stack(x), *trees)
    batched = stack([member_state(i) for i in range(3)])
    axes = monitor.vmap_axes(batched)
    unbatched_count = batched._replace(count=batched.count[0])  # members step in lockstep
    for state, in_axes in ((unbatched_count, axes), (batched, 0)):
        update = jax.vmap(tx.update, in_axes=(0, in_axes, 0), out_axes=(0, in_axes))
        jaxpr = str(jax.make_jaxpr(update)(stack(grads[0]), state, stack(params)))
        # an unbatched count keeps a scalar cond; a batched one becomes a select of both sides
        assert ("cond[" in jaxpr) == (in_axes is axes)
        update = jax.jit(update)
        for t in range(4):
            _, state = update(stack(grads[t]), state, stack(params))
        got = jax.device_get(monitor.latest(state))
        for i in range(3):
            member = jax.tree.map(lambda x, i=i: x[i] if np.ndim(x) else x, got)
            _assert_same(member, solo[i])
            assert member.hparam("learning_rate") == pytest.approx(lrs[i])


def test_multisteps_inside_and_outside():
    k = 2
    micro = [_grads(i) for i in range(4)]
    mean = [jax.tree.map(lambda a, b: (a + b) / 2, micro[0], micro[1]),
            jax.tree.map(lambda a, b: (a + b) / 2, micro[2], micro[3])]
    direct, _ = _run(monitor.watch(optax.adam(0.1), learning_rate=0.1), mean)
    inside, _ = _run(optax.MultiSteps(monitor.watch(optax.adam(0.1), learning_rate=0.1), k),
                     micro)  # the watched update sees the accumulated gradient
    assert inside[0] is None
    _assert_same(inside[1], direct[0])
    _assert_same(inside[3], direct[1])
    outside, _ = _run(monitor.watch(optax.MultiSteps(optax.adam(0.1), k), learning_rate=0.1),
                      micro)  # every micro-step is an update (zero on the mid ones)
    assert [int(s.step) for s in outside] == [1, 2, 3, 4]
    zero_bin = 1 + 65 // 2
    assert outside[0].histogram("a/kernel")[zero_bin] == 16 * 8  # Delta = 0
    np.testing.assert_array_equal(outside[3].hist[:, 0], direct[1].hist[:, 0])  # same Delta


def test_inject_hyperparams_outside_and_a_schedule():
    sched = optax.linear_schedule(0.1, 0.02, 3)
    grads = [_grads(i) for i in range(3)]
    found, _ = _run(monitor.watch(optax.inject_hyperparams(optax.adam)(learning_rate=sched,
                                                                       b2=0.95)), grads)
    given, _ = _run(monitor.watch(optax.adam(sched, b2=0.95), learning_rate=sched, b1=0.9,
                                  b2=0.95, eps=1e-8), grads)
    nested_tx = optax.inject_hyperparams(
        lambda learning_rate: monitor.watch(optax.adam(learning_rate, b2=0.95),
                                            learning_rate=learning_rate, b1=0.9, b2=0.95,
                                            eps=1e-8))(learning_rate=sched)
    nested, state = _run(nested_tx, grads)
    assert isinstance(state.inner_state, monitor.WatchState)  # watch under inject_hyperparams
    for t in range(3):
        assert found[t].hparam("learning_rate") == pytest.approx(float(sched(t)))
        np.testing.assert_allclose(found[t].hparams, [sched(t), 0.9, 0.95, 1e-8], rtol=1e-6)
        # b1, b2 read as float32 arrays vs given as floats: the spread sums differ by rounding
        _assert_same(found[t], given[t], spread=t > 0, rtol=1e-4)
        _assert_same(nested[t], given[t])
    with pytest.raises(ValueError, match="2 watch states"):
        monitor.latest((state, state))


def test_flax_nnx_optimizer():
    model = nnx.Sequential(nnx.Linear(4, 8, rngs=nnx.Rngs(0)), nnx.relu,
                           nnx.Linear(8, 1, rngs=nnx.Rngs(1)))
    tx = monitor.watch(optax.adam(1e-2), learning_rate=1e-2, b1=0.9, b2=0.999, every=2)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)  # (its init sees nnx.Variables)
    params0 = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    x = _normal(0, (16, 4))

    @nnx.jit
    def step(model, optimizer):
        grads = nnx.grad(lambda m: (m(x) ** 2).mean())(model)
        optimizer.update(model, grads)
        return grads

    grads = [nnx.to_pure_dict(nnx.state(step(model, optimizer), nnx.Param))]
    assert monitor.latest(optimizer.opt_state) is None  # every = 2
    grads.append(nnx.to_pure_dict(nnx.state(step(model, optimizer), nnx.Param)))
    stats = monitor.latest(optimizer.opt_state)
    assert stats.names == ("layers/0/bias", "layers/0/kernel", "layers/2/bias",
                           "layers/2/kernel")
    params, state = params0, tx.init(params0)  # the same updates in plain optax
    for g in grads:
        updates, state = jax.jit(tx.update)(g, state, params)
        params = optax.apply_updates(params, updates)
    _assert_same(jax.device_get(stats), jax.device_get(monitor.latest(state)))
    scalars = monitor.write(None, 2, stats)
    assert {"noise_tv/layers/0/kernel", "theory_tv/layers/0/kernel"} <= set(scalars)
