"""Vectorized groups (optaxlab.train.vectorized) against solo runs of the same configs.

Round-off: a member's per-step losses equal its solo run's to ~1e-7 relative, not bitwise,
because (1) the hyperparameters are float32 arrays in the group and Python floats folded into
the solo program (1 - b2 is rounded once in float64 there, computed in float32 here), (2) the
learning rate is f32(peak) * f32(shape(t)) instead of the schedule evaluated with the peak
inside, and (3) XLA compiles the vmapped (batched) matmuls and reductions with other loop
orders and fusions. Each step's difference is an ulp or two; it grows slowly over steps.
"""

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from optaxlab import configs, testing
from optaxlab.train import ConfigError, train
from optaxlab.train import metrics as metrics_lib
from optaxlab.train import vectorized as V
from optaxlab.train import workdir as workdir_lib

ROOT = Path(__file__).resolve().parents[2]
ONE = jax.devices()[:1]
RTOL = 2e-6  # float32 round-off over a few steps (measured: 2.9e-7 on lm_tiny, 10 steps)


def load_config(name):
    return configs.get_config(name)


def _set(c, fields):
    for k, v in fields.items():
        node = c
        *parents, leaf = k.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = v
    return c


def tiny_lm(**fields):
    """tests/train/test_loop.py's few-step lm_tiny."""
    return testing.tiny_lm(**fields)


def losses(records):
    return np.array([r["loss"] for r in records])


def rel_diff(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-30)))


def run_group(configs, root: Path, name: str, **kw):
    workdirs = [root / name / f"m{i}" for i in range(len(configs))]
    return V.train_group(configs, workdirs, root / name / "group", **kw), workdirs


def test_group_matches_solo_runs_a_huge_lr_diverges_alone_and_resume_is_exact(tmp_path):
    configs = [tiny_lm(**{"optimizer.learning_rate": 1e-3, "seed": 0}),
               tiny_lm(**{"optimizer.learning_rate": 3e-3, "seed": 1}),
               tiny_lm(**{"optimizer.learning_rate": 1e30, "seed": 0})]
    res, workdirs = run_group(configs, tmp_path, "full", devices=ONE)
    assert res.statuses == ["finished", "finished", "diverged"]
    assert res.exit_codes == [0, 0, 3]

    # A healthy member equals its solo run, step by step, and writes what a solo run writes (all
    # four members of an lr x seed group against their solo runs: the slow tests below).
    for i in (0,):
        solo = train(configs[i], tmp_path / f"solo{i}", devices=ONE)
        assert [r["step"] for r in res.records[i]] == list(range(1, 11))
        assert rel_diff(losses(solo.records), losses(res.records[i])) < RTOL
        assert rel_diff([r["lr"] for r in solo.records],
                        [r["lr"] for r in res.records[i]]) < 1e-6
        assert set(res.records[i][0]) == set(solo.records[0])
        on_disk = metrics_lib.read_jsonl(workdirs[i] / "metrics.jsonl")
        assert [r["loss"] for r in on_disk] == [r["loss"] for r in res.records[i]]
        status = workdir_lib.read_status(workdirs[i])
        assert (status["status"], status["step"], status["exit_code"]) == ("finished", 10, 0)
        assert status["message"].endswith(
            f"(vectorized: member {i} of 3 in {tmp_path / 'full' / 'group'})")
        ea = EventAccumulator(str(workdirs[i] / "tensorboard"))
        ea.Reload()
        tb = [e.value for e in ea.Scalars("train/loss")]
        np.testing.assert_allclose(tb, losses(res.records[i]), rtol=1e-6)
        assert json.loads((workdirs[i] / V.GROUP_JSON).read_text())["member"] == i
        assert (workdirs[i] / "config.json").exists()
    assert workdir_lib.read_status(workdirs[1])["status"] == "finished"
    assert res.records[1][-1]["loss"] < res.records[1][0]["loss"]

    # The huge learning rate diverges alone: frozen, recorded at its step, the others go on.
    status = workdir_lib.read_status(workdirs[2])
    assert status["status"] == "diverged" and status["exit_code"] == 3
    div = status["diverged_step"]
    assert 1 <= div < 10
    assert [r["step"] for r in metrics_lib.read_jsonl(workdirs[2] / "metrics.jsonl")] == \
        list(range(1, div))
    assert "non-finite" in status["message"]
    assert status["message"].endswith(
        f"(vectorized: member 2 of 3 in {tmp_path / 'full' / 'group'})")
    frozen = V.member_state(res.state, 2)
    assert int(frozen.step) == div - 1
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(frozen.params))

    # Stopped at step 5 (checkpoint), resumed to 10: the same records as the uninterrupted group
    # (the resumed run reuses the compiled program of the first: same signature, same K).
    part, wd2 = run_group(configs, tmp_path, "resumed", devices=ONE, stop_after=5)
    assert part.statuses[:2] == ["finished", "finished"]
    assert (tmp_path / "resumed" / "group" / "checkpoints" / "5").is_dir()
    rest, _ = run_group(configs, tmp_path, "resumed", devices=ONE)
    assert rest.start_step == 5
    assert rest.statuses == res.statuses
    for i in (0, 1):
        whole = metrics_lib.read_jsonl(wd2[i] / "metrics.jsonl")
        assert [r["step"] for r in whole] == list(range(1, 11))
        np.testing.assert_array_equal([r["loss"] for r in whole], losses(res.records[i]))
    assert workdir_lib.read_status(wd2[2])["diverged_step"] == div


