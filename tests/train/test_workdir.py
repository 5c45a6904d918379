"""WORKDIR/.lock (refused while the holder lives, taken over when it is dead), status.json,
moving a run aside, and the SIGTERM / SIGINT handler (real signals to this process)."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from optaxlab.train import mesh as mesh_lib
from optaxlab.train import signals as signals_lib
from optaxlab.train import workdir as workdir_lib
from optaxlab.train.errors import WorkdirLockedError


def _write_lock(workdir, pid, host=None):
    workdir.mkdir(parents=True, exist_ok=True)
    holder = {"host": host or socket.gethostname(), "pid": pid, "start": "2026-12-01T00:00:00"}
    (workdir / ".lock").write_text(json.dumps(holder))
    return holder


def test_lock_refused_while_holder_lives(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        holder = _write_lock(tmp_path, sleeper.pid)
        with pytest.raises(WorkdirLockedError) as info:
            workdir_lib.acquire(tmp_path)
        assert str(info.value) == (
            f"workdir {tmp_path} is in use by pid {sleeper.pid} on host {holder['host']} "
            f"(since {holder['start']}); wait for it to end or stop it. If that process is "
            f"gone (e.g. on another machine), delete {tmp_path / '.lock'}")
        _write_lock(tmp_path, 1, host="another-host")  # cannot tell: refused
        with pytest.raises(WorkdirLockedError, match="on host another-host"):
            workdir_lib.acquire(tmp_path)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_stale_lock_is_taken_over_with_a_warning(tmp_path, caplog):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _write_lock(tmp_path, gone.pid)
    holder = workdir_lib.acquire(tmp_path)
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    assert json.loads((tmp_path / ".lock").read_text()) == holder
    assert f"taking over the stale lock {tmp_path / '.lock'} of pid {gone.pid}" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]
    workdir_lib.release(tmp_path, holder)
    assert not (tmp_path / ".lock").exists()


def test_status_json_fields(tmp_path):
    record = workdir_lib.write_status(tmp_path, status="preempted", step=33, steps=100,
                                      exit_code=0, message="preempted at step 33; ...\nmore")
    assert workdir_lib.read_status(tmp_path) == record
    assert set(record) == {"status", "step", "steps", "exit_code", "message", "diverged_step",
                           "time"}
    assert record["message"] == "preempted at step 33; ..." and record["diverged_step"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.json"]  # no temporary left
    with pytest.raises(ValueError, match="status='done'"):
        workdir_lib.write_status(tmp_path, status="done", step=1, steps=1, exit_code=0,
                                 message="")


def test_move_aside_keeps_everything(tmp_path):
    (tmp_path / "checkpoints" / "4").mkdir(parents=True)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    (tmp_path / ".lock").write_text("{}")
    dest = workdir_lib.move_aside(tmp_path)
    assert dest.parent == tmp_path / "previous_runs"
    assert (dest / "metrics.jsonl").read_text() == '{"step": 1}\n'
    assert (dest / "checkpoints" / "4").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "previous_runs"]
    assert workdir_lib.move_aside(tmp_path) is None  # nothing left to move


def test_signals_set_the_flag_and_a_second_sigint_aborts():
    mesh = mesh_lib.make_mesh((8, 1, 1))
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with signals_lib.Stopper(mesh) as stopper:
        assert int(stopper.poll()) == signals_lib.NONE
        os.kill(os.getpid(), signal.SIGTERM)
        assert stopper.flag == signals_lib.PREEMPTED and int(stopper.poll()) == 1
        os.kill(os.getpid(), signal.SIGINT)
        assert stopper.flag == signals_lib.INTERRUPTED and int(stopper.poll()) == 2
        with pytest.raises(KeyboardInterrupt, match="second SIGINT"):
            os.kill(os.getpid(), signal.SIGINT)
            signal.pthread_sigmask(signal.SIG_BLOCK, [])  # a bytecode boundary for the handler
        assert signal.getsignal(signal.SIGINT) is signal.SIG_DFL  # a third one kills at once
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
