"""Registry contract and cross-cutting behaviour of optaxlab.optimizers."""

import jax
import jax.numpy as jnp
import optax
import pytest

from optaxlab import optimizers

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
    opt = optax.inject_hyperparams(optimizers.create)(name, learning_rate=sched, weight_decay=0.1)
    state = opt.init(params)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    step = jax.jit(opt.update)
    for _ in range(3):
        _, state = step(grads, state, params)
    # the state records the rate used by the latest (third) step: schedule(2)
    assert state.hyperparams["learning_rate"] == pytest.approx(0.1 * (1 - 2 / 10))
