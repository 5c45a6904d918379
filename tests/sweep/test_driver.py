"""`python -m optaxlab.sweep` end to end: real trainer subprocesses, real signals, real files.

One scenario per test, each combining what can share the same runs (every trainer process costs
a JAX import and compiles; the compilation cache is shared, see conftest.py)."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from optaxlab.sweep import outcome
from optaxlab.sweep.report import TIMING_COLUMNS, read_csv

ROOT = Path(__file__).resolve().parents[2]
STEPS = 60  # TINY["steps"] of conftest.py


@pytest.fixture(autouse=True)
def _steps(tiny):
    assert tiny["steps"] == STEPS
# A 4-point grid (2 learning rates x 2 seeds) and a point whose lr is huge (diverges at step 2);
# a point with an invalid config stops the sweep before anything runs (test_invalid_values_*).
# The sweeps run --no-vectorize: this file tests the process-per-point runner
# (tests/sweep/test_vectorized_sweep.py the groups).
GRID = """sweep(config=CONFIG, overrides=TINY, name="e2e", points=product(
        {"optimizer.learning_rate": [1e-3, 3e-3], "seed": [0, 1]})
        + [{"optimizer.learning_rate": 1e30, "seed": 0}])"""
KILLED = "lr=0.001,seed=0"


def wait_for(condition, what: str, timeout: float = 300.0, every: float = 0.01, proc=None):
    """Poll `condition` until it is true (its value), failing when `proc` exits first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process exited ({proc.returncode}) before {what}")
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie waiting to be reaped has exited


def steps_logged(workdir: Path) -> int:
    try:
        return len((workdir / "metrics.jsonl").read_text().splitlines())
    except FileNotFoundError:
        return 0


def trainer_pid(workdir: Path) -> int | None:
    return outcome.lock_info(workdir).get("pid") if outcome.is_locked(workdir) else None


