"""Config validation: every bad field gives a one-line error saying what is valid, before the
workdir is touched; unknown fields are refused by ml_collections' key locking; the optimizer
registry is the one judge of optimizer names, hparams and values; shipped configs validate."""

import dataclasses
import re
from pathlib import Path

import ml_collections
import pytest

from optaxlab import configs, optimizers
from optaxlab.train import ConfigError, train
from optaxlab.train import config as config_lib

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p.stem for p in (ROOT / "optaxlab" / "configs").glob("*.py")
                 if not p.stem.startswith("_"))


def load_config(name):
    return configs.get_config(name)


def test_configs_ship_in_the_package_and_load_by_name(tmp_path, monkeypatch):
    assert sorted(configs.NAMES) == CONFIGS  # every file in optaxlab/configs/ is listed
    monkeypatch.chdir(tmp_path)  # outside the repository: names still resolve
    path = config_lib.config_file("lm_tiny")
    assert path == str(ROOT / "optaxlab" / "configs" / "lm_tiny.py")
    assert config_lib.config_file("lm_tiny:extra") == path + ":extra"
    assert config_lib.config_file("nope") == "nope"  # the loader then reports it
    assert configs.get_config("lm_tiny").model.n_layers == 2
    # every CLI that takes --config (train, aot, memory) rewrites a name the same way
    assert config_lib.config_args(["x", "--config", "lm_tiny", "--config=lm_160m:a", "--y"]) == [
        "x", "--config", path, "--config=" + str(ROOT / "optaxlab/configs/lm_160m.py") + ":a",
        "--y"]
    with pytest.raises(ValueError, match=r"config 'nope': no such shipped config; valid: "
                                         r"lm_tiny, lm_small"):
        configs.get_config("nope")


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_validate(name):
    c = load_config(name)
    for field in ("steps", "seed", "checkpoint_every", "batch_size", "eval_every", "log_every",
                  "nan_policy", "keep_checkpoints", "mesh", "monitor", "model", "data"):
        assert field in c
    assert "grad_clip" not in c and "debug" not in c  # one clip (the chain's), no test hooks
    assert {"name", "learning_rate", "warmup_fraction", "lr_floor"} <= set(c.optimizer)
    plan = config_lib.validate(c, num_devices=8)
    assert plan.task == ("lm" if name.startswith("lm_") else "classification")
    assert plan.optimizer_hparams["weight_decay"] == c.optimizer.weight_decay
    # LM configs clip the gradient's global norm at 1 (as in the papers), in the chain
    assert c.optimizer.max_norm == (1.0 if name.startswith("lm_") else None)
    assert c.optimizer.warmup_fraction in (0.0, 0.1)
    assert c.is_locked and c.model.is_locked and c.data.is_locked and c.mesh.is_locked
    assert not c.optimizer.is_locked  # its keys are the optimizer's


def test_unknown_fields_are_refused_where_they_are_set():
    c = load_config("lm_tiny")
    for block, key in ((c, "grad_clip"), (c.mesh, "pipeline"), (c.model, "d_modle"),
                       (c.data, "pathh"), (c.monitor, "evry")):
        with pytest.raises(AttributeError, match=f'Key "{key}" does not exist'):
            setattr(block, key, 1)
    assert config_lib.unknown_field_message(c, "model.d_modle") == (
        "config.model.d_modle: unknown field; valid fields of config.model: attention_impl, "
        "compute_dtype, d_model, init_std, logits_chunk, max_len, mlp_ratio, n_heads, n_layers, "
        "name, remat, rope_fraction, vocab_size")


def edit(c, **fields):
    for key, value in fields.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        with node.ignore_type():
            node[leaf] = value
    return c