def test_members_that_cannot_share_a_program_are_refused_before_anything_is_written(tmp_path):
    a = tiny_lm()
    b = tiny_lm(**{"batch_size": 4})
    with pytest.raises(ConfigError, match="batch_size"):
        run_group([a, b], tmp_path, "g")
    # With the monitor on, b2 is one of its theory constants: not traced, another group.
    with pytest.raises(ConfigError, match="b2"):
        run_group([tiny_lm(**{"monitor.every": 1}),
                   tiny_lm(**{"monitor.every": 1, "optimizer.b2": 0.9})], tmp_path, "g")
    with pytest.raises(ConfigError, match="3 members cannot be split over 2 devices"):
        run_group([a, a, a], tmp_path, "g", devices=jax.devices()[:2])
    assert not (tmp_path / "g").exists()
    # What may differ: seed, peak lr and numeric hparams; None vs a number may not.
    c = tiny_lm(**{"seed": 3, "optimizer.learning_rate": 0.1, "optimizer.b2": 0.9})
    assert V.signature_key(a) == V.signature_key(c)
    assert V.signature_key(a) != V.signature_key(tiny_lm(**{"optimizer.max_norm": None}))


@pytest.mark.slow
def test_lm_tiny_lr_x_seed_group_matches_each_solo_run(tmp_path):
    configs = [tiny_lm(**{"optimizer.learning_rate": lr, "seed": s})
               for lr in (1e-3, 3e-3) for s in (0, 1)]
    res, _ = run_group(configs, tmp_path, "g", devices=ONE)
    diffs = []
    for i, c in enumerate(configs):
        solo = train(c, tmp_path / f"solo{i}", devices=ONE)
        diffs.append(rel_diff(losses(solo.records), losses(res.records[i])))
    print(f"lm_tiny max relative loss difference member vs solo: {max(diffs):.3g}")
    assert max(diffs) < RTOL


def cnn(**fields):
    c = load_config("cnn_digits")
    c.steps, c.batch_size, c.log_every, c.eval_every = 8, 32, 1, 8
    c.checkpoint_every, c.monitor.every, c.progress_bar = 8, 0, False
    c.model.channels, c.model.hidden = (8, 16), 32
    c.data.num_threads = 0
    return _set(c, fields)


@pytest.mark.slow
def test_cnn_lr_x_seed_group_matches_each_solo_run_with_batchnorm_and_eval(tmp_path):
    configs = [cnn(**{"optimizer.learning_rate": lr, "seed": s})
               for lr in (1e-3, 1e-2) for s in (0, 1)]
    res, _ = run_group(configs, tmp_path, "g", devices=ONE)
    diffs = []
    for i, c in enumerate(configs):
        solo = train(c, tmp_path / f"solo{i}", devices=ONE)
        diffs.append(rel_diff(losses(solo.records), losses(res.records[i])))
        assert abs(solo.records[-1]["eval_accuracy"] - res.records[i][-1]["eval_accuracy"]) \
            <= 1 / 300  # one validation example at most
        assert rel_diff([solo.records[-1]["eval_loss"]], [res.records[i][-1]["eval_loss"]]) \
            < 1e-4
    print(f"cnn max relative loss difference member vs solo: {max(diffs):.3g}")
    assert max(diffs) < 1e-5