def records(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def comparable(path: Path, root: Path) -> dict[str, dict]:
    """results.csv rows without the timing columns, paths of the sweep folder replaced."""
    return {r["name"]: {k: v.replace(str(root), "DIR") for k, v in r.items()
                        if k not in TIMING_COLUMNS} for r in read_csv(path)}


def test_sweep_survives_kills_records_outcomes_and_matches_print_commands(
        write_sweep, sweep_env, sweep_cli, tmp_path):
    sweep_file = write_sweep(GRID)
    a = tmp_path / "A"
    points = a / "points"
    log = open(tmp_path / "first_run.txt", "w")  # noqa: SIM115
    driver = subprocess.Popen([sys.executable, "-m", "optaxlab.sweep", str(sweep_file),
                               "--workdir", str(a), "--workers", "2", "--no-vectorize"], cwd=ROOT,
                              env=sweep_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        # kill -9 of a worker: point 0 is frozen after its first checkpoint, then killed.
        wd = points / KILLED
        pid = wait_for(lambda: (wd / "checkpoints" / "10").is_dir() and trainer_pid(wd),
                       "point 0's first checkpoint", proc=driver)
        os.kill(pid, signal.SIGSTOP)
        at_kill = steps_logged(wd)
        assert at_kill < STEPS, "point 0 finished before it could be killed mid-run"
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: outcome.read_outcome(wd).get("status") == "failed",
                 "the sweep to record the killed point", proc=driver)
        # kill -9 of the driver while another point trains: its trainer must not outlive it.
        other = wait_for(lambda: next((p for p in points.iterdir() if p.name != KILLED
                                       and trainer_pid(p) and steps_logged(p) >= 1), None),
                         "a second point to train", proc=driver)
        orphan = trainer_pid(other)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=60)
        wait_for(lambda: not alive(orphan), "the trainer of a killed sweep to stop", 60, 0.1)
    finally:
        driver.kill()
        log.close()
    first = (tmp_path / "first_run.txt").read_text()
    assert f"failed {KILLED}: exit 137: killed by SIGKILL" in first, first[-3000:]

    # The rerun resumes what was interrupted, runs what was not started, skips nothing done.
    other_done = outcome.point_state(other, STEPS).status == outcome.FINISHED
    rerun = sweep_cli(sweep_file, "--workdir", a, "--workers", 2, "--no-vectorize")
    assert rerun.returncode == 0, rerun.stderr[-3000:]  # every point finished or diverged
    assert f"resume {KILLED}" in rerun.stderr
    # (the other point may have reached its last step between the check above and the kill)
    assert other_done or f"resume {other.name}" in rerun.stderr \
        or f"start  {other.name}" in rerun.stderr, rerun.stderr[-3000:]
    rows = {r["name"]: r for r in read_csv(a / "results.csv")}
    assert {n: r["status"] for n, r in rows.items()} == {
        "lr=0.001,seed=0": "finished", "lr=0.001,seed=1": "finished",
        "lr=0.003,seed=0": "finished", "lr=0.003,seed=1": "finished",
        "lr=1e+30,seed=0": "diverged"}
    assert rows["lr=1e+30,seed=0"]["diverged_step"] == "2"
    assert rows["lr=1e+30,seed=0"]["exit_code"] == "3"
    for name, row in rows.items():  # every number in results.csv is the point's metrics.jsonl
        if row["status"] != "finished":
            continue
        recs = records(points / name)
        assert [r["step"] for r in recs] == list(range(1, STEPS + 1))
        assert float(row["final_train_loss"]) == recs[-1]["loss"]
        assert float(row["best_train_loss"]) == min(r["loss"] for r in recs)
        assert float(row["final_eval_loss"]) == recs[-1]["eval_loss"]
        assert float(row["final_eval_perplexity"]) == recs[-1]["eval_perplexity"]
        assert row["step"] == row["steps"] == str(STEPS)
    killed = outcome.read_outcome(points / KILLED)
    assert [(x["exit_code"], x["status"]) for x in killed["attempts"]] == [
        (137, "failed"), (0, "finished")]
    killed_log = (points / KILLED / "train.log").read_text()
    resumed_at = int(killed_log.split("resumed from the checkpoint at step ")[1].split()[0])
    assert 10 <= resumed_at < at_kill
    summary = (a / "summary.md").read_text()
    row = r"\| 1e\+30 \| diverged \(1/1 seeds\) \| 1 \| step 2 \|"
    assert re.search(row, summary), summary
    assert "Warning" not in summary  # best lr 0.003 lies below the diverged 1e30
    assert (a / "plots" / "lr_tuning.png").stat().st_size > 10_000

    # A second rerun has nothing to do, and says so.
    logs = {p: p.stat().st_mtime_ns for p in points.glob("*/train.log")}
    again = sweep_cli(sweep_file, "--workdir", a, "--workers", 2, "--no-vectorize")
    assert again.returncode == 0
    assert "nothing to run: all 5 selected point(s) are done (4 finished, 1 diverged)" \
        in again.stderr
    assert {p: p.stat().st_mtime_ns for p in points.glob("*/train.log")} == logs

    # --print-commands, run by hand, then the report: the same results (and the killed point
    # ended exactly where an uninterrupted run ends).
    b = tmp_path / "B"
    printed = sweep_cli(sweep_file, "--workdir", b, "--print-commands")
    assert printed.returncode == 0, printed.stderr
    commands = printed.stdout.strip().splitlines()
    assert len(commands) == 5
    assert all(" -m optaxlab.train --config " in c for c in commands)
    procs = []
    for cmd in commands:  # two at a time
        if len(procs) == 2:
            procs.pop(0).wait(timeout=600)
        procs.append(subprocess.Popen(["bash", "-c", cmd], cwd=ROOT, env=sweep_env))
    for p in procs:
        p.wait(timeout=600)
    report = sweep_cli(b, module="optaxlab.sweep.report")
    assert report.returncode == 0, report.stderr
    ca, cb = comparable(a / "results.csv", a), comparable(b / "results.csv", b)
    assert cb == ca, {n: {k: (v, cb.get(n, {}).get(k)) for k, v in row.items()
                          if cb.get(n, {}).get(k) != v} for n, row in ca.items()}
    for name, row in rows.items():
        if row["status"] == "finished":
            ra, rb = records(points / name), records(b / "points" / name)
            assert [r["loss"] for r in ra] == [r["loss"] for r in rb], name
            assert ra[-1]["eval_loss"] == rb[-1]["eval_loss"], name