BAD = [
    ({"optimizer.name": "adamz"}, r"^config\.optimizer\.name: .*'adamz'.*signum"),
    ({"optimizer.b3": 0.9}, r"^config\.optimizer: .*'b3'.*'adam'.*b2"),
    ({"optimizer.b2": 1.5}, r"^config\.optimizer\.b2=1\.5\b"),  # not under config.model
    ({"optimizer.init": "first"},  # a cross-keyword rule (init with bias_correction)
     r"^config\.optimizer\.init='first': gradient initialization is unbiased"),
    ({"optimizer.name": "/no/such/file.py:f"},
     r"^config\.optimizer\.name: optimizer '/no/such/file\.py': file not found"),
    ({"mesh.data": 3}, r"^config\.mesh: data=3 fsdp=1 tensor=1 needs 3 devices but 8 .*"),
    ({"mesh.data": 1, "mesh.tensor": 8},
     r"^config\.mesh\.tensor: 8 does not divide model\.n_heads=4; valid tensor sizes: 1, 2, 4"),
    ({"mesh.data": -1, "mesh.fsdp": -1}, r"^config\.mesh: .*at most one axis may be -1"),
    ({"batch_size": 12}, r"^config\.batch_size: 12 is not divisible by the batch shards"),
    ({"nan_policy": "maybe"}, r"^config\.nan_policy: 'maybe'; valid: halt, skip"),
    ({"steps": 0}, r"^config\.steps: 0 must be a positive int"),
    ({"optimizer.schedule": "linear"}, r"^config\.optimizer\.schedule: 'linear'; valid: cosine"),
    ({"optimizer.warmup_fraction": 1.0}, r"^config\.optimizer\.warmup_fraction: 1\.0 must be"),
    ({"model.name": "rnn"}, r"^config\.model\.name: 'rnn'; valid: transformer, cnn, mlp"),
    ({"seq_len": 128}, r"^config\.seq_len: 128 exceeds model\.max_len=64"),
    ({"monitor.every": -1}, r"^config\.monitor\.every"),
]


@pytest.mark.parametrize(("fields", "pattern"), BAD)
def test_bad_config_one_line_error(fields, pattern):
    c = edit(load_config("lm_tiny"), **fields)
    with pytest.raises(ConfigError, match=pattern) as info:
        config_lib.validate(c, num_devices=8)
    assert "\n" not in str(info.value)


def _rejected(**fields) -> str:
    with pytest.raises(ConfigError) as info:
        config_lib.validate(edit(load_config("lm_tiny"), **fields), num_devices=8)
    assert "\n" not in str(info.value)
    return str(info.value)


def _registry_checks_values() -> bool:
    try:
        optimizers.create("adam", float("nan"))
    except ValueError:
        return True
    return False


# The next two need the registry's value checks (contract item 7, engineer R's branch): until
# that is merged the registry accepts a NaN / None / negative learning rate and b1 = 1, and they
# are expected to fail; once the registry checks values they are ordinary tests.
needs_registry_checks = pytest.mark.xfail(
    not _registry_checks_values(), strict=True,
    reason="the optimizer registry does not check values yet (engineer R's branch)")


@needs_registry_checks
def test_bad_learning_rates_rejected_by_the_registry_at_config_time():
    for lr, shown in ((float("nan"), "nan"), (None, "None"), (-1e-3, "-0.001"), ("0.1", "'0.1'")):
        msg = _rejected(**{"optimizer.learning_rate": lr})
        assert msg.startswith(f"config.optimizer.learning_rate={shown}: "), msg


@needs_registry_checks
def test_bad_decay_rates_and_eps_rejected_by_the_registry():
    for fields, head in (({"optimizer.b1": 1.0}, "b1=1.0"), ({"optimizer.b2": -0.1}, "b2=-0.1"),
                         ({"optimizer.eps": -1e-8}, "eps=-1e-08")):
        msg = _rejected(**fields)
        assert msg.startswith(f"config.optimizer.{head}: "), msg


