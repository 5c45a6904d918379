"""The registry's wrappers of optax / optax.contrib, step for step against the optax functions,
and what they need beyond a plain chain (Muon's partition, schedule-free's evaluation point)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest

from optaxlab import optimizers
from optaxlab import transforms as T
from optaxlab.testing import STEPS, stream
from optaxlab.testing import run as run_at_zero

SCHEDULE = optax.cosine_decay_schedule(0.05, STEPS)
WD_MASK = {"w": True, "b": False, "v": True}
MODERN = ["nadamw", "adabelief", "ademamix", "adopt", "lamb", "prodigy", "adafactor", "muon",
          "schedule_free_adamw", "lion"]


def run(opt, grads, params, batched=False):
    """Updates of `opt` along a stream ([T, ...] leaves; [B, T, ...] and vmapped if `batched`),
    the parameters moving with them; one jitted step that must not recompile.
    Returns (updates [(B,) T, ...], final state, final params)."""
    params = jax.tree.map(jnp.asarray, params)
    update, init = (jax.vmap(opt.update), jax.vmap(opt.init)) if batched else (opt.update,
                                                                                opt.init)
    step, state, us = jax.jit(update), init(params), []
    axis = 1 if batched else 0
    for t in range(next(iter(jax.tree.leaves(grads))).shape[axis]):
        g = jax.tree.map(lambda v, t=t: jnp.asarray(np.take(v, t, axis=axis)), grads)
        u, state = step(g, state, params)
        params = optax.apply_updates(params, u)
        us.append(u)
    assert step._cache_size() == 1
    return jax.tree.map(lambda *x: np.stack(x, axis=axis), *us), state, params


def init_params(shapes, seed=100):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}


def assert_close(actual, expected, rtol=1e-5, floor=1e-6):
    for k in expected:
        e = np.asarray(expected[k], np.float64)
        np.testing.assert_allclose(np.asarray(actual[k], np.float64), e, rtol=rtol,
                                   atol=floor * np.abs(e).max(), err_msg=k)


# (name, our keywords, the optax function); learning rate SCHEDULE for all
AGAINST_OPTAX = [
    ("nadamw", {"b2": 0.99, "weight_decay": 0.01, "mask": WD_MASK},
     lambda lr: optax.nadamw(lr, b2=0.99, weight_decay=0.01, mask=WD_MASK)),
    ("adabelief", {}, lambda lr: optax.adabelief(lr)),
    ("adabelief", {"b1": 0.8, "b2": 0.99, "nesterov": True},
     lambda lr: optax.adabelief(lr, b1=0.8, b2=0.99, nesterov=True)),
    ("ademamix", {"weight_decay": 0.01, "mask": WD_MASK},
     lambda lr: optax.contrib.ademamix(lr, weight_decay=0.01, mask=WD_MASK)),
    ("ademamix", {"b3": optax.linear_schedule(0.9, 0.999, 50), "alpha": 2.0},
     lambda lr: optax.contrib.ademamix(lr, b3=optax.linear_schedule(0.9, 0.999, 50),
                                       alpha=2.0)),
    ("adopt", {}, lambda lr: optax.contrib.adopt(lr)),
    ("adopt", {"b2": 0.999, "use_clipping": False, "nesterov": True},
     lambda lr: optax.contrib.adopt(lr, b2=0.999, use_clipping=False, nesterov=True)),
    ("lamb", {"weight_decay": 0.01, "mask": WD_MASK},
     lambda lr: optax.lamb(lr, weight_decay=0.01, mask=WD_MASK)),
    ("prodigy", {}, lambda lr: optax.contrib.prodigy(lr)),
    ("prodigy", {"betas": (0.8, 0.99), "weight_decay": 0.01, "safeguard_warmup": True},
     lambda lr: optax.contrib.prodigy(lr, betas=(0.8, 0.99), weight_decay=0.01,
                                      safeguard_warmup=True)),
    # min_dim_size_to_factor=8 factors w (12 x 10): both the factored and the full path
    ("adafactor", {"min_dim_size_to_factor": 8, "weight_decay_rate": 0.01, "mask": WD_MASK},
     lambda lr: optax.adafactor(lr, min_dim_size_to_factor=8, weight_decay_rate=0.01,
                                weight_decay_mask=WD_MASK)),
    ("adafactor", {"momentum": 0.9, "multiply_by_parameter_scale": False},
     lambda lr: optax.adafactor(lr, momentum=0.9, multiply_by_parameter_scale=False)),
    # the stream's leaf names (w, b, v) match no embed|head: optax's own partition
    ("muon", {}, lambda lr: optax.contrib.muon(lr)),
    ("muon", {"adam_params": None, "weight_decay": 0.01, "beta": 0.9},
     lambda lr: optax.contrib.muon(lr, weight_decay=0.01, beta=0.9)),
    ("schedule_free_adamw", {}, lambda lr: optax.contrib.schedule_free_adamw(lr)),
    ("schedule_free_adamw", {"b1": 0.95, "weight_decay": 0.01},
     lambda lr: optax.contrib.schedule_free_adamw(lr, b1=0.95, weight_decay=0.01)),
    ("lion", {"b1": 0.95, "weight_decay": 0.01},
     lambda lr: optax.lion(lr, b1=0.95, weight_decay=0.01)),
]


@pytest.mark.parametrize(
    "name,kw,ref", AGAINST_OPTAX, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(AGAINST_OPTAX)]
)
def test_equals_the_optax_function(name, kw, ref):
    """A Gaussian and a heavy-tailed stream (vmapped), 120 steps, the parameters moving with the
    updates."""
    g1, g2 = stream("gaussian", seed=31), stream("heavy", seed=32)
    g = {k: np.stack([g1[k], g2[k]]) for k in g1}
    p0 = init_params({k: v.shape[1:] for k, v in g1.items()})
    p0 = {k: np.stack([v, v]) for k, v in p0.items()}
    ours, _, p_ours = run(optimizers.create(name, SCHEDULE, **kw), g, p0, batched=True)
    theirs, _, p_theirs = run(ref(SCHEDULE), g, p0, batched=True)
    assert_close(ours, theirs)
    assert_close(p_ours, p_theirs)


def test_every_modern_entry_is_registered_and_compared():
    assert set(MODERN) <= set(optimizers.names())
    assert set(MODERN) <= {n for n, _, _ in AGAINST_OPTAX}


def test_schedule_free_warmup_equals_optax():
    g = stream("gaussian", seed=32, steps=40)
    p0 = init_params({k: v.shape[1:] for k, v in g.items()})
    ours, _, _ = run(optimizers.create("schedule_free_adamw", 0.01, warmup_steps=10), g, p0)
    theirs, _, _ = run(optax.contrib.schedule_free_adamw(0.01, warmup_steps=10), g, p0)
    assert_close(ours, theirs)
    with pytest.raises(ValueError, match=r"^warmup_steps=10: needs a number as learning_rate"):
        optimizers.create("schedule_free_adamw", SCHEDULE, warmup_steps=10)


def test_schedule_free_mask_decays_only_the_masked_leaves():
    """Schedule-free is per-leaf given the learning rate, so with a mask the masked leaves follow
    optax's alias with weight decay and the others the alias without."""
    g = stream("gaussian", seed=33, steps=40)
    p0 = init_params({k: v.shape[1:] for k, v in g.items()})
    ours, _, _ = run(optimizers.create("schedule_free_adamw", 0.01, weight_decay=0.1,
                                       mask=WD_MASK), g, p0)
    decayed, _, _ = run(optax.contrib.schedule_free_adamw(0.01, weight_decay=0.1), g, p0)
    plain, _, _ = run(optax.contrib.schedule_free_adamw(0.01), g, p0)
    assert_close({k: ours[k] for k in ours if WD_MASK[k]},
                 {k: decayed[k] for k in ours if WD_MASK[k]})
    assert_close({k: ours[k] for k in ours if not WD_MASK[k]},
                 {k: plain[k] for k in ours if not WD_MASK[k]})
    assert not np.allclose(decayed["w"], plain["w"])