@pytest.mark.slow
def test_member_axis_sharded_over_8_devices_equals_one_device(tmp_path):
    assert jax.device_count() == 8
    configs = [tiny_lm(**{"optimizer.learning_rate": lr, "seed": s})
               for lr in (1e-3, 2e-3, 3e-3, 5e-3) for s in (0, 1)]
    one, _ = run_group(configs, tmp_path, "one", devices=ONE)
    eight, _ = run_group(configs, tmp_path, "eight", devices=jax.devices())
    spec = jax.tree.leaves(eight.state.params)[0].sharding.spec
    assert spec[0] == V.MEMBER_AXIS
    assert len(jax.tree.leaves(eight.state.params)[0].sharding.device_set) == 8
    for a, b in zip(one.records, eight.records, strict=True):
        assert rel_diff(losses(a), losses(b)) < RTOL


@pytest.mark.slow  # compiles the monitored group step and two monitored solo steps
def test_monitored_members_write_their_solo_runs_histograms_and_overlay(tmp_path):
    fields = {"monitor.every": 2, "monitor.image_steps": (), "steps": 4, "log_every": 4}
    configs = [tiny_lm(**fields, **{"optimizer.learning_rate": lr, "seed": s})
               for lr, s in ((1e-3, 0), (3e-3, 1))]
    res, workdirs = run_group(configs, tmp_path, "g", devices=ONE)
    assert res.statuses == ["finished", "finished"]
    for i, c in enumerate(configs):
        solo = train(c, tmp_path / f"solo{i}", devices=ONE)
        group_recs = metrics_lib.read_jsonl(workdirs[i] / "metrics.jsonl")
        # Records at the monitored steps 2 and 4 (and no others: log_every = 4), same keys.
        assert [r["step"] for r in group_recs] == [r["step"] for r in solo.records] == [2, 4]
        for g, o in zip(group_recs, solo.records, strict=True):
            assert set(g) == set(o)
            assert g["monitor/learning_rate"] == pytest.approx(o["monitor/learning_rate"],
                                                               rel=1e-6)
            assert g["monitor/learning_rate"] == pytest.approx(g["lr"], rel=1e-6)
            monitored = [k for k in o if k.startswith(("update_var/", "theory_tv/"))]
            assert len(monitored) >= 8
            for k in monitored:  # each member divides by its own learning rate
                assert g[k] == pytest.approx(o[k], rel=1e-3, abs=1e-6), k
        accs = []
        for d in (workdirs[i], tmp_path / f"solo{i}"):
            acc = ea.EventAccumulator(str(d / "tensorboard"), size_guidance={ea.HISTOGRAMS: 0})
            acc.Reload()
            accs.append(acc)
        tags = accs[1].Tags()["histograms"]
        assert tags and sorted(accs[0].Tags()["histograms"]) == sorted(tags)
        for tag in tags:
            a, b = (acc.Histograms(tag) for acc in accs)
            assert [e.step for e in a] == [e.step for e in b] == [2, 4]
            for x, y in zip(a, b, strict=True):
                counts = np.asarray(x.histogram_value.bucket), np.asarray(
                    y.histogram_value.bucket)
                assert counts[0].sum() == counts[1].sum()
                # round-off may move a value across a bucket edge, no more
                assert np.abs(counts[0] - counts[1]).sum() <= 0.01 * counts[1].sum() + 2, tag


def test_group_member_blown_up_by_loss_halts_alone(tmp_path):
    """health.policy='halt' in a group: the blown-up (finite) member ends diverged with its
    reason; the healthy one finishes."""
    over = {"health.policy": "halt", "optimizer.max_norm": None}
    configs = [tiny_lm(**{**over, "optimizer.learning_rate": 1e-3}),
               tiny_lm(**{**over, "optimizer.learning_rate": 100.0})]
    res, workdirs = run_group(configs, tmp_path, "health", devices=ONE)
    assert res.statuses == ["finished", "diverged"]
    assert res.exit_codes == [0, 3]
    st = workdir_lib.read_status(workdirs[1])
    assert "max_loss_ratio" in st["message"] and st["diverged_step"] < 10
    assert st["message"].endswith(f"(vectorized: member 1 of 2 in {tmp_path / 'health' / 'group'})")
    assert [r["step"] for r in res.records[0]] == list(range(1, 11))
