"""Registry contract and cross-cutting behaviour of optaxlab.optimizers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optaxlab import optimizers
from optaxlab.testing import SHAPES, STEPS, np_ema, stream
from optaxlab.transforms._checks import is_number

ISSUE_NAMES = [
    "sgd", "momentum", "sgd_gclip", "sgd_cclip", "signsgd", "signum", "ema_sign", "rmsprop",
    "adam", "adamw", "adam_equal_betas", "laprop", "acclip", "radam", "amsgrad", "adagrad", "lion",
]
ISSUE_KEYWORDS = {
    "momentum": ["momentum", "dampening", "nesterov"],
    "sgd_gclip": ["momentum", "max_norm"],
    "sgd_cclip": ["momentum", "clip"],
    "signum": ["beta"],
    "ema_sign": ["beta"],
    "rmsprop": ["b2", "eps"],
    "adam": ["b1", "b2", "eps", "weight_decay", "bias_correction"],
    "adamw": ["b1", "b2", "eps", "weight_decay", "bias_correction"],
    "adam_equal_betas": ["beta", "eps", "bias_correction"],
    "laprop": ["b1", "b2", "eps"],
    "acclip": ["b1", "b2", "alpha", "eps", "weight_decay"],
}


def test_registry_lists_every_issue_name():
    assert set(ISSUE_NAMES) <= set(optimizers.names())


@pytest.mark.parametrize("name", ISSUE_NAMES)
def test_keywords_and_common_keywords(name):
    hp = optimizers.hparams(name)
    for kw in ISSUE_KEYWORDS.get(name, []) + ["weight_decay", "mask"]:
        assert kw in hp, (name, kw)
    assert "learning_rate" not in hp


def test_issue_defaults():
    assert optimizers.hparams("momentum")["dampening"] == 0.0
    assert optimizers.hparams("momentum")["nesterov"] is False
    assert optimizers.hparams("adam_equal_betas")["eps"] == 0.0
    assert optimizers.hparams("adam_equal_betas")["bias_correction"] is True
    assert optimizers.hparams("acclip")["alpha"] == 1.0
    assert optimizers.hparams("adam")["bias_correction"] is True


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="valid names: .*adam_equal_betas"):
        optimizers.create("adamm", 1e-3)
    with pytest.raises(ValueError, match="adamm"):
        optimizers.hparams("adamm")


def test_unknown_keyword_lists_valid_keywords():
    with pytest.raises(ValueError, match=r"\['b3'\].*valid keywords: b1, b2"):
        optimizers.create("adam", 1e-3, b3=0.5)


@pytest.mark.parametrize(
    "name,kw",
    [
        ("adam", {"b1": 1.5}),
        ("adam", {"init": "ones"}),
        ("adam", {"init": "first"}),  # gradient init needs bias_correction=False
        ("sgd_cclip", {"clip": -1.0}),
        ("sgd_gclip", {"max_norm": 0.0}),
        ("momentum", {"nesterov": True, "dampening": 0.5}),
        ("acclip", {"alpha": 0.0}),
        ("adam_equal_betas", {"eps": -1.0}),
    ],
)
def test_bad_values_raise(name, kw):
    with pytest.raises(ValueError, match=next(iter(kw)) if "init" not in kw else "init"):
        optimizers.create(name, 1e-3, **kw)


@pytest.mark.parametrize("name", optimizers.names())
def test_inject_hyperparams_around_create_exposes_learning_rate(name):
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    sched = optax.linear_schedule(0.1, 0.0, 10)
    kw = {"weight_decay": 0.1} if "weight_decay" in optimizers.hparams(name) else {}
    opt = optax.inject_hyperparams(optimizers.create)(name, learning_rate=sched, **kw)
    state = opt.init(params)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    step = jax.jit(opt.update)
    for _ in range(3):
        _, state = step(grads, state, params)
    # the state records the rate used by the latest (third) step: schedule(2)
    assert state.hyperparams["learning_rate"] == pytest.approx(0.1 * (1 - 2 / 10))


# ------------------------------------------------------------------ random gradient streams



def streams(seed: int = 0, steps: int = STEPS) -> dict:
    """A Gaussian and a heavy-tailed stream, stacked on a leading axis of size 2."""
    g, h = stream("gaussian", seed, steps), stream("heavy", seed + 1, steps)
    return {k: np.stack([g[k], h[k]]) for k in g}


def init_params(seed: int = 100) -> dict:
    rng = np.random.default_rng(seed)
    return {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in SHAPES.items()}


def run(opt: optax.GradientTransformation, grads: dict, params: dict | None = None):
    """Updates of `opt` along trajectories driven by a batch of streams ([2, T, ...] leaves);
    the parameters move with the updates. One jitted, vmapped step in a Python loop (compiling
    a step costs about half a compiled scan); it must never recompile."""
    params = init_params() if params is None else params
    n = len(next(iter(grads.values())))
    params = jax.tree.map(lambda p: jnp.stack([p] * n), params)
    step, state, us = jax.jit(jax.vmap(opt.update)), jax.vmap(opt.init)(params), []
    for t in range(next(iter(grads.values())).shape[1]):
        u, state = step(jax.tree.map(lambda v, t=t: v[:, t], grads), state, params)
        params = optax.apply_updates(params, u)
        us.append(u)
    assert step._cache_size() == 1  # no recompilation after the first step
    return jax.tree.map(lambda *x: np.stack(x, axis=1), *us), state


def assert_stream_close(actual, expected, rtol=1e-5, atol=None):
    for k in expected:
        a, e = np.asarray(actual[k], np.float64), np.asarray(expected[k], np.float64)
        floor = 1e-6 * np.max(np.abs(e)) if atol is None else atol
        np.testing.assert_allclose(a, e, rtol=rtol, atol=floor, err_msg=k)


WD_MASK = {"w": True, "b": False, "v": True}
SCHEDULE = optax.cosine_decay_schedule(0.05, STEPS)

# (name, our keywords, optax reference); the learning rate is SCHEDULE for all
AGAINST_OPTAX = [
    ("sgd", {}, lambda lr: optax.sgd(lr)),
    ("momentum", {"momentum": 0.9}, lambda lr: optax.sgd(lr, momentum=0.9)),
    ("momentum", {"momentum": 0.8, "nesterov": True},
     lambda lr: optax.sgd(lr, momentum=0.8, nesterov=True)),
    ("signsgd", {}, lambda lr: optax.sign_sgd(lr)),
    ("signum", {"beta": 0.9}, lambda lr: optax.signum(lr, beta=0.9)),
    ("adam", {"b1": 0.9, "b2": 0.99, "eps": 1e-8}, lambda lr: optax.adam(lr, 0.9, 0.99, 1e-8)),
    ("adam", {"b2": 0.99, "nesterov": True}, lambda lr: optax.adam(lr, b2=0.99, nesterov=True)),
    ("adamw", {"b2": 0.99, "weight_decay": 0.1, "mask": WD_MASK},
     lambda lr: optax.adamw(lr, b2=0.99, weight_decay=0.1, mask=WD_MASK)),
    ("rmsprop", {"b2": 0.99, "eps": 1e-6}, lambda lr: optax.adam(lr, b1=0.0, b2=0.99, eps=1e-6)),
    ("adam_equal_betas", {"beta": 0.9}, lambda lr: optax.adam(lr, b1=0.9, b2=0.9, eps=0.0)),
    ("radam", {"b2": 0.95}, lambda lr: optax.radam(lr, b2=0.95)),
    ("amsgrad", {}, lambda lr: optax.amsgrad(lr)),
    ("adagrad", {}, lambda lr: optax.adagrad(lr)),
    ("lion", {"weight_decay": 0.01}, lambda lr: optax.lion(lr, weight_decay=0.01)),
]


@pytest.mark.parametrize(
    "name,kw,ref", AGAINST_OPTAX, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(AGAINST_OPTAX)]
)
def test_matches_optax_alias(name, kw, ref):
    """Gaussian and Student-t(1.5) streams, 120 steps, cosine learning-rate schedule. Where
    optaxlab computes the bias correction more accurately (adam, rmsprop, radam), b2 is one
    where optax's float32 correction is accurate too (see tests/transforms/test_precision.py
    for b2 = 0.999)."""
    g = streams(seed=11)
    ours, _ = run(optimizers.create(name, SCHEDULE, **kw), g)
    theirs, _ = run(ref(SCHEDULE), g)
    assert_stream_close(ours, theirs)


# --------------------------------------------------------------------------- numpy references




def np_momentum(g, mu):
    g = g.astype(np.float64)
    b, out = np.zeros_like(g[0]), []
    for t in range(len(g)):
        b = mu * b + g[t]
        out.append(b)
    return np.stack(out)


LR = 0.05

NUMPY_REFS = {
    # name: (keywords, direction(g) for one leaf's (T, ...) stream, float64)
    "ema_sign": ({"beta": 0.8}, lambda g: np_ema(np.sign(g), 0.8)),
    "sgd_cclip": ({"momentum": 0.9, "clip": 2.0}, lambda g: np.clip(np_momentum(g, 0.9), -2, 2)),
    "adam-no-bias-correction": (
        {"b1": 0.9, "b2": 0.99, "bias_correction": False},
        lambda g: np_ema(g, 0.9) / (np.sqrt(np_ema(g.astype(np.float64) ** 2, 0.99)) + 1e-8),
    ),
    "adam-gradient-init": (
        {"b1": 0.9, "b2": 0.99, "bias_correction": False, "init": "first"},
        lambda g: np_ema(g, 0.9, "first")
        / (np.sqrt(np_ema(g.astype(np.float64) ** 2, 0.99, "first")) + 1e-8),
    ),
    "signum-gradient-init": ({"beta": 0.9, "init": "first"},
                             lambda g: np.sign(np_ema(g, 0.9, "first"))),
    "signum_fixed_mollifier": (
        {"beta": 0.9, "variance": 4.0},
        lambda g: np_ema(g, 0.9) / np.sqrt(np_ema(g, 0.9) ** 2 + 4.0),
    ),
}


@pytest.mark.parametrize("case", list(NUMPY_REFS))
def test_matches_numpy_recurrence(case):
    """Gaussian and Student-t(1.5) streams, 120 steps, float64 numpy reference."""
    name = case.split("-")[0]
    kw, direction = NUMPY_REFS[case]
    g = streams(seed=12)
    ours, _ = run(optimizers.create(name, LR, **kw), g)
    expected = {k: -LR * np.stack([direction(v[0]), direction(v[1])]) for k, v in g.items()}
    # errors of EMAs of signed values are absolute (~1e-7 of the stream's scale): for the
    # directions that are linear in m near m = 0 the floor is set by the input scale
    atol = {k: 1e-6 * LR * np.abs(v).max() for k, v in g.items()}
    for k in g:
        np.testing.assert_allclose(
            np.asarray(ours[k], np.float64), expected[k], rtol=1e-5,
            atol=max(atol[k] if case in ("sgd_cclip", "signum_fixed_mollifier") else 0,
                     1e-6 * np.abs(expected[k]).max()),
            err_msg=k,
        )


@pytest.mark.parametrize("name", ["laprop", "acclip", "signum_fixed_mollifier", "adam_equal_betas"])
def test_decoupled_weight_decay_and_schedule(name):
    """Every chain is direction -> + wd * p (masked) -> * -lr(t): check against the wd-free run."""
    g = streams(seed=13, steps=30)
    g = {k: v[:1] for k, v in g.items()}  # the Gaussian one
    p0 = init_params()
    wd = 0.3
    kw = {"variance": 1.0} if name == "signum_fixed_mollifier" else {}
    ours, _ = run(optimizers.create(name, SCHEDULE, weight_decay=wd, mask=WD_MASK, **kw), g, p0)
    ours, g = {k: v[0] for k, v in ours.items()}, {k: v[0] for k, v in g.items()}
    # replay: same direction, our own decay term, on the same trajectory
    direction = optimizers.create(name, 1.0, weight_decay=0.0, **kw)  # -1 * u
    state, step = direction.init(p0), jax.jit(direction.update)
    p = p0
    for t in range(30):
        gt = {k: jnp.asarray(v[t]) for k, v in g.items()}
        u, state = step(gt, state, p)
        u = jax.tree.map(jnp.negative, u)
        expected = {
            k: -SCHEDULE(t) * (u[k] + (wd * p[k] if WD_MASK[k] else 0.0)) for k in u
        }
        for k in u:
            np.testing.assert_allclose(ours[k][t], expected[k], rtol=1e-5, atol=1e-7)
        p = optax.apply_updates(p, {k: ours[k][t] for k in u})


# --------------------------------------------------------------------------- convergence

SIGN_LIKE = {"signsgd", "signum", "ema_sign", "signum_fixed_mollifier"}
SOLVE_KW = {  # learning rates as in optax's alias tests where the optimizer is there
    "sgd": {"learning_rate": 1e-3},
    "momentum": {"learning_rate": 1e-3},
    "sgd_gclip": {"learning_rate": 1e-3},
    "sgd_cclip": {"learning_rate": 1e-3, "clip": 10.0},
    "rmsprop": {"learning_rate": 5e-3},
    "adam": {"learning_rate": 1e-1},
    "adamw": {"learning_rate": 1e-1},
    "adam_equal_betas": {"learning_rate": 1e-1, "beta": 0.9},
    "laprop": {"learning_rate": 1e-2},
    "acclip": {"learning_rate": 1e-2},
    "radam": {"learning_rate": 5e-3},
    "amsgrad": {"learning_rate": 1e-1},
    "adagrad": {"learning_rate": 1.0},
    "lion": {"learning_rate": 1e-2, "weight_decay": 1e-4},
    "lamb": {"learning_rate": 1e-3},
    "prodigy": {"learning_rate": 0.1},  # a multiplier of the estimated step
}


def _parabola(p):
    return jnp.sum((p - jnp.array([1.0, -1.0, 1.0])) ** 2)


def _rosenbrock(p):
    return (1.0 - p[0]) ** 2 + 100.0 * (p[1] - p[0] ** 2) ** 2


def _minimize(opt, f, x0, steps=10_000):
    def body(carry, _):
        x, s = carry
        u, s = opt.update(jax.grad(f)(x), s, x)
        return (optax.apply_updates(x, u), s), None

    (x, s), _ = jax.lax.scan(body, (x0, opt.init(x0)), None, length=steps)
    return optimizers.eval_params(s, x)  # x itself but for schedule-free


@pytest.mark.parametrize("name", optimizers.names())
def test_solves_parabola_and_rosenbrock(name):
    """Like optax's alias tests: 10k steps to rtol = atol = 3e-2; sign methods (constant
    learning rate, they need a schedule for Rosenbrock) only on the parabola."""
    opt = optimizers.create(name, **SOLVE_KW.get(name, {"learning_rate": 1e-2}))
    x_para, x_rosen = jax.jit(
        lambda: (
            _minimize(opt, _parabola, jnp.array([-1.0, 10.0, 1.0])),
            _minimize(opt, _rosenbrock, jnp.zeros(2)),
        )
    )()
    np.testing.assert_allclose(x_para, [1.0, -1.0, 1.0], rtol=3e-2, atol=3e-2)
    if name not in SIGN_LIKE:
        np.testing.assert_allclose(x_rosen, [1.0, 1.0], rtol=3e-2, atol=3e-2)


# --------------------------------------------------------------------------- wrappers

MASK = {"w": True, "b": False, "v": True}


def _steps(opt, grads_list, params):
    """Run `opt` over a short list of gradients with one jitted step (which must not recompile:
    the state keeps its types); the list of updates and the final state."""
    step, state, us = jax.jit(opt.update), opt.init(params), []
    for g in grads_list:
        u, state = step(g, state, params)
        params = optax.apply_updates(params, u)
        us.append(u)
        if len(us) == 1:  # the cache is shared by all jits of the same function: count from here
            compiled = step._cache_size()
    assert step._cache_size() == compiled
    return us, state


def _grads(n, seed=0, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    return [
        {k: jnp.asarray(rng.normal(size=s), dtype) for k, s in SHAPES.items()} for _ in range(n)
    ]


def _tree_close(a, b, rtol=1e-6, atol=1e-7):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a, b)


@pytest.mark.parametrize("name", optimizers.names())
def test_masked_multisteps_inject_and_jit(name):
    params = init_params()
    lr = 0.01
    opt = optimizers.create(name, lr)
    grads = _grads(4)
    # schedule-free's update is a difference of parameter-sized numbers (y_new - y): its
    # round-off is absolute, ~1 ulp of the parameters
    atol = 3e-7 if name == "schedule_free_adamw" else 1e-7

    # optax.masked: masked leaves see the optimizer on the sub-tree, the rest passes through
    us_masked, _ = _steps(optax.masked(opt, MASK), grads, params)
    sub = lambda t: {k: v for k, v in t.items() if MASK[k]}
    us_sub, _ = _steps(opt, [sub(g) for g in grads], sub(params))
    for u, u_sub, g in zip(us_masked, us_sub, grads, strict=True):
        _tree_close(sub(u), u_sub, atol=atol)
        np.testing.assert_array_equal(u["b"], g["b"])

    # optax.MultiSteps(k=2): every second step applies the update of the mean gradient
    multi = optax.MultiSteps(opt, every_k_schedule=2)
    us_multi, _ = _steps(multi.gradient_transformation(), grads, params)
    means = [jax.tree.map(lambda a, b: (a + b) / 2, grads[i], grads[i + 1]) for i in (0, 2)]
    us_plain, _ = _steps(opt, means, params)
    for i in (0, 2):
        jax.tree.map(lambda x: np.testing.assert_array_equal(x, 0.0), us_multi[i])
        _tree_close(us_multi[i + 1], us_plain[i // 2], rtol=1e-5, atol=max(atol, 1e-6))

    # optax.inject_hyperparams around the factory: every numeric hparam injected (traced) but
    # the static ones; same numbers, hyperparameters in the state
    static = optimizers.static_hparams(name)
    injected = optax.inject_hyperparams(optimizers.get(name), static_args=static)(learning_rate=lr)
    us_inj, state = _steps(injected, grads, params)
    us_ref, _ = _steps(opt, grads, params)
    _tree_close(us_inj, us_ref, rtol=1e-5, atol=atol)
    numeric = {k for k, v in optimizers.hparams(name).items() if is_number(v)} - set(static)
    assert numeric | {"learning_rate"} <= set(state.hyperparams)
    assert float(state.hyperparams["learning_rate"]) == pytest.approx(lr)


def test_inject_hyperparams_with_flags():
    """Booleans stay static under inject_hyperparams; the numeric rest is injected."""
    params, grads = init_params(), _grads(3)
    for name, kw in [("momentum", {"nesterov": True}), ("adam", {"bias_correction": False}),
                     ("adam_equal_betas", {"bias_correction": False}), ("rmsprop",
                     {"bias_correction": False})]:
        injected = optax.inject_hyperparams(optimizers.get(name))(learning_rate=0.01, **kw)
        us_inj, _ = _steps(injected, grads, params)
        us_ref, _ = _steps(optimizers.create(name, 0.01, **kw), grads, params)
        _tree_close(us_inj, us_ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", optimizers.names())
def test_bfloat16_params_stay_bfloat16(name):
    params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), init_params())
    wd = "weight_decay" if "weight_decay" in optimizers.hparams(name) else "weight_decay_rate"
    opt = optimizers.create(name, 0.01, **{wd: 0.01})
    us, state = _steps(opt, _grads(3, dtype=jnp.bfloat16), params)
    for u in us:
        assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(u))
    new = optax.apply_updates(params, us[-1])
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(new))
    floats = [  # parameter-sized buffers (muon's 3 Newton-Schulz coefficients are not one;
        # scalars are float32: tests/test_optimizers_bf16.py; schedule-free's z is float32)
        x for p, x in jax.tree_util.tree_leaves_with_path(state)
        if jnp.issubdtype(x.dtype, jnp.floating) and x.ndim > 0
        and "ns_coeffs" not in jax.tree_util.keystr(p)
    ]
    if name == "schedule_free_adamw":  # z (the iterate) in float32, its Adam buffer bfloat16
        assert {x.dtype for x in floats} == {jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)}
    else:
        assert all(x.dtype == jnp.bfloat16 for x in floats), {x.dtype for x in floats}
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(new))


@pytest.mark.parametrize("name", optimizers.names())
def test_state_buffers_are_distinct_so_the_state_can_be_donated(name):
    """No state buffer is another state buffer or a parameter (prodigy's params0, schedule-free's
    z): a train step donates the parameters and the state together."""
    params = init_params()
    opt = optimizers.create(name, 0.01)
    state = opt.init(params)
    arrays = [x for x in jax.tree.leaves(state) if x.ndim > 0] + jax.tree.leaves(params)
    pointers = {x.unsafe_buffer_pointer() for x in arrays}
    assert len(pointers) == len(arrays)

    def step(grads, state, params):
        updates, state = opt.update(grads, state, params)
        return state, optax.apply_updates(params, updates)

    state, params = jax.jit(step, donate_argnums=(1, 2))(_grads(1)[0], state, params)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(params))
