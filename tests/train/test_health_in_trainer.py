"""The health rules inside the trainer (issue 21 §1): a blown-up but finite run ends diverged
(exit 3) and a run that does not learn ends stalled (exit 6), each with its step and reason in
status.json, under health.policy='halt'; 'warn' says so and trains on; a bad setting is a
ConfigError; a resumed run judges from the records it kept."""

import json
import logging

import jax
import pytest

from optaxlab import testing
from optaxlab.train import ConfigError, errors, train
from optaxlab.train import config as config_lib
from optaxlab.train import metrics as metrics_lib
from optaxlab.train import workdir as workdir_lib

ONE = jax.devices()[:1]
tiny_lm = testing.tiny_lm


def with_optimizer(name, lr, **fields):
    c = tiny_lm(**fields)
    c.optimizer = config_lib.switch_optimizer(c.optimizer, name)
    c.optimizer.learning_rate = lr
    return c


def test_blown_up_finite_loss_is_diverged_with_its_reason(tmp_path):
    c = with_optimizer("adam", 100.0, **{"health.policy": "halt", "steps": 20})
    c.optimizer.max_norm = None
    with pytest.raises(errors.DivergedError, match="max_loss_ratio 10"):
        train(c, tmp_path, devices=ONE)
    st = workdir_lib.read_status(tmp_path)
    assert (st["status"], st["exit_code"]) == ("diverged", errors.DIVERGED)
    assert st["step"] == st["diverged_step"] < 20 and "first logged loss" in st["message"]
    recs = metrics_lib.read_jsonl(tmp_path / "metrics.jsonl")
    assert recs[-1]["step"] == st["step"] and recs[-1]["loss"] > 10 * recs[0]["loss"]
    assert errors.exit_code(errors.DivergedError("x")) == errors.DIVERGED


def test_a_run_that_does_not_learn_is_stalled(tmp_path):
    c = with_optimizer("sgd", 1e-9, **{"health.policy": "halt", "steps": 20})
    with pytest.raises(errors.StalledError, match="never below"):
        train(c, tmp_path, devices=ONE)
    st = workdir_lib.read_status(tmp_path)
    assert (st["status"], st["exit_code"], st["step"]) == ("stalled", errors.STALLED, 10)
    assert errors.exit_code(errors.StalledError("x")) == 6


def test_warn_says_so_and_trains_on(tmp_path, caplog):
    c = with_optimizer("sgd", 1e-9, **{"steps": 20})  # health.policy defaults to 'warn'
    with caplog.at_level(logging.WARNING):
        res = train(c, tmp_path, devices=ONE)
    assert len(res.records) == 20
    assert workdir_lib.read_status(tmp_path)["status"] == "finished"
    said = [r.getMessage() for r in caplog.records if "stalled" in r.getMessage()]
    assert len(said) == 1 and "training goes on" in said[0]


def test_resume_judges_from_the_kept_records(tmp_path):
    # Steps 1-10 learn (adam 1e-2), steps 11-20 do not (lr 1e-9). Judged over the whole run
    # (the first logged loss is step 1's) there was progress: no stall. A resumed run that
    # forgot steps 1-10 would take step 11's loss as the first and call the run stalled.
    c = with_optimizer("adam", 1e-2, **{"health.policy": "halt", "steps": 20,
                                        "health.stall_after": 0.75})
    c.optimizer.warmup_fraction = 0.0
    c.optimizer.schedule = "constant"
    train(c, tmp_path, devices=ONE, stop_after=10)
    recs = metrics_lib.read_jsonl(tmp_path / "metrics.jsonl")
    assert recs[-1]["loss"] < 0.9 * recs[0]["loss"]  # it learned
    c.optimizer.learning_rate = 1e-9
    res = train(c, tmp_path, devices=ONE)
    assert workdir_lib.read_status(tmp_path)["status"] == "finished"
    assert [r["step"] for r in res.records][-1] == 20
    # ... while the same ten flat steps judged on their own are stalled.
    from optaxlab.train import health
    flat = [r for r in metrics_lib.read_jsonl(tmp_path / "metrics.jsonl") if r["step"] > 10]
    v = health.check_records(flat, {**c.health.to_dict(), "stall_after": 0.25}, 20)
    assert v is not None and v.status == "stalled"


@pytest.mark.parametrize("field,value", [("policy", "stop"), ("max_loss_ratio", 0.5),
                                         ("zero_grad_steps", 0), ("stall_margin", 1.5)])
def test_bad_health_settings_are_config_errors(tmp_path, field, value):
    c = tiny_lm(**{f"health.{field}": value})
    with pytest.raises(ConfigError, match=f"health.{field}"):
        train(c, tmp_path / "w", devices=ONE)
    assert not (tmp_path / "w").exists() or not any((tmp_path / "w").iterdir())
    json.dumps(c.health.to_dict())  # the block is plain JSON in config.json
