"""The schedule (linear warmup, cosine to a floor) and the learning rate read from the state."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optaxlab import optimizers
from optaxlab.train import config as config_lib
from optaxlab.train import optim


def block(**kw):
    return config_lib.optimizer_config(kw.pop("name", "adam"), kw.pop("learning_rate", 1.0), **kw)


def test_warmup_then_cosine_to_floor():
    sched = optim.learning_rate_schedule(block(warmup_fraction=0.1, lr_floor=0.1), 100)
    lrs = np.array([float(sched(c)) for c in range(100)])
    np.testing.assert_allclose(lrs[:10], np.arange(1, 11) / 10, rtol=1e-6)  # never 0
    assert np.all(np.diff(lrs[10:]) <= 1e-7)  # monotone decay after warmup
    np.testing.assert_allclose(lrs[-1], 0.1, rtol=1e-5)  # floor = lr_floor * peak
    mid = 10 + 45  # half way through the cosine: (peak + floor) / 2
    np.testing.assert_allclose(float(sched(mid - 1)), 0.55, rtol=1e-2)


def test_constant_schedule_and_no_warmup():
    sched = optim.learning_rate_schedule(block(schedule="constant", warmup_fraction=0.0), 50)
    np.testing.assert_allclose([float(sched(c)) for c in (0, 10, 49)], [1.0, 1.0, 1.0])


def test_learning_rate_used_is_in_the_state():
    cfg = block(name="sgd", learning_rate=0.5, warmup_fraction=0.5)
    tx = optim.make_optimizer(cfg, 4)
    params = {"w": jnp.zeros(3)}
    state = tx.init(params)
    sched = optim.learning_rate_schedule(cfg, 4)
    for count in range(4):
        updates, state = tx.update({"w": jnp.ones(3)}, state, params)
        lr = float(optim.learning_rate(state))
        np.testing.assert_allclose(lr, float(sched(count)), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(updates["w"]), -lr, rtol=1e-6)  # sgd: -lr * g


def test_make_optimizer_matches_registry_with_the_same_schedule():
    from optaxlab import optimizers

    cfg = block(name="adamw", learning_rate=1e-2, b2=0.95, weight_decay=0.1)
    ours = optim.make_optimizer(cfg, 20)
    ref = optimizers.create("adamw", optim.learning_rate_schedule(cfg, 20), b2=0.95,
                            weight_decay=0.1)
    params = {"w": jnp.linspace(-1.0, 1.0, 5)}
    s1, s2 = ours.init(params), ref.init(params)
    p1 = p2 = params
    for t in range(5):
        g = {"w": jnp.sin(jnp.arange(5.0) + t)}
        u1, s1 = ours.update(g, s1, p1)
        u2, s2 = ref.update(g, s2, p2)
        p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    np.testing.assert_allclose(np.asarray(p1["w"]), np.asarray(p2["w"]), rtol=1e-6)


@pytest.mark.parametrize(("name", "expected"), [
    ("adam", 0.999), ("rmsprop", 0.999), ("laprop", 0.999), ("acclip", None),
    ("adam_equal_betas", 0.95), ("signum", None), ("sgd", None), ("lion", None),
])
def test_the_theory_overlays_b2_comes_from_the_registry_table(name, expected):
    # lion's b2 interpolates its momentum and ACClip's nu is not a second moment: no theory.
    assert optimizers.theory_settings(name, optim.optimizer_hparams(block(name=name))
                                      ).get("b2") == expected


def test_hparam_values_from_config_reach_the_optimizer():
    cfg = block(name="signum", beta=0.5, learning_rate=1.0, warmup_fraction=0.0,
                schedule="constant")
    tx = optim.make_optimizer(cfg, 10)
    params = {"w": jnp.zeros(2)}
    state = tx.init(params)
    _, state = tx.update({"w": jnp.array([1.0, -1.0])}, state, params)
    trace = [x for x in jax.tree.leaves(state) if getattr(x, "shape", None) == (2,)]
    np.testing.assert_allclose(np.asarray(trace[0]), [0.5, -0.5])  # (1 - beta) * g


def test_wrap_adds_transforms_and_the_learning_rate_is_still_found():
    from optaxlab.testing import nonfinite_at

    cfg = block(name="sgd", learning_rate=0.5, warmup_fraction=0.0, schedule="constant")
    tx = optim.make_optimizer(cfg, 4, wrap=lambda tx: optax.chain(tx, nonfinite_at(2, "w")))
    params = {"w": jnp.zeros(2), "v": jnp.zeros(1)}
    state = tx.init(params)
    grads = {"w": jnp.ones(2), "v": jnp.ones(1)}
    u1, state = tx.update(grads, state, params)
    assert float(optim.learning_rate(state)) == 0.5
    u2, state = tx.update(grads, state, params)
    assert np.isfinite(np.asarray(u1["w"])).all() and np.isnan(np.asarray(u2["w"])).all()
    np.testing.assert_allclose(np.asarray(u2["v"]), [-0.5])  # only leaves matching "w"
