"""A budgeted quasi-random search of two optimizers end to end: it runs vectorized, is killed
(SIGKILL of the driver), resumes, then extends from 8 to 16 trials per optimizer reusing the
first 8; results.csv carries each point's time to target and its own cost, summary.md compares
the optimizers at equal tuning budgets."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from optaxlab.sweep import outcome
from optaxlab.sweep.report import read_csv
from optaxlab.train import metrics as metrics_lib

ROOT = Path(__file__).resolve().parents[2]


def search_file(path: Path, trials: int, tiny: dict) -> Path:
    path.write_text(
        "from optaxlab.sweep import log, quasirandom, sweep\n\n"
        f"TINY = {tiny!r}\n"
        f"CONFIG = {str(ROOT / 'optaxlab' / 'configs' / 'lm_tiny.py')!r}\n"
        "SPACE = {'optimizer.learning_rate': log(3e-4, 3e-2)}\n\n\n"
        "def get_sweep():\n"
        "    return sweep(config=CONFIG, overrides=TINY, name='search', target={'loss': 5.3},\n"
        f"                 points=quasirandom(SPACE, {trials}, fixed={{'optimizer.name': "
        "'adam'})\n"
        f"                 + quasirandom(SPACE, {trials}, fixed={{'optimizer.name': "
        "'signum'}))\n")
    return path


def test_quasirandom_search_killed_resumed_and_extended(sweep_env, sweep_cli, tiny, tmp_path):
    cfg = {**tiny, "steps": 30, "eval_every": 0}
    out = tmp_path / "S"
    first = search_file(tmp_path / "search.py", 8, cfg)
    log = open(tmp_path / "first.txt", "w")  # noqa: SIM115
    driver = subprocess.Popen([sys.executable, "-m", "optaxlab.sweep", str(first), "--workdir",
                               str(out), "--workers", "2"], cwd=ROOT, env=sweep_env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:  # SIGKILL once a group has a checkpoint (the groups then stop with the driver)
        from tests.sweep.test_driver import wait_for

        wait_for(lambda: any((out / "groups").glob("*/checkpoints/10")), "a group checkpoint",
                 proc=driver)
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=60)
    finally:
        driver.kill()
        log.close()
    resumed = sweep_cli(first, "--workdir", out, "--workers", "2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = read_csv(out / "results.csv")
    assert len(rows) == 16 and {r["status"] for r in rows} == {"finished"}
    before = {r["name"]: (out / r["workdir"] / outcome.METRICS).read_bytes() for r in rows}

    extended = sweep_cli(search_file(tmp_path / "search.py", 16, cfg), "--workdir", out,
                         "--workers", "2")
    assert extended.returncode == 0, extended.stderr[-3000:]
    assert "to run: 16 (16 pending); skipping 16 done (16 finished)" in extended.stderr
    rows = read_csv(out / "results.csv")
    assert len(rows) == 32 and {r["status"] for r in rows} == {"finished"}
    for name, data in before.items():  # the first 8 trials of each optimizer are reused as is
        assert (out / "points" / name / outcome.METRICS).read_bytes() == data
    assert {r["group"] for r in rows} == {"optimizer=adam", "optimizer=signum"}
    for r in rows:  # each point's own cost: its group's measured time over its members
        k = int(r["members"])
        measured, apportioned = r["cost_s_measured"], r["cost_s_apportioned"]
        assert k >= 1 and (measured == "") == (k > 1) and (apportioned == "") == (k == 1)
        assert float(measured or apportioned) == pytest.approx(float(r["train_s"]) / k, abs=1e-3)
        recs = metrics_lib.read_jsonl(out / r["workdir"] / outcome.METRICS)
        reached = [x["step"] for x in recs if x["loss"] <= 5.3]
        assert r["target_step"] == (str(reached[0]) if reached else "")
        if reached:
            step = reached[0]
            assert int(r["target_tokens"]) == step * cfg["batch_size"] * cfg["seq_len"]
            spent = float(r["target_s_measured"] or r["target_s_apportioned"])
            assert 0 < spent <= float(measured or apportioned) + 1e-9
            assert (r["target_s_apportioned"] == "") == (k == 1)
    assert any(r["target_step"] for r in rows)
    summary = (out / "summary.md").read_text()
    # eval_every=0 in the overrides: points are ranked by their final train loss
    assert "metric: `final_train_loss`" in summary and "diverged (" not in summary
    best = {g: min(float(r["final_train_loss"]) for r in rows if r["group"] == g)
            for g in ("optimizer=adam", "optimizer=signum")}
    leader = min(best, key=best.get)
    assert f"| 1 | {leader} |" in summary and f"{best[leader]:.4g}" in summary
    assert "## Equal tuning budgets" in summary and "| best of 16 |" in summary
    assert "With 16 trials each, optimizer=" in summary
    assert "## Time to target" in summary and "Target: loss <= 5.3" in summary


def test_blown_up_and_dead_points_are_results_not_numbers(write_sweep, sweep_cli, tiny,
                                                          tmp_path):
    # Sweeps run with health.policy=halt: Adam at lr 100 without clipping blows the loss up to
    # more than 10x its first value (finite: the non-finite check never fires), SGD at lr 1e-9
    # does not learn. Both run vectorized with a healthy point, and end as results with reasons.
    path = write_sweep("""sweep(config=CONFIG, overrides={**TINY, "steps": 20, "eval_every": 0},
        points=[{"optimizer.name": "adam", "optimizer.learning_rate": 100.0,
                 "optimizer.max_norm": None},
                {"optimizer.name": "adam", "optimizer.learning_rate": 3e-3,
                 "optimizer.max_norm": None},
                {"optimizer.name": "sgd", "optimizer.learning_rate": 1e-9}])""")
    out = tmp_path / "H"
    proc = sweep_cli(path, "--workdir", out)
    assert proc.returncode == 0, proc.stderr[-3000:]  # diverged and stalled are results
    rows = {r["name"]: r for r in read_csv(out / "results.csv")}
    blown = rows["optimizer=adam,lr=100,max_norm=None"]
    assert blown["status"] == "diverged" and "max_loss_ratio 10" in blown["message"]
    assert int(blown["diverged_step"]) < 20 and blown["exit_code"] == "3"
    assert rows["optimizer=adam,lr=0.003,max_norm=None"]["status"] == "finished"
    dead = rows["optimizer=sgd,lr=1e-09"]  # (sgd has no max_norm: not in its name)
    assert dead["status"] == "stalled" and "never below" in dead["message"]
    assert dead["exit_code"] == "6" and int(dead["diverged_step"]) == 10
    summary = (out / "summary.md").read_text()
    assert "health.policy=halt" in summary
    assert "| 1 | optimizer=adam | lr=0.003 |" in summary  # the blown-up point is not ranked
    assert "| 2 | optimizer=sgd | lr=1e-09 | stalled (1/1 seeds) |" in summary
    assert "| 100 | diverged (1/1 seeds) | 1 | step " in summary
    assert "| 1e-09 | stalled (1/1 seeds) **(best)** | 1 | step 10 (stalled) |" in summary
