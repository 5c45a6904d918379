"""optaxlab.train.health: divergence by loss and stalls from logged records."""

import math

import pytest

from optaxlab.train import health


def records(losses, grads=None, every=10):
    grads = grads or [1.0] * len(losses)
    return [{"step": every * (i + 1), "loss": l, "grad_norm": g}
            for i, (l, g) in enumerate(zip(losses, grads, strict=True))]


CFG = health.default_config()


def test_a_converging_run_is_healthy():
    assert health.check_records(records([5.5, 4.0, 3.0, 2.5, 2.2]), CFG, steps=50) is None


def test_blown_up_but_finite_loss_is_diverged_at_its_step():
    v = health.check_records(records([5.5, 9.0, 80.0, 1.4e5]), CFG, steps=400)
    assert v.status == health.DIVERGED and v.step == 30
    assert "80 at step 30" in v.reason and "10 x the first logged loss 5.5" in v.reason


def test_dead_model_with_zero_gradients_is_stalled():
    # SGD at lr 1e4: loss ln 256 and gradient exactly 0 from step 10 on.
    v = health.check_records(records([math.log(256)] * 4, [0.0] * 4), CFG, steps=400,
                              log_every=10)
    assert v.status == health.STALLED and v.step == 20 and "since step 1" in v.reason
    # A zero gradient now and then is not a stall: the count restarts.
    assert health.check_records(records([5.0, 4.0, 3.0, 2.0], [0.0, 1.0, 0.0, 1.0]),
                                CFG, steps=400) is None


def test_loss_that_never_improves_is_stalled_after_half_the_run():
    v = health.check_records(records([5.5, 5.6, 5.52, 5.49, 5.5, 5.6]), CFG, steps=60)
    assert v.status == health.STALLED and v.step == 30  # 0.5 x 60
    assert "never below 5.445" in v.reason
    # the same losses judged at step 20 of a 60-step run: too early to say
    assert health.check_records(records([5.5, 5.6]), CFG, steps=60) is None


def test_policy_off_observes_nothing_and_one_verdict_per_run():
    off = health.Checker({**CFG, "policy": "off"}, steps=10)
    assert off.observe(1, 5.0, 1.0) is None and off.observe(2, 1e9, 1.0) is None
    c = health.Checker(CFG, steps=100)
    assert c.observe(1, 5.0, 1.0) is None
    assert c.observe(2, 1e9, 1.0).status == health.DIVERGED
    assert c.observe(3, 1e10, 1.0) is None


def test_state_resumes_the_judgement():
    a = health.Checker(CFG, steps=100)
    a.observe(10, 5.0, 1.0)
    b = health.Checker(CFG, steps=100, start=a.state())
    assert b.observe(20, 60.0, 1.0).status == health.DIVERGED  # 60 > 10 x 5.0 from before


@pytest.mark.parametrize("field,value,match", [
    ("policy", "stop", "valid: off, warn, halt"),
    ("max_loss_ratio", 0.5, "> 1"),
    ("zero_grad_steps", 0, "int >= 1"),
    ("stall_after", 1.5, r"\(0, 1\]"),
    ("stall_margin", -0.1, r"\[0, 1\)"),
])
def test_bad_settings_name_the_field(field, value, match):
    with pytest.raises(ValueError, match=f"health.{field}=.*{match}"):
        health.validate({**CFG, field: value})