def test_eval_params_is_schedule_free_x_and_the_identity_elsewhere():
    g = stream("heavy", seed=34, steps=20)
    p0 = init_params({k: v.shape[1:] for k, v in g.items()})
    _, state, params = run(optimizers.create("schedule_free_adamw", 0.01), g, p0)
    x = optimizers.eval_params(state, params)
    ref = optax.contrib.schedule_free_eval_params(state, params)
    jax.tree.map(np.testing.assert_array_equal, x, ref)
    assert not np.allclose(x["w"], params["w"])
    # found through wrappers: inject_hyperparams, MultiSteps, a chain
    wrapped = optax.MultiSteps(
        optax.inject_hyperparams(optimizers.get("schedule_free_adamw"))(learning_rate=0.01), 1
    )
    _, wstate, wparams = run(wrapped.gradient_transformation(), g, p0)
    x_w = jax.jit(optimizers.eval_params)(wstate, wparams)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), x_w, x)
    # the identity for every other optimizer
    for name in optimizers.names():
        if name != "schedule_free_adamw":
            opt = optimizers.create(name, 0.01)
            assert optimizers.eval_params(opt.init(params), params) is params


# --------------------------------------------------------------------------- muon

LM_SHAPES = {
    "embed": {"embedding": (24, 8)},
    "blocks": {"0": {"attn": {"query": {"kernel": (8, 8)}}, "mlp": {"up": {"kernel": (8, 16)}},
                     "norm": {"scale": (8,)}}},
    "head": {"kernel": (8, 24)},
}