@pytest.mark.parametrize(("fields", "pattern"), [
    ({"mesh.data": 3}, r"needs 3 devices"),
    ({"model.rope_fraction": -1.0}, r"^config\.model: "),
    ({"data.name": "imagenet"}, r"^config\.data: unknown data name 'imagenet'; valid"),
])
def test_train_rejects_bad_config_before_touching_workdir(tmp_path, fields, pattern):
    workdir = tmp_path / "run"
    with pytest.raises(ConfigError, match=pattern):
        train(edit(load_config("lm_tiny"), **fields), workdir)
    assert not workdir.exists()


def test_switch_optimizer_starts_from_the_new_optimizers_defaults():
    """Issue 20's rule: registry defaults, then the file's values only for the same optimizer,
    then the explicit ones; no carry-over between optimizers by a shared keyword."""
    c = load_config("lm_small")  # adamw, b2=0.95, weight_decay=0.1, max_norm=1.0
    new = config_lib.switch_optimizer(c.optimizer, "signum", {"beta": 0.8})
    assert new.name == "signum" and new.beta == 0.8
    defaults = optimizers.hparams("signum")
    assert (new.weight_decay, new.max_norm) == (defaults["weight_decay"], defaults["max_norm"])
    assert "b2" not in new  # adamw-only
    same = config_lib.switch_optimizer(c.optimizer, "adamw", {})
    assert (same.b2, same.weight_decay, same.max_norm) == (0.95, 0.1, 1.0)
    assert new.learning_rate == c.optimizer.learning_rate
    assert new.warmup_fraction == c.optimizer.warmup_fraction
    # a hparam the new optimizer lacks is the registry's to refuse, at validation
    c.optimizer = config_lib.switch_optimizer(c.optimizer, "signum", {"b2": 0.9})
    with pytest.raises(ConfigError, match=r"^config\.optimizer: .*'b2'.*'signum'"):
        config_lib.validate(c, num_devices=8)
    with pytest.raises(ConfigError, match=r"config\.optimizer\.name: 'sgdd' is not a registered"):
        config_lib.switch_optimizer(c.optimizer, "sgdd")


def test_optimizer_config_has_every_registry_hparam_with_a_settable_type():
    for name in optimizers.names():
        block = config_lib.optimizer_config(name, 1e-3)
        assert set(optimizers.hparams(name)) - {"mask"} <= set(block)
        assert config_lib.check_optimizer(block).keys() == \
            optimizers.hparams(name).keys() - {"mask"}
    block = config_lib.optimizer_config("adam", 1e-3)
    block.max_norm = 1.0  # a None default typed from the registry's signature (float | None)
    with pytest.raises(TypeError):
        block.max_norm = "big"
    assert isinstance(block, ml_collections.ConfigDict)


@pytest.mark.parametrize(("fields", "pattern"), [
    ({"data.path": "/tmp/x"}, r"^config\.data\.path: '/tmp/x' is ignored by "
     r"data\.name='stdlib_text'; "
     r"data\.path is read only by data\.name in \('memmap', 'cifar10'\)$"),
    ({"data.dtype": "uint8"}, r"^config\.data\.dtype: 'uint8' is ignored by "
     r"data\.name='stdlib_text'.*'memmap'"),
])
def test_data_field_the_source_ignores_is_an_error(fields, pattern):
    assert re.match(pattern, _rejected(**fields))


def test_optimizer_validation_builds_nothing(monkeypatch):
    """config validation asks the registry's table (optimizers.check), not create(): with
    create and the factory made to fail, a good config validates and a bad one still fails
    with the registry's line."""

    def boom(*args, **kwargs):
        raise AssertionError("built")

    monkeypatch.setattr(optimizers, "create", boom)
    monkeypatch.setitem(optimizers._TABLE, "adam",
                        dataclasses.replace(optimizers.entry("adam"), factory=boom))
    plan = config_lib.validate(load_config("lm_tiny"), num_devices=8)
    assert plan.optimizer_hparams["b2"] == 0.95
    msg = _rejected(**{"optimizer.eps": -1e-8})
    assert msg == "config.optimizer.eps=-1e-08: must be a finite number >= 0"