def test_bad_field_exits_2_and_dry_run_writes_nothing(write_sweep, sweep_cli, tmp_path):
    bad = write_sweep('sweep(config=CONFIG, points=[{"optimizer.lr": 1e-3}])', "bad.py")
    proc = sweep_cli(bad, "--workdir", tmp_path / "bad")
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()
    assert len(line) == 1 and line[0].startswith(
        "error: sweep field 'optimizer.lr' (point lr=0.001): 'lr' is not a field of "
        "config.optimizer; valid: b1, b2, "), proc.stderr
    assert not (tmp_path / "bad").exists()
    good = write_sweep(GRID)
    proc = sweep_cli(good, "--workdir", tmp_path / "dry", "--dry-run", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert "would run 5 point(s), skip 0; nothing written" in proc.stdout
    assert "[  4] run    pending     lr=1e+30,seed=0" in proc.stdout
    assert not (tmp_path / "dry").exists()
    proc = sweep_cli(good, "--workdir", tmp_path / "dry", "--only", "beta=0.9")
    assert proc.returncode == 2 and "unknown field 'beta'" in proc.stderr


def test_invalid_values_exit_2_before_any_point_starts(write_sweep, sweep_cli, tmp_path):
    # Field names are right; values are not: an optimizer hparam out of range, a mesh that needs
    # more devices than there are, a mesh axis the devices cannot hold (printed commands: a
    # batch it cannot split). One line per bad point, exit 2,
    # and nothing is written (no sweep folder, no point folder, no log).
    bad = write_sweep("""sweep(config=CONFIG, overrides=TINY, points=product(
        {"optimizer.name": ["adam"], "optimizer.b2": [0.99, 1.5]})
        + [{"optimizer.name": "adam", "mesh.data": 2},
           {"optimizer.name": "adam", "mesh.fsdp": 3}])""", "values.py")
    out = tmp_path / "values"
    for extra in ((), ("--dry-run",), ("--no-vectorize",)):
        proc = sweep_cli(bad, "--workdir", out, *extra)
        assert proc.returncode == 2, proc.stderr[-3000:]
        lines = proc.stderr.strip().splitlines()
        assert lines[0] == ("error: 3 of 4 point(s) have an invalid config on 1 device(s); "
                            "nothing ran:"), proc.stderr
        assert lines[1:] == [
            "  optimizer=adam,b2=1.5: config.optimizer.b2=1.5: must be in [0, 1)",
            "  optimizer=adam,data=2: config.mesh: data=2 fsdp=1 tensor=1 needs 2 devices but 1 "
            "are available; valid shapes multiply to 1 (e.g. --config.mesh.data=-1)",
            "  optimizer=adam,fsdp=3: config.mesh: {'data': -1, 'fsdp': 3, 'tensor': 1} "
            "cannot be laid out on 1 devices: the fixed axes (3) must divide 1"]
        assert not out.exists()
    # Printed commands run elsewhere: each mesh is checked for itself, the values still are.
    proc = sweep_cli(bad, "--workdir", out, "--print-commands")
    assert proc.returncode == 2, proc.stderr
    assert "2 of 4 point(s) have an invalid config; nothing ran" in proc.stderr
    assert "b2=1.5" in proc.stderr and "batch_size: 8 is not divisible" in proc.stderr
    assert not out.exists()
    # --only the valid point runs only it.
    proc = sweep_cli(bad, "--workdir", out, "--only", "b2=0.99", "--dry-run")
    assert proc.returncode == 0, proc.stderr


def test_slurm_array_task_runs_its_point_and_survives_preemption(write_sweep, sweep_env,
                                                                 sweep_cli, tmp_path):
    sweep_file = write_sweep("sweep(config=CONFIG, overrides=TINY, points=product("
                             "{'optimizer.learning_rate': [1e-3], 'seed': [0, 1, 2]}))")
    c = tmp_path / "C"
    made = sweep_cli(sweep_file, "--workdir", c, "--slurm-array", "--only", "seed=1",
                     "--only", "seed=2", "--slurm-option=--time=0:10:00")
    assert made.returncode == 0, made.stderr
    script = (c / "sweep.sbatch").read_text()
    for line in ("#SBATCH --array=1-2", "#SBATCH --requeue", "#SBATCH --signal=B:TERM@120",
                 "#SBATCH --time=0:10:00", f"#SBATCH --output={c / 'slurm'}/%A_%a.out"):
        assert line in script.splitlines()
    assert '--index "${SLURM_ARRAY_TASK_ID}" --no-report' in script
    # Task 2, preempted (SIGTERM to the task, as SLURM does) after its first checkpoint ...
    wd = c / "points" / "lr=0.001,seed=2"
    env = {**sweep_env, "SLURM_ARRAY_TASK_ID": "2"}
    task = subprocess.Popen(["bash", str(c / "sweep.sbatch")], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        pid = wait_for(lambda: (wd / "checkpoints" / "10").is_dir() and trainer_pid(wd),
                       "task 2's first checkpoint", proc=task)
        os.kill(pid, signal.SIGSTOP)  # hold it mid-run while the signal is delivered
        assert steps_logged(wd) < STEPS
        task.send_signal(signal.SIGTERM)  # bash exec'd the runner: this is the runner
        time.sleep(0.5)
        os.kill(pid, signal.SIGCONT)
        out, _ = task.communicate(timeout=120)
    finally:
        task.kill()
    assert task.returncode == 0, out[-3000:]  # preempted: requeue and rerun
    assert "SIGTERM: stopping" in out and "interrupted lr=0.001,seed=2" in out, out[-3000:]
    assert outcome.point_state(wd, STEPS).status == "interrupted"
    # ... requeued: resumes and finishes; once more: nothing to do (idempotent).
    for expect in ("resume lr=0.001,seed=2", "nothing to run"):
        proc = subprocess.run(["bash", str(c / "sweep.sbatch")], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0 and expect in proc.stderr, proc.stderr[-3000:]
    assert [r["step"] for r in records(wd)] == list(range(1, STEPS + 1))
    assert "resumed from the checkpoint at step" in (wd / "train.log").read_text()
    report = sweep_cli(c, module="optaxlab.sweep.report")
    assert report.returncode == 0, report.stderr
    status = {r["name"]: r["status"] for r in read_csv(c / "results.csv")}
    assert status == {"lr=0.001,seed=0": "pending", "lr=0.001,seed=1": "pending",
                      "lr=0.001,seed=2": "finished"}


def test_a_point_held_by_another_trainer_is_left_alone_then_run(write_sweep, sweep_cli, tmp_path):
    """A point whose workdir another live trainer holds (its .lock) is reported as running
    elsewhere, untouched, and the sweep exits 3; once that process is gone a rerun takes the
    stale lock over and finishes the point."""
    path = write_sweep('sweep(config=CONFIG, overrides={**TINY, "steps": 10, "eval_every": 10},'
                       ' points=[{"seed": 0}, {"seed": 1}])')
    root = tmp_path / "sweep"
    held = root / "points" / "seed=1"
    held.mkdir(parents=True)
    holder = subprocess.Popen(["sleep", "600"])
    try:
        lock = json.dumps({"host": os.uname().nodename, "pid": holder.pid, "start": "earlier"})
        (held / ".lock").write_text(lock)
        proc = sweep_cli(path, "--workdir", root, "--no-vectorize")
        assert proc.returncode == 3, proc.stdout[-3000:] + proc.stderr[-3000:]
        out = proc.stdout + proc.stderr
        assert "skip   seed=1: its workdir is locked by another trainer process" in out, out
        assert "1 point(s) need attention: 1 pending, of them 1 running elsewhere" in out, out
        assert (held / ".lock").read_text() == lock  # the holder's lock is not touched
        assert not (held / "metrics.jsonl").exists()
        assert json.loads((root / "points" / "seed=0" / "status.json").read_text())[
            "status"] == "finished"
    finally:
        holder.kill()
        holder.wait()
    proc = sweep_cli(path, "--workdir", root, "--no-vectorize")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads((held / "status.json").read_text())["status"] == "finished"
    assert "taking over the stale lock" in (held / "train.log").read_text()