def test_muon_labels_send_embedding_head_and_vectors_to_adam():
    params = jax.tree.map(lambda s: jnp.zeros(s), LM_SHAPES, is_leaf=lambda x: isinstance(x, tuple))
    labels = optimizers.muon_labels(params)
    flat = {jax.tree_util.keystr(p, simple=True, separator="/"): v
            for p, v in jax.tree_util.tree_leaves_with_path(labels)}
    assert flat == {
        "embed/embedding": "adam", "head/kernel": "adam", "blocks/0/norm/scale": "adam",
        "blocks/0/attn/query/kernel": "muon", "blocks/0/mlp/up/kernel": "muon",
    }
    optax_rule = optimizers.muon_labels(params, None)  # optax's: every matrix is Muon's
    assert optax_rule["embed"]["embedding"] == "muon" and optax_rule["head"]["kernel"] == "muon"
    assert optax_rule["blocks"]["0"]["norm"]["scale"] == "adam"


def test_muon_partition_equals_optax_with_the_same_dimension_numbers():
    """adam_params='embed|head' == optax.contrib.muon with None dimension numbers for those."""
    rng = np.random.default_rng(35)
    params = jax.tree.map(lambda s: rng.normal(size=s).astype(np.float32), LM_SHAPES,
                          is_leaf=lambda x: isinstance(x, tuple))
    grads = jax.tree.map(lambda p: rng.normal(size=(30, *p.shape)).astype(np.float32), params)
    labels = optimizers.muon_labels(params)
    dims = jax.tree.map(
        lambda lab: optax.contrib.MuonDimensionNumbers() if lab == "muon" else None, labels
    )
    ours, _, _ = run(optimizers.create("muon", 0.02, weight_decay=0.1), grads, params)
    theirs, _, _ = run(optax.contrib.muon(0.02, weight_decay=0.1,
                                          muon_weight_dimension_numbers=dims), grads, params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), ours, theirs)
    # and it differs from optax's default (embedding and head orthogonalized)
    default, _, _ = run(optax.contrib.muon(0.02, weight_decay=0.1), grads, params)
    assert not np.allclose(ours["embed"]["embedding"], default["embed"]["embedding"])
    np.testing.assert_allclose(ours["blocks"]["0"]["mlp"]["up"]["kernel"],
                               default["blocks"]["0"]["mlp"]["up"]["kernel"], rtol=1e-5)


# --------------------------------------------------------------------------- adabelief


def test_adabelief_belief_is_beta_times_the_vi_tracker_variance():
    """With b1 = b2 = b, eps_root = 0, zero init: AdaBelief's s_t = b * s^2_t of the tracker."""
    g = stream("heavy", seed=36, steps=60)
    b = 0.9
    _, belief = run_at_zero(optax.scale_by_belief(b, b, eps=0.0, eps_root=0.0), g)
    _, vi = run_at_zero(T.track_gaussian_vi(b, debias=False), g)
    for k in g:
        np.testing.assert_allclose(belief.nu[k], b * np.asarray(vi.var[k]), rtol=2e-5,
                                   atol=1e-6 * np.abs(belief.nu[k]).max())
