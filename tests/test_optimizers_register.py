"""The public way in: `optimizers.register`, references `file.py:factory` /
`package.module:factory`, the table's readers, the hparam-resolution rule, the traced check."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optaxlab import monitor, optimizers
from optaxlab.train import config as config_lib
from optaxlab.train.errors import ConfigError

USER_FILE = '''
import optax
from optaxlab import optimizers


def my_signum(beta: float = 0.9):
    return optax.chain(optax.ema(beta, debias=False), optax.scale_by_sign())


def branchy(beta: float = 0.9, steps: int = 2):
    if beta > 0.5:
        return optax.ema(beta, debias=False)
    return optax.identity()


def not_a_factory(beta: float = 0.9):
    return 3


@optimizers.register("user_rms_test", theory={"b1": 0.0, "b2": "b2"})
def user_rms(b2: float = 0.99):
    return optax.scale_by_rms(decay=b2, eps_in_sqrt=False, bias_correction=True)
'''


@pytest.fixture(autouse=True)
def _restore_table():
    """Each test's registrations are undone (other tests iterate `optimizers.names()`)."""
    before = dict(optimizers._TABLE)
    yield
    optimizers._TABLE.clear()
    optimizers._TABLE.update(before)


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "user_opt.py"
    path.write_text(USER_FILE)
    return path


def step(tx, g, p):
    state = tx.init(p)
    u, _ = tx.update(g, state, p)
    return u


def test_a_reference_equals_the_builtin_it_rebuilds_common_keywords_included(user_file):
    ref = f"{user_file}:my_signum"
    p = {"w": jnp.linspace(-1.0, 1.0, 5)}
    g = {"w": jnp.array([0.3, -2.0, 0.0, 1.0, -0.1])}
    kw = dict(beta=0.5, weight_decay=0.1, max_norm=0.5, coordinate_clip=0.2)
    ours = step(optimizers.create(ref, 0.1, **kw), g, p)
    builtin = step(optimizers.create("signum", 0.1, **kw), g, p)
    np.testing.assert_allclose(ours["w"], builtin["w"], rtol=1e-6)
    assert set(optimizers.hparams(ref)) == {"beta", *optimizers.COMMON}
    assert optimizers.entry(ref).theory is None and optimizers.theory_settings(ref, {}) == {}


def test_register_decorator_and_theory_mapping(user_file):
    optimizers.entry(f"{user_file}:user_rms")  # importing the file registers the decorated name
    assert "user_rms_test" in optimizers.names()
    assert monitor.theory_settings("user_rms_test", {"b2": 0.9}) == {"b1": 0.0, "b2": 0.9}
    assert optimizers.theory_hparams("user_rms_test") == {"b2"}


@pytest.mark.parametrize(("ref", "pattern"), [
    ("missing.py:f", r"^optimizer '.*missing\.py': file not found"),
    ("{file}:nope", r"has no attribute 'nope'; its callables: .*my_signum"),
    ("{file}:not_a_factory", r"returned int, not an optax.GradientTransformation"),
    ("no_such_module_xyz:f", r"cannot import module 'no_such_module_xyz'"),
])
def test_reference_errors_are_one_line(user_file, ref, pattern):
    with pytest.raises(ValueError, match=pattern) as e:
        optimizers.entry(optimizers.canonical(ref.format(file=user_file)))
    assert "\n" not in str(e.value)


def test_bad_values_and_names(user_file):
    ref = f"{user_file}:my_signum"
    with pytest.raises(ValueError, match=r"^beta=1\.5: must be in \[0, 1\)$"):
        optimizers.create(ref, 0.1, beta=1.5)
    with pytest.raises(ValueError, match="is a built-in optimizer"):
        optimizers.register("adam", lambda: optax.identity())
    with pytest.raises(ValueError, match="'weight_decay' is a common keyword"):
        optimizers.register("x_test", lambda weight_decay=0.0: optax.identity())
    with pytest.raises(ValueError, match="'b' has no default"):
        optimizers.register("x_test", lambda b: optax.identity())
    with pytest.raises(ConfigError, match=r"^config\.optimizer\.beta=1\.5: must be in"):
        config_lib.check_optimizer(config_lib.optimizer_config(ref, 1e-3, beta=1.5))


def test_untraceable_names_the_hparam_and_builtins_pass(user_file):
    ref = f"{user_file}:branchy"
    note = optimizers.untraceable(ref, optimizers.hparams(ref), ["beta"])
    assert note is not None and "hparam 'beta'" in note and "\n" not in note
    good = f"{user_file}:my_signum"
    assert optimizers.untraceable(good, optimizers.hparams(good), ["beta"]) is None
    assert optimizers.untraceable("adam", optimizers.hparams("adam"), ["b1"]) is None


def test_config_records_the_absolute_reference(user_file, monkeypatch):
    monkeypatch.chdir(user_file.parent)
    block = config_lib.optimizer_config("user_opt.py:my_signum", 1e-3)
    assert block.name == f"{user_file}:my_signum" and block.beta == 0.9


def test_switching_optimizers_carries_nothing_by_coincidence():
    file_block = config_lib.optimizer_config("adam", 3e-3, b2=0.95, max_norm=1.0,
                                             weight_decay=0.1)
    new = config_lib.switch_optimizer(file_block, "adamw", {"b1": 0.8})
    assert new.b2 == optimizers.hparams("adamw")["b2"] and new.max_norm is None
    assert new.weight_decay == optimizers.hparams("adamw")["weight_decay"] and new.b1 == 0.8
    assert new.learning_rate == 3e-3  # the schedule fields are the trainer's: kept
    same = config_lib.switch_optimizer(file_block, "adam", {"b1": 0.8})
    assert (same.b2, same.max_norm, same.weight_decay, same.b1) == (0.95, 1.0, 0.1, 0.8)
    diffs = config_lib.hparam_differences(file_block, new)
    assert "b2 = 0.999 (the config file has 0.95)" in diffs
    assert "max_norm = None (the config file has 1.0)" in diffs


def test_shipped_config_by_name():
    assert config_lib.config_file("lm_tiny").endswith("optaxlab/configs/lm_tiny.py")
    assert config_lib.config_file("no_such_config") == "no_such_config"
