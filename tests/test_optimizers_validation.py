"""The registry rejects bad hyperparameter values with one line: '<keyword>=<value>: <what is
valid>'; schedules and JAX arrays (what inject_hyperparams passes) are never rejected."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optaxlab import optimizers
from optaxlab.transforms import _checks

LR_MSG = "must be a finite number > 0 or an optax schedule"


def raises_one_line(expected: str, name: str, lr, **kw):
    """create() fails with `expected`, and check() (which builds nothing) with the same line,
    as an HparamError naming the keyword and the value."""
    with pytest.raises(ValueError) as info:
        optimizers.create(name, lr, **kw)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg == expected, msg
    with pytest.raises(optimizers.HparamError) as checked:
        optimizers.check(name, lr, **kw)
    assert str(checked.value) == expected
    field = checked.value.field
    value = lr if field == "learning_rate" else kw[field]
    assert checked.value.value is value
    assert expected == f"{field}={_checks.fmt(value)}: {checked.value.reason}"


# every bad value named in the issue, with the exact message
ISSUE_CASES = [
    ("adam", None, {}, f"learning_rate=None: {LR_MSG}"),  # was gradient ascent with a unit step
    ("adam", float("nan"), {}, f"learning_rate=nan: {LR_MSG}"),
    ("adam", -0.1, {}, f"learning_rate=-0.1: {LR_MSG}"),
    ("adam", "0.1", {}, f"learning_rate='0.1': {LR_MSG}"),  # was an unrelated TypeError
    ("adam", float("inf"), {}, f"learning_rate=inf: {LR_MSG}"),
    ("adam", 0.0, {}, f"learning_rate=0.0: {LR_MSG}"),
    ("adam", True, {}, f"learning_rate=True: {LR_MSG}"),
    ("adam", np.float32("nan"), {}, f"learning_rate=nan: {LR_MSG}"),
    ("sgd", np.float64(-1.0), {}, f"learning_rate=-1.0: {LR_MSG}"),
    # b1 = 1.0: NaN from step 1 (adam, adam_equal_betas, laprop) or zero updates (acclip)
    ("adam", 1e-3, {"b1": 1.0}, "b1=1.0: must be in [0, 1)"),
    ("adam_equal_betas", 1e-3, {"beta": 1.0}, "beta=1.0: must be in [0, 1)"),
    ("laprop", 1e-3, {"b1": 1.0}, "b1=1.0: must be in [0, 1)"),
    ("acclip", 1e-3, {"b1": 1.0}, "b1=1.0: must be in [0, 1)"),
    # radam, amsgrad, lion, rmsprop accepted b1 / b2 = 1.2
    ("radam", 1e-3, {"b1": 1.2}, "b1=1.2: must be in [0, 1)"),
    ("amsgrad", 1e-3, {"b1": 1.2}, "b1=1.2: must be in [0, 1)"),
    ("lion", 1e-3, {"b1": 1.2}, "b1=1.2: must be in [0, 1)"),
    ("rmsprop", 1e-3, {"b2": 1.2}, "b2=1.2: must be in [0, 1)"),
    ("adam", 1e-3, {"b2": 1.5}, "b2=1.5: must be in [0, 1)"),
    ("adam", 1e-3, {"b2": -0.1}, "b2=-0.1: must be in [0, 1)"),
    ("adam", 1e-3, {"b1": "0.9"}, "b1='0.9': must be in [0, 1)"),
    ("adam", 1e-3, {"eps": -1e-8}, "eps=-1e-08: must be a finite number >= 0"),
    ("adam", 1e-3, {"eps": float("nan")}, "eps=nan: must be a finite number >= 0"),
    ("adamw", 1e-3, {"weight_decay": -0.1},
     "weight_decay=-0.1: must be a finite number >= 0 or an optax schedule"),
    ("adam", 1e-3, {"max_norm": 0.0}, "max_norm=0.0: must be a finite number > 0 or None"),
    ("adam", 1e-3, {"coordinate_clip": -1.0},
     "coordinate_clip=-1.0: must be a finite number > 0 or None"),
    ("momentum", 1e-3, {"momentum": 1.0}, "momentum=1.0: must be in [0, 1)"),
    ("momentum", 1e-3, {"dampening": 1.5}, "dampening=1.5: must be in [0, 1]"),
    ("momentum", 1e-3, {"nesterov": "yes"}, "nesterov='yes': must be True or False"),
    ("adam", 1e-3, {"init": "ones"}, "init='ones': must be one of ['zero', 'first']"),
    ("schedule_free_adamw", 1e-3, {"b1": 0.0}, "b1=0.0: must be in (0, 1)"),
    ("prodigy", 1.0, {"betas": (0.9, 1.0)},
     "betas=(0.9, 1.0): must be a pair (b1, b2) of numbers in [0, 1)"),
    ("muon", 1e-3, {"ns_steps": 0}, "ns_steps=0: must be an integer >= 1"),
    ("muon", 1e-3, {"preconditioning": "svd"},
     "preconditioning='svd': must be one of ['frobenius', 'spectral', 'aol', 'schatten']"),
    ("adafactor", 1e-3, {"decay_rate": 0.0}, "decay_rate=0.0: must be a finite number > 0"),
    ("adafactor", 1e-3, {"dtype_momentum": "float33"},
     "dtype_momentum='float33': must be None or a dtype name such as 'float32' or 'bfloat16'"),
]


@pytest.mark.parametrize("name,lr,kw,expected", ISSUE_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(ISSUE_CASES)])
def test_bad_value_one_line(name, lr, kw, expected):
    raises_one_line(expected, name, lr, **kw)


def test_bad_regex_names_the_keyword():
    with pytest.raises(ValueError, match=r"^adam_params='\[': must be None or a valid regular"):
        optimizers.create("muon", 1e-3, adam_params="[")


@pytest.mark.parametrize("name", optimizers.names())
def test_every_optimizer_rejects_bad_learning_rates_and_decay_rates(name):
    for lr in (None, float("nan"), -1e-3, "1e-3"):
        with pytest.raises(ValueError, match=rf"^learning_rate={re.escape(repr(lr))}: "):
            optimizers.create(name, lr)
    checked = 0
    for key in optimizers.hparams(name):
        rule = optimizers._RULES.get(key)
        if rule is _checks.check_decay:  # every plain decay rate: 1.0 and 1.5 are rejected
            for bad in (1.0, 1.5, -0.5):
                with pytest.raises(ValueError, match=rf"^{key}={bad}: must be in "):
                    optimizers.create(name, 1e-3, **{key: bad})
            checked += 1
        if key in ("eps", "eps_root"):
            with pytest.raises(ValueError, match=rf"^{key}=-1.0: must be a finite number >= 0"):
                optimizers.create(name, 1e-3, **{key: -1.0})
    # the sign family and sgd have no decay rate; everything else has one
    if name not in ("sgd", "signsgd", "adagrad", "adafactor", "prodigy"):
        assert checked > 0, name


@pytest.mark.parametrize("name", optimizers.names())
def test_schedules_and_jax_arrays_are_accepted(name):
    """A schedule is a valid learning rate; JAX arrays (inject_hyperparams' values, concrete at
    init and traced in update) are never checked, so vmapped sweeps can inject them."""
    params = {"w": jnp.ones((3, 2))}
    opt = optimizers.create(name, optax.linear_schedule(0.0, 0.1, 10))
    opt.init(params)
    # an array learning rate is not checked, even a bad one: it is the caller's (traced) value
    optimizers.create(name, jnp.asarray(-1.0)).init(params)

    # traced: validation skips tracers inside jit (an injected b1, say)
    @jax.jit
    def build_and_step(lr):
        tx = optimizers.create(name, lr)
        return tx.update({"w": jnp.ones((3, 2))}, tx.init(params), params)[0]

    assert jnp.all(jnp.isfinite(build_and_step(jnp.asarray(0.1))["w"]))


def test_unknown_keyword_message_unchanged():
    with pytest.raises(ValueError, match=r"^Unknown keyword\(s\) \['b3'\] for optimizer 'adam'"):
        optimizers.create("adam", 1e-3, b3=0.5)
    with pytest.raises(ValueError, match=r"^Unknown optimizer 'adamm'; valid names: sgd, "):
        optimizers.create("adamm", 1e-3)


def test_hparam_types_and_static_hparams():
    types = optimizers.hparam_types("adam")
    assert types["b1"] is float and types["max_norm"] is float and types["init"] is str
    assert types["nesterov"] is bool and types["weight_decay"] is float and types["mask"] is None
    assert optimizers.hparam_types("muon")["adam_params"] is str
    assert optimizers.hparam_types("muon")["ns_steps"] is int
    assert optimizers.hparam_types("prodigy")["betas"] is tuple
    assert optimizers.static_hparams("muon") == ("ns_steps",)
    assert optimizers.static_hparams("schedule_free_adamw") == ("warmup_steps",)
    assert optimizers.static_hparams("adafactor") == ("min_dim_size_to_factor",)
    assert optimizers.static_hparams("adam") == ()
    for name in optimizers.names():  # every keyword with a None default has a config type
        types = optimizers.hparam_types(name)
        for key, default in optimizers.hparams(name).items():
            if default is None and key not in ("mask", "mu_dtype", "state_dtype"):
                assert types[key] is not None, (name, key)
