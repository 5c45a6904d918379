"""The papers' variants by keyword, against float64 numpy references that keep their own
parameters: every ablation of "In Search of Adam's Secret Sauce" Tables 2-3, the clip-first
(coordinate clip of the raw gradient) variants of Adam and Signum, and coupled (L2) weight decay.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optaxlab import optimizers
from optaxlab.testing import SHAPES, stream

STEPS = 60
LR = 0.01


def np_run(rule, grads: dict, params: dict, max_norm=None, clip=None, l2=0.0):
    """float64 trajectory of parameters under `rule(g, state, t) -> (u, state)` per leaf, with
    the raw-gradient steps of the registry: global-norm clip, coordinate clip, L2 decay."""
    p = {k: v.astype(np.float64) for k, v in params.items()}
    state = {k: None for k in p}
    traj = []
    for t in range(1, STEPS + 1):
        g = {k: v[t - 1].astype(np.float64) for k, v in grads.items()}
        if max_norm is not None:
            norm = np.sqrt(sum(np.sum(x**2) for x in g.values()))
            g = {k: x * min(1.0, max_norm / norm) for k, x in g.items()}
        if clip is not None:
            g = {k: np.clip(x, -clip, clip) for k, x in g.items()}
        g = {k: x + l2 * p[k] for k, x in g.items()}
        for k in p:
            u, state[k] = rule(g[k], state[k], t)
            p[k] = p[k] - LR * u
        traj.append(dict(p))
    return {k: np.stack([s[k] for s in traj]) for k in p}


def adam_rule(b1=0.9, b2=0.99, eps=1e-8, bias_correction=True, init="zero"):
    def rule(g, state, t):
        if state is None and init == "first":  # GI: m_1 = g_1, v_1 = g_1^2
            m, v = g, g * g
        else:
            m, v = (0.0, 0.0) if state is None else state
            m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        mh, vh = (m / (1 - b1**t), v / (1 - b2**t)) if bias_correction else (m, v)
        return mh / (np.sqrt(vh) + eps), (m, v)

    return rule


def signum_rule(beta=0.9, init="zero", variance=None):
    def rule(g, m, t):
        if m is None:
            m = g if init == "first" else (1 - beta) * g
        else:
            m = beta * m + (1 - beta) * g
        u = np.sign(m) if variance is None else m / np.sqrt(m * m + variance)
        return u, m

    return rule


def ours(name, grads, params, **kw):
    opt = optimizers.create(name, LR, **kw)
    p = {k: jnp.asarray(v) for k, v in params.items()}
    step, state, traj = jax.jit(opt.update), opt.init(p), []
    for t in range(STEPS):
        u, state = step({k: jnp.asarray(v[t]) for k, v in grads.items()}, state, p)
        p = optax.apply_updates(p, u)
        traj.append(p)
    return {k: np.stack([np.asarray(s[k]) for s in traj]) for k in SHAPES}


def params0(seed=100):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}


def assert_traj_close(a, b, rtol=1e-5):
    for k in b:
        # parameters move by ~lr per step around O(1) values: float32 round-off is absolute
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=2e-6 * np.abs(b[k]).max(),
                                   err_msg=k)


# Tables 2 and 3 of "In Search of Adam's Secret Sauce" (App. A.1.1 / B.5), each row as registry
# keywords and the numpy rule it must follow. Table 2: Adam + gradient clipping to norm 1 with
# several eps; Signum + clipping with fixed mollifiers, zero- or gradient-initialized momentum.
# Table 3: Adam ZI+BC / ZI-BC / GI-BC, Signum ZI / GI.
ABLATIONS = {
    "T2 adam eps=1e-6 +gclip": (
        "adam", {"b1": 0.9, "b2": 0.95, "eps": 1e-6, "max_norm": 1.0},
        adam_rule(0.9, 0.95, 1e-6), 1.0),
    "T2 adam eps=1e-12 +gclip": (
        "adam", {"b1": 0.9, "b2": 0.95, "eps": 1e-12, "max_norm": 1.0},
        adam_rule(0.9, 0.95, 1e-12), 1.0),
    "T2 signum fixed mollifier ZI +gclip": (
        "signum_fixed_mollifier", {"beta": 0.9, "variance": 1e-4, "max_norm": 1.0},
        signum_rule(0.9, "zero", 1e-4), 1.0),
    "T2 signum fixed mollifier GI +gclip": (
        "signum_fixed_mollifier", {"beta": 0.9, "variance": 1e-4, "init": "first",
                                   "max_norm": 1.0},
        signum_rule(0.9, "first", 1e-4), 1.0),
    "T3 adam ZI+BC": ("adam", {"b1": 0.9, "b2": 0.95}, adam_rule(0.9, 0.95), None),
    "T3 adam ZI-BC": ("adam", {"b1": 0.9, "b2": 0.95, "bias_correction": False},
                      adam_rule(0.9, 0.95, bias_correction=False), None),
    "T3 adam GI-BC": ("adam", {"b1": 0.9, "b2": 0.95, "bias_correction": False, "init": "first"},
                      adam_rule(0.9, 0.95, bias_correction=False, init="first"), None),
    "T3 signum ZI": ("signum", {"beta": 0.9}, signum_rule(0.9), None),
    "T3 signum GI": ("signum", {"beta": 0.9, "init": "first"}, signum_rule(0.9, "first"), None),
}


@pytest.mark.parametrize("row", list(ABLATIONS))
def test_secret_sauce_ablations_by_keyword(row):
    name, kw, rule, max_norm = ABLATIONS[row]
    g, p0 = stream("gaussian", seed=41, steps=STEPS), params0()
    assert_traj_close(ours(name, g, p0, **kw), np_run(rule, g, p0, max_norm=max_norm))


CLIP = 0.5  # the streams' coordinates have scales 1e-2..1e1: clipping is active on many


@pytest.mark.parametrize("name,kw,rule", [
    ("adam", {"b1": 0.9, "b2": 0.99}, adam_rule(0.9, 0.99)),
    ("signum", {"beta": 0.9}, signum_rule(0.9)),
])
def test_clip_first_variants(name, kw, rule):
    """coordinate_clip clips the raw gradient before the optimizer (CClip of "Why Adam Beats SGD
    for Attention Models" applied first), after max_norm when both are given."""
    g, p0 = stream("heavy", seed=42, steps=STEPS), params0()
    assert_traj_close(ours(name, g, p0, coordinate_clip=CLIP, **kw),
                      np_run(rule, g, p0, clip=CLIP))
    assert_traj_close(ours(name, g, p0, coordinate_clip=CLIP, max_norm=50.0, **kw),
                      np_run(rule, g, p0, clip=CLIP, max_norm=50.0))
    frac = np.mean([np.mean(np.abs(v) > CLIP) for v in g.values()])
    assert 0.2 < frac < 0.9  # the clip is active on part of the coordinates


@pytest.mark.parametrize("name,kw,rule", [
    ("adam", {"b1": 0.9, "b2": 0.99}, adam_rule(0.9, 0.99)),
    ("sgd", {}, lambda g, s, t: (g, None)),
    ("signum", {"beta": 0.9}, signum_rule(0.9)),
])
def test_coupled_weight_decay_is_l2_on_the_gradient(name, kw, rule):
    g, p0 = stream("gaussian", seed=43, steps=STEPS), params0()
    assert_traj_close(ours(name, g, p0, coupled_weight_decay=0.3, **kw),
                      np_run(rule, g, p0, l2=0.3))


def test_coupled_and_decoupled_decay_differ_for_adam():
    g, p0 = stream("gaussian", seed=44, steps=STEPS), params0()
    coupled = ours("adam", g, p0, coupled_weight_decay=0.3)
    decoupled = ours("adam", g, p0, weight_decay=0.3)
    assert not np.allclose(coupled["w"], decoupled["w"], rtol=1e-3)
