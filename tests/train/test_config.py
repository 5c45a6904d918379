"""Config validation: every bad field gives a one-line ValueError saying what is valid, before
the workdir is touched; every shipped config validates; switching optimizers."""

import importlib.util
from pathlib import Path

import pytest

from optaxlab.train import config as config_lib
from optaxlab.train import train

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p.stem for p in (ROOT / "configs").glob("*.py") if not p.stem.startswith("_"))


def load_config(name):
    spec = importlib.util.spec_from_file_location(f"config_{name}", ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_validate(name):
    c = load_config(name)
    for field in ("steps", "seed", "checkpoint_every", "batch_size", "eval_every", "log_every",
                  "nan_policy", "keep_checkpoints", "grad_clip", "mesh", "monitor", "model",
                  "data"):
        assert field in c
    assert {"name", "learning_rate", "warmup_fraction", "lr_floor"} <= set(c.optimizer)
    plan = config_lib.validate(c, num_devices=8)
    assert plan.task == ("lm" if name.startswith("lm_") else "classification")
    assert plan.optimizer_hparams["weight_decay"] == c.optimizer.weight_decay
    if name.startswith("lm_"):
        assert c.grad_clip > 0  # on for LM configs, as in the papers
    assert c.optimizer.warmup_fraction in (0.0, 0.1)


def edit(c, **fields):
    for key, value in fields.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        with node.unlocked() if hasattr(node, "unlocked") else _null():
            node[leaf] = value
    return c


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


BAD = [
    ({"foo": 1}, r"^config\.foo: unknown field; valid fields of config: .*batch_size"),
    ({"mesh.pipeline": 2}, r"^config\.mesh\.pipeline: unknown field; valid .*data, fsdp, tensor"),
    ({"optimizer.name": "adamz"}, r"^config\.optimizer\.name: 'adamz' .*valid: .*signum"),
    ({"optimizer.b3": 0.9}, r"^config\.optimizer\.b3: optimizer 'adam' has no hparam .*b2"),
    ({"mesh.data": 3}, r"^config\.mesh: data=3 fsdp=1 tensor=1 needs 3 devices but 8 .*"),
    ({"mesh.data": 1, "mesh.tensor": 8},
     r"^config\.mesh\.tensor: 8 does not divide model\.n_heads=4; valid tensor sizes: 1, 2, 4"),
    ({"mesh.data": -1, "mesh.fsdp": -1}, r"^config\.mesh: .*at most one axis may be -1"),
    ({"batch_size": 12}, r"^config\.batch_size: 12 is not divisible by the batch shards"),
    ({"nan_policy": "maybe"}, r"^config\.nan_policy: 'maybe'; valid: halt, skip"),
    ({"steps": 0}, r"^config\.steps: 0 must be a positive int"),
    ({"optimizer.learning_rate": -1.0}, r"^config\.optimizer\.learning_rate: .*positive"),
    ({"optimizer.schedule": "linear"}, r"^config\.optimizer\.schedule: 'linear'; valid: cosine"),
    ({"model.name": "rnn"}, r"^config\.model\.name: 'rnn'; valid: transformer, cnn, mlp"),
    ({"seq_len": 128}, r"^config\.seq_len: 128 exceeds model\.max_len=64"),
    ({"monitor.every": -1}, r"^config\.monitor\.every"),
]


@pytest.mark.parametrize(("fields", "pattern"), BAD)
def test_bad_config_one_line_error(fields, pattern):
    c = edit(load_config("lm_tiny"), **fields)
    with pytest.raises(ValueError, match=pattern) as info:
        config_lib.validate(c, num_devices=8)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("fields", "pattern"), [
    ({"mesh.data": 3}, r"needs 3 devices"),
    ({"model.d_modle": 64}, r"^config\.model: unknown key.*d_model"),
    ({"data.name": "imagenet"}, r"^config\.data: unknown data name 'imagenet'; valid"),
])
def test_train_rejects_bad_config_before_touching_workdir(tmp_path, fields, pattern):
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match=pattern):
        train(edit(load_config("lm_tiny"), **fields), workdir)
    assert not workdir.exists()


def test_switch_optimizer_keeps_customized_hparams_and_checks_explicit_ones():
    c = load_config("lm_small")  # adamw, b2=0.95, weight_decay=0.1
    new = config_lib.switch_optimizer(c.optimizer, "signum", {"beta": 0.8})
    assert new.name == "signum" and new.beta == 0.8
    assert new.weight_decay == 0.1  # set away from adamw's default, and signum has it
    assert "b2" not in new  # adamw-only
    assert new.learning_rate == c.optimizer.learning_rate
    assert new.warmup_fraction == c.optimizer.warmup_fraction
    with pytest.raises(ValueError, match=r"config\.optimizer\.b2: optimizer 'signum' has no "):
        config_lib.switch_optimizer(c.optimizer, "signum", {"b2": 0.9})
    with pytest.raises(ValueError, match=r"config\.optimizer\.name: 'sgdd' is not a registered"):
        config_lib.switch_optimizer(c.optimizer, "sgdd")


def test_optimizer_config_has_every_registry_hparam():
    from optaxlab import optimizers

    for name in optimizers.names():
        block = config_lib.optimizer_config(name, 1e-3)
        assert set(optimizers.hparams(name)) - {"mask"} <= set(block)
        plan_hp = config_lib.optim.optimizer_hparams(block)
        assert plan_hp.keys() == optimizers.hparams(name).keys()
