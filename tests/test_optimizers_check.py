"""optimizers.check: the registry table's rules without building anything. It fails exactly when
create() fails validation, with the same one-line message, as an HparamError carrying the
keyword and the value; it never calls a factory or a transform."""

import dataclasses

import jax.numpy as jnp
import optax
import pytest

from optaxlab import optimizers
from optaxlab import transforms as T
from optaxlab.transforms import _checks

# values that break some rule of most keywords (and pass others): every outcome is compared
CANDIDATES = (float("nan"), float("inf"), -1.0, 0, 0.0, 0.5, 1.0, 1.5, 2, None, True, "x",
              "first", (0.9, 1.5), [1])


def _outcome(fn):
    try:
        fn()
    except ValueError as e:
        return type(e).__name__, str(e)
    return None


@pytest.mark.parametrize("name", optimizers.names())
def test_check_fails_exactly_when_create_does_with_the_same_line(name):
    """For every keyword and candidate value: check() and create() both pass, or both raise an
    HparamError with the same message (the rules run in one function, so no rule can be left
    to the build; a factory that raised on its own, like muon's ns_coeffs preset, would show
    up here as a difference)."""
    rejected = 0
    for key in ("learning_rate", *optimizers.hparams(name)):
        for value in CANDIDATES:
            if key == "learning_rate":
                args, kw = (value,), {}
            else:
                args, kw = (1e-3,), {key: value}
            by_check = _outcome(lambda: optimizers.check(name, *args, **kw))
            by_create = _outcome(lambda: optimizers.create(name, *args, **kw))
            assert by_check == by_create, (name, key, value)
            if by_check is not None:
                assert by_check[0] == "HparamError" and "\n" not in by_check[1]
                rejected += 1
    assert rejected >= 4 * len(CANDIDATES) // 2  # at least learning_rate's bad values


def test_check_returns_the_hparams_with_defaults():
    got = optimizers.check("adamw", 1e-3, b2=0.95)
    assert got == {**optimizers.hparams("adamw"), "b2": 0.95}
    assert "learning_rate" not in got
    # without a learning rate it is not checked; given as None it is
    assert optimizers.check("sgd") == optimizers.hparams("sgd")
    with pytest.raises(optimizers.HparamError, match=r"^learning_rate=None: "):
        optimizers.check("sgd", None)


def test_check_builds_nothing(monkeypatch):
    """Good values pass with every factory and transform made to fail; create() fails."""

    def boom(*args, **kwargs):
        raise AssertionError("built")

    for name in ("adam", "momentum", "muon"):
        monkeypatch.setitem(optimizers._TABLE, name,
                            dataclasses.replace(optimizers.entry(name), factory=boom))
    monkeypatch.setattr(T, "scale_by_adam", boom)
    monkeypatch.setattr(optax, "chain", boom)
    assert optimizers.check("adam", 1e-3, b2=0.95, max_norm=1.0)["b2"] == 0.95
    assert optimizers.check("momentum", 0.1, momentum=0.9, nesterov=True)["nesterov"] is True
    assert optimizers.check("muon", 0.02, ns_coeffs="dion")["ns_coeffs"] == "dion"
    with pytest.raises(optimizers.HparamError, match=r"^b2=1.5: "):
        optimizers.check("adam", 1e-3, b2=1.5)
    with pytest.raises(AssertionError, match="built"):
        optimizers.create("adam", 1e-3, b2=0.95)


def test_check_error_fields():
    with pytest.raises(optimizers.HparamError) as info:
        optimizers.check("adam", 1e-3, b3=0.5, b4=1)
    e = info.value
    assert (e.field, e.value) == (None, ["b3", "b4"])
    assert str(e).startswith("Unknown keyword(s) ['b3', 'b4'] for optimizer 'adam'; valid ")
    with pytest.raises(optimizers.HparamError) as info:
        optimizers.check("adamm")
    assert (info.value.field, info.value.value) == ("name", "adamm")
    assert str(info.value).startswith("Unknown optimizer 'adamm'; valid names: sgd, ")
    with pytest.raises(optimizers.HparamError) as info:
        optimizers.check("/no/such/file.py:f")
    assert info.value.field == "name" and "file not found" in str(info.value)
    assert issubclass(optimizers.HparamError, ValueError)


