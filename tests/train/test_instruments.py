"""config.monitor's noise and sharpness instruments in the trainer (issue 24 §1): their scalars
reach metrics.jsonl and TensorBoard on their steps only; off, the train step is the program it
is without them; bad settings are a ConfigError (exit 2) naming the value."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from optaxlab import testing
from optaxlab.train import ConfigError, errors, train
from optaxlab.train import config as config_lib
from optaxlab.train import loop as loop_lib
from optaxlab.train import mesh as mesh_lib
from optaxlab.train import metrics as metrics_lib
from optaxlab.train import step as step_lib

ONE = jax.devices()[:1]
ON = {"grad_accum_steps": 2, "monitor.noise_every": 2, "monitor.sharpness_every": 5}


def test_noise_and_sharpness_scalars_reach_metrics_and_tensorboard(tmp_path):
    res = train(testing.tiny_lm(**ON), tmp_path, devices=ONE)
    recs = {r["step"]: r for r in metrics_lib.read_jsonl(tmp_path / "metrics.jsonl")}
    names = loop_lib._prepare(testing.tiny_lm(**ON), ONE, None, None).names
    for step, r in recs.items():
        noise = {k for k in r if k.startswith("noise/")}
        sharp = {k for k in r if k.startswith("sharpness/")}
        assert bool(noise) == (step % 2 == 0) and bool(sharp) == (step % 5 == 0), step
        if noise:
            assert {f"noise/{s}/{n}" for n in names for s in ("b_simple", "snr")} <= noise
            # tr(Sigma) >= 0 always (S >= L); the others are positive here: the gradient of
            # an untrained LM is mostly signal at 4 sequences a microbatch.
            for k in ("trace", "g2", "b_simple", "critical_batch", "tail_index"):
                assert math.isfinite(r[f"noise/{k}"]) and r[f"noise/{k}"] > 0, (step, k)
            assert r["noise/b_simple"] == pytest.approx(r["noise/trace"] / r["noise/g2"],
                                                        rel=1e-5)
            assert math.isfinite(r["noise/snr"])
        if sharp:
            assert sharp == {"sharpness/lambda_max", "sharpness/precond_lambda_max",
                             "sharpness/threshold"}
            assert r["sharpness/lambda_max"] > 0 and r["sharpness/precond_lambda_max"] > 0
            # lm_tiny's adam: b1 = 0.9, so the threshold is 38 / lr at the step's lr
            assert r["sharpness/threshold"] == pytest.approx(38.0 / r["lr"], rel=1e-5)
    assert res.records[1]["noise/critical_batch"] == pytest.approx(
        res.records[1]["noise/b_simple"], rel=1e-5)  # the first EMA is the step's own ratio

    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    for tag, steps in (("noise/b_simple", [2, 4, 6, 8, 10]), ("noise/critical_batch", None),
                       (f"noise/tail_index/{names[0]}", None),
                       ("sharpness/precond_lambda_max", [5, 10]),
                       ("sharpness/threshold", [5, 10])):
        assert tag in tags
        events = acc.Scalars(tag)
        if steps is not None:
            assert [e.step for e in events] == steps
        for e in events:
            assert e.value == pytest.approx(recs[e.step][tag], rel=1e-6)


def test_sharpness_without_a_second_moment_is_lambda_max_only(tmp_path):
    c = testing.tiny_lm(steps=4, **{"monitor.sharpness_every": 2})
    c.optimizer = config_lib.switch_optimizer(c.optimizer, "sgd")
    train(c, tmp_path, devices=ONE)
    recs = metrics_lib.read_jsonl(tmp_path / "metrics.jsonl")
    sharp = [{k: v for k, v in r.items() if k.startswith("sharpness/")} for r in recs]
    assert [list(s) for s in sharp] == [[], ["sharpness/lambda_max"]] * 2
    assert all(s["sharpness/lambda_max"] > 0 for s in sharp[1::2])


def _lowered(setup, fn):
    state = jax.eval_shape(setup.init_fn)
    batch = mesh_lib.global_batch(next(iter(setup.train_ds)), setup.mesh,
                                  setup.config.batch_size)
    return fn.lower(state, batch).as_text()


def test_off_the_train_step_is_the_same_program():
    """With the instruments on, the plain train step (run on every other step) lowers to the
    same text as with them off; only the separate noise step carries the fold."""
    off = loop_lib._prepare(testing.tiny_lm(grad_accum_steps=2), ONE, None, None)
    on = loop_lib._prepare(testing.tiny_lm(**ON), ONE, None, None)
    assert off.noise_step is None and off.sharpness is None
    plain = _lowered(off, off.train_step)
    assert _lowered(on, on.train_step) == plain
    assert _lowered(on, on.noise_step) != plain
    assert "top_k" in _lowered(on, on.noise_step) and "top_k" not in plain  # the tail index


@pytest.mark.parametrize("fields, match", [
    ({"monitor.noise_every": 5}, r"monitor.noise_every: 5 needs grad_accum_steps >= 2 .*"
                                 r"got grad_accum_steps=1"),
    ({"monitor.noise_every": -1, "grad_accum_steps": 2}, r"monitor.noise_every=-1: must be "
                                                         r"an int >= 0 \(0 = off\)"),
    ({"monitor.sharpness_every": -3}, r"monitor.sharpness_every=-3: must be an int >= 0"),
    ({"monitor.sharpness_iters": 1}, r"monitor.sharpness_iters=1: must be an int >= 2"),
])
def test_bad_settings_are_config_errors(tmp_path, fields, match):
    with pytest.raises(ConfigError, match=match) as e:
        train(testing.tiny_lm(**fields), tmp_path / "w", devices=ONE)
    assert errors.exit_code(e.value) == 2
    assert not (tmp_path / "w").exists()


def test_noise_fold_matches_the_closed_forms():
    """noise_fold over k = 4 microbatch gradients of two leaves against numpy: B_simple (per
    leaf and global), the pooled SNR and the per-leaf Hill tail index."""
    rng = np.random.default_rng(0)
    k, b = 4, 3
    grads = [{"a": rng.normal(1.0, 0.5, (8, 8)).astype(np.float32),
              "b": rng.normal(0.0, 2.0, (5,)).astype(np.float32)} for _ in range(k)]
    fold = step_lib.noise_fold(["a", "b"], b)
    carry = fold.init(grads[0])
    for g in grads:
        carry = fold.update(carry, g)
    mean = jax.tree.map(lambda *g: jnp.mean(jnp.stack(g), 0), *grads)
    out = fold.finish(carry, mean)

    def est(leaves):
        g = np.stack([np.concatenate([x[n].ravel() for n in leaves]) for x in grads])
        g = g.astype(np.float64)
        gbar = g.mean(0)
        S, L = (g ** 2).sum(1).mean(), (gbar ** 2).sum()
        g2, trace = (k * L - S) / (k - 1), b * k * (S - L) / (k - 1)
        var = g.var(0, ddof=1)
        return trace / g2, ((gbar ** 2 - var / k).sum() / var.sum()), g, gbar

    for name in ("a", "b"):
        assert float(out[f"noise/b_simple/{name}"]) == pytest.approx(est([name])[0], rel=1e-4)
    bs, snr, g, gbar = est(["a", "b"])
    assert float(out["noise/b_simple"]) == pytest.approx(bs, rel=1e-4)
    assert float(out["noise/snr"]) == pytest.approx(snr, rel=1e-4)
    dev = np.sort(np.abs(g[0, :64] - gbar[:64]))[::-1]  # leaf a: 64 coordinates, k_hill = 8
    hill = 1.0 / np.mean(np.log(dev[:8] / dev[8]))
    assert float(out["noise/tail_index/a"]) == pytest.approx(hill, rel=1e-4)
    assert "noise/tail_index/b" not in out  # 5 coordinates: too few for Hill
    assert float(out["noise/tail_index"]) == pytest.approx(hill, rel=1e-4)  # median of one


def test_a_vectorized_group_refuses_the_instruments(tmp_path):
    from optaxlab.train import vectorized

    c = testing.tiny_lm(**{"monitor.sharpness_every": 3})
    with pytest.raises(ConfigError, match=r"monitor.sharpness_every=3: .* solo runs only"):
        vectorized.train_group([c, c], [tmp_path / "a", tmp_path / "b"], tmp_path / "g",
                               devices=ONE)
    assert not any(tmp_path.iterdir())


def test_sharded_equals_unsharded(tmp_path):
    # The same run on one device and on 8 (fsdp over all: parameters, optimizer state and the
    # batch split 8 ways; 2 sequences per device, 1 per microbatch): the instruments' scalars
    # agree to float32 reduction-order round-off.
    cfg = {**ON, "batch_size": 16, "steps": 10}
    runs = {}
    for name, devices in (("one", ONE), ("eight", jax.devices()[:8])):
        assert len(devices) == (1 if name == "one" else 8)
        train(testing.tiny_lm(**cfg), tmp_path / name, devices=devices)
        runs[name] = {r["step"]: r for r in metrics_lib.read_jsonl(tmp_path / name /
                                                                   "metrics.jsonl")}
    assert runs["one"].keys() == runs["eight"].keys()
    checked = 0
    for step, r in runs["one"].items():
        s = runs["eight"][step]
        keys = [k for k in r if k.startswith(("noise/", "sharpness/"))]
        assert keys == [k for k in s if k.startswith(("noise/", "sharpness/"))]
        for k in keys:
            # (measured: at most 3e-5 relative, per-layer B_simple; 1e-7 for the loss)
            assert s[k] == pytest.approx(r[k], rel=1e-4, abs=1e-6), (step, k)
            checked += 1
    assert checked > 20
