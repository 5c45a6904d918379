"""Vectorized sweeps: the runner groups points, a group process writes every member's ordinary
workdir files, the report reads them as solo points, and a SIGKILLed group resumes from its
group checkpoint to the same numbers as an uninterrupted one."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from optaxlab.sweep import outcome, resolve
from optaxlab.sweep import runner as runner_lib
from optaxlab.sweep.report import TIMING_COLUMNS, read_csv
from optaxlab.sweep.spec import load_sweep_file
from optaxlab.train import metrics as metrics_lib
from optaxlab.train import vectorized

ROOT = Path(__file__).resolve().parents[2]
GRID = """sweep(config=CONFIG, overrides=TINY, name="vec", points=product(
        {"optimizer.learning_rate": [1e-3, 3e-3], "seed": [0, 1]})
        + [{"optimizer.learning_rate": 1e30, "seed": 0}])"""


def test_runner_groups_by_signature_caps_members_and_keeps_others_solo(write_sweep, tmp_path):
    body = GRID[:-1] + """ + [{"optimizer.learning_rate": 1e-3, "seed": 2, "optimizer.b1": 0.8},
           {"optimizer.learning_rate": 1e-3, "seed": 3, "optimizer.max_norm": None}])"""
    path = write_sweep(body)
    plan = resolve(load_sweep_file(path), path)
    runner = runner_lib.GroupRunner(plan, tmp_path, max_members=2)
    keys = {p.name: runner.group_key(p) for p in plan.points}
    clip_off = [p for p in plan.points if p.values["optimizer.max_norm"] is None]
    grid = [p for p in plan.points if p not in clip_off]
    assert len(grid) == 6 and len(clip_off) == 1
    assert len({keys[p.name] for p in grid}) == 1  # lr, seed, b1 differ: one program
    assert keys[clip_off[0].name][0] == "vectorized"
    assert keys[clip_off[0].name] != keys[grid[0].name]  # no clipping: another chain
    assert [len(c) for c in runner.split(grid, workers=1)] == [2, 2, 2]  # --max-members 2
    auto = runner_lib.GroupRunner(plan, tmp_path)
    assert [len(c) for c in auto.split(grid, workers=2)] == [3, 3]  # a group per worker
    assert "6 point(s) vectorized in one program" in auto.describe(grid)
    # Monitored points group too; b1, b2, eps are then the monitor's theory constants, so a
    # different b1 is another group.
    mon_path = write_sweep("""sweep(config=CONFIG, overrides={**TINY, "monitor.every": 5},
        points=[{"optimizer.learning_rate": lr, "optimizer.b1": b1}
                for lr in (1e-3, 3e-3) for b1 in (0.9, 0.8)])""", "monitored.py")
    mon_plan = resolve(load_sweep_file(mon_path), mon_path)
    mon = runner_lib.GroupRunner(mon_plan, tmp_path / "mon")
    mon_keys = [mon.group_key(p) for p in mon_plan.points]
    assert all(k[0] == "vectorized" for k in mon_keys)
    assert mon_keys[0] == mon_keys[2] != mon_keys[1] == mon_keys[3]  # by b1, not by lr
    # A point with a solo checkpoint to resume stays solo (its trainer resumes it).
    (grid[0].workdir(tmp_path) / "checkpoints" / "10").mkdir(parents=True)
    fresh = runner_lib.GroupRunner(plan, tmp_path)
    assert fresh.group_key(grid[0]) == ("solo", grid[0].index)
    assert "solo checkpoint" in fresh.describe([grid[0]])
    # A point whose workdir a live trainer holds runs alone (its own trainer reports exit 5,
    # "running elsewhere", for it only); once that process is gone, its stale lock does not
    # keep it out of the group.
    held = grid[1].workdir(tmp_path)
    held.mkdir(parents=True)
    holder = subprocess.Popen(["sleep", "600"])
    try:
        (held / ".lock").write_text(json.dumps(
            {"host": os.uname().nodename, "pid": holder.pid, "start": "earlier"}))
        locked = runner_lib.GroupRunner(plan, tmp_path)
        assert locked.group_key(grid[1]) == ("solo", grid[1].index)
        assert f"locked by another trainer process (pid {holder.pid}" in locked.describe(
            [grid[1]])
        assert locked.group_key(grid[2]) == keys[grid[2].name]
    finally:
        holder.kill()
        holder.wait()
    assert runner_lib.GroupRunner(plan, tmp_path).group_key(grid[1]) == keys[grid[1].name]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def wait_for(condition, what: str, timeout: float = 300.0, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process exited ({proc.returncode}) before {what}")
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def comparable(path, root):
    return {r["name"]: {k: v.replace(str(root), "DIR") for k, v in r.items()
                        if k not in TIMING_COLUMNS} for r in read_csv(path)}


def assert_same_sweep(a: Path, b: Path) -> None:
    """The sweeps in a and b have the same results.csv and every point the same losses."""
    assert comparable(a / "results.csv", a) == comparable(b / "results.csv", b)
    for p in (a / "points").iterdir():
        ra = metrics_lib.read_jsonl(p / "metrics.jsonl")
        rb = metrics_lib.read_jsonl(b / "points" / p.name / "metrics.jsonl")
        assert [x["loss"] for x in ra] == [x["loss"] for x in rb], p.name


@pytest.mark.slow
def test_vectorized_sweep_matches_solo_sweep_and_a_killed_group_resumes_exactly(
        write_sweep, sweep_env, sweep_cli, tmp_path):
    sweep_file = write_sweep(GRID)
    a, b, solo = tmp_path / "A", tmp_path / "B", tmp_path / "solo"

    # A: uninterrupted, vectorized by default: one group of 5; the huge lr diverges alone.
    r = sweep_cli(sweep_file, "--workdir", a)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "5 point(s) vectorized in one program" in r.stderr
    rows = {row["name"]: row for row in read_csv(a / "results.csv")}
    assert rows["lr=1e+30,seed=0"]["status"] == "diverged"
    assert {rows[n]["status"] for n in rows if "1e+30" not in n} == {"finished"}
    codes = {p.name: outcome.read_exit_code(p) for p in (a / "points").iterdir()}
    assert codes == {**{n: 0 for n in rows if "1e+30" not in n}, "lr=1e+30,seed=0": 3}

    # The same sweep, one trainer process per point: the report reads the same outcomes, and
    # the final losses agree to float32 round-off.
    r = sweep_cli(sweep_file, "--workdir", solo, "--no-vectorize")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "vectorized in one program" not in r.stderr
    solo_rows = {row["name"]: row for row in read_csv(solo / "results.csv")}
    for name, row in rows.items():
        assert solo_rows[name]["status"] == row["status"]
        assert solo_rows[name]["diverged_step"] == row["diverged_step"]
        if row["status"] == "finished":
            x, y = float(row["final_eval_loss"]), float(solo_rows[name]["final_eval_loss"])
            assert abs(x - y) <= 1e-4 * abs(y), (name, x, y)

    # B: SIGKILL the group process after its first checkpoint; the sweep records the members
    # as killed; a rerun resumes the group from its checkpoint; the results equal A's.
    proc = subprocess.Popen([sys.executable, "-m", "optaxlab.sweep", str(sweep_file),
                             "--workdir", str(b)], cwd=ROOT, env=sweep_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    groups = b / "groups"
    ckpt = wait_for(lambda: next((g / "checkpoints" / "10" for g in groups.glob("group-*")
                                  if (g / "checkpoints" / "10").is_dir()), None),
                    "the group checkpoint at step 10", proc=proc)
    group_dir = ckpt.parents[1]
    pid = outcome.lock_info(next((b / "points").iterdir())).get("pid")
    assert pid and alive(pid)
    os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 3, err[-3000:]
    assert "killed by SIGKILL" in (b / "summary.md").read_text()
    r = sweep_cli(sweep_file, "--workdir", b)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from the checkpoint" in (group_dir / "train.log").read_text()
    assert_same_sweep(a, b)
    member = json.loads((b / "points" / "lr=0.001,seed=0" / vectorized.GROUP_JSON).read_text())
    assert member["group_dir"] == str(group_dir)

    # C: the sweep is stopped (SIGTERM, as a preemption: the group checkpoints and stops) after
    # the huge lr diverged. The rerun resumes the same group with the diverged member frozen in
    # it (without it the other four would form a new group and start again from step 0).
    c = tmp_path / "C"
    proc = subprocess.Popen([sys.executable, "-m", "optaxlab.sweep", str(sweep_file),
                             "--workdir", str(c)], cwd=ROOT, env=sweep_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: any((g / "checkpoints" / "10").is_dir() for g in (c / "groups").glob("*")),
             "the group checkpoint at step 10", proc=proc)
    pid = outcome.lock_info(next((c / "points").iterdir())).get("pid")
    os.kill(pid, signal.SIGSTOP)  # so that it cannot finish before the SIGTERM arrives
    proc.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    os.kill(pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    states = {q.name: outcome.point_state(q, 60).status for q in (c / "points").iterdir()}
    assert states.pop("lr=1e+30,seed=0") == outcome.DIVERGED
    assert set(states.values()) == {outcome.INTERRUPTED}, states
    diverged_log = (c / "points" / "lr=1e+30,seed=0" / "train.log").read_text()
    r = sweep_cli(sweep_file, "--workdir", c)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "diverged lr=1e+30,seed=0 frozen in it" in r.stderr, r.stderr[-3000:]
    (group_dir,) = (c / "groups").iterdir()
    assert "resumed from the checkpoint at step" in (group_dir / "train.log").read_text()
    assert_same_sweep(a, c)
    assert not list((c / "points").glob(f"*/{metrics_lib.SUPERSEDED}"))  # nothing restarted
    frozen = c / "points" / "lr=1e+30,seed=0"
    assert (frozen / "train.log").read_text() == diverged_log  # not run again
    assert len(outcome.read_outcome(frozen)["attempts"]) == 1


def test_a_point_with_a_solo_only_instrument_runs_solo(write_sweep, tmp_path):
    # The noise / sharpness instruments run in solo runs only: the runner keeps such a point out
    # of the groups (its group would refuse it: every member exit 2), with the reason.
    path = write_sweep("""sweep(config=CONFIG, overrides=TINY, points=[
        {"optimizer.learning_rate": 1e-3}, {"optimizer.learning_rate": 3e-3},
        {"optimizer.learning_rate": 1e-3, "monitor.sharpness_every": 5}])""")
    plan = resolve(load_sweep_file(path), path)
    from optaxlab.sweep.spec import check_points

    configs = check_points(plan, num_devices=1)
    runner = runner_lib.GroupRunner(plan, tmp_path, configs=configs)
    keys = [runner.group_key(p) for p in plan.points]
    assert keys[0] == keys[1] and keys[0][0] == "vectorized"
    assert keys[2] == ("solo", 2)
    assert "monitor.sharpness_every=5: the noise and sharpness instruments run in solo runs " \
        "only" in runner.describe([plan.points[2]])