@pytest.mark.parametrize(("name", "lr", "kw", "expected"), [
    ("adam", 1e-3, {"init": "first"},
     "init='first': gradient initialization is unbiased from the first step; use it with bias "
     "correction / debias off."),
    ("adam_equal_betas", 1e-3, {"init": "first"}, "init='first': gradient initialization"),
    ("momentum", 1e-3, {"nesterov": True, "dampening": 0.5},
     "dampening=0.5: must be 0 with nesterov=True (torch semantics)"),
    ("sgd_cclip", 1e-3, {"nesterov": True, "dampening": 0.1},
     "dampening=0.1: must be 0 with nesterov=True (torch semantics)"),
    ("schedule_free_adamw", optax.constant_schedule(1e-3), {"warmup_steps": 10},
     "warmup_steps=10: needs a number as learning_rate (a schedule brings its own warmup)"),
    ("muon", 1e-3, {"ns_coeffs": "polar"},
     "ns_coeffs='polar': must be (a, b, c), a list of such triples, or a preset in "
     "['standard', 'dion']"),
])
def test_cross_keyword_rules_are_checked_without_building(name, lr, kw, expected):
    for fn in (optimizers.check, optimizers.create):
        with pytest.raises(optimizers.HparamError) as info:
            fn(name, lr, **kw)
        assert str(info.value).startswith(expected)
    assert optimizers.entry(name).joint or "ns_coeffs" in kw
    # the good combinations pass
    optimizers.check("adam", 1e-3, init="first", bias_correction=False)
    optimizers.check("momentum", 1e-3, nesterov=True, dampening=0.0)
    optimizers.check("schedule_free_adamw", 1e-3, warmup_steps=10)


def test_transforms_use_the_registrys_rule_text():
    """The public transforms check with the same rule functions: the same line as the registry."""
    with pytest.raises(optimizers.HparamError) as direct:
        T.trace(0.9, nesterov=True, dampening=0.5)
    with pytest.raises(optimizers.HparamError) as registry:
        optimizers.check("momentum", 0.1, momentum=0.9, nesterov=True, dampening=0.5)
    assert str(direct.value) == str(registry.value)
    with pytest.raises(optimizers.HparamError) as direct:
        T.scale_by_adam(b2=1.5)
    assert str(direct.value) == "b2=1.5: must be in [0, 1)"
    with pytest.raises(optimizers.HparamError) as direct:
        T.scale_by_adam(init="first")
    assert direct.value.field == "init"
    # inject_hyperparams' arrays are not checked (nesterov with an injected dampening)
    T.trace(0.9, nesterov=True, dampening=jnp.asarray(0.0))
    assert _checks.HparamError is optimizers.HparamError


def test_check_a_registered_optimizer_without_calling_its_factory(monkeypatch):
    monkeypatch.setattr(optimizers, "_TABLE", dict(optimizers._TABLE))
    calls = []

    def my_sign(beta: float = 0.9, steps: int = 2):
        calls.append(beta)
        return optax.chain(optax.ema(beta, debias=False), optax.scale_by_sign())

    optimizers.register("my_sign_check", my_sign, static=("steps",))
    calls.clear()
    assert optimizers.check("my_sign_check", 1e-3, beta=0.5, weight_decay=0.1)["beta"] == 0.5
    for kw, expected in (({"beta": 1.5}, "beta=1.5: must be in [0, 1)"),
                         ({"steps": 1.5}, "steps=1.5: must be an integer"),
                         ({"weight_decay": -1.0}, "weight_decay=-1.0: must be a finite")):
        with pytest.raises(optimizers.HparamError) as info:
            optimizers.check("my_sign_check", 1e-3, **kw)
        assert str(info.value).startswith(expected)
    assert calls == []
