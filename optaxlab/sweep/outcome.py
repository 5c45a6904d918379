"""A point's outcome, read from its workdir: what the sweep runner and the report both use.

A point folder (DIR/points/<name>/) is an ordinary trainer workdir (checkpoints/, metrics.jsonl,
tensorboard/, config.json and, from the trainer, status.json) plus the sweep's files:

  point.json    the point's settings and its exact trainer command
  train.log     the trainer's stdout + stderr, appended over attempts
  exit_code     the trainer's exit status of the last attempt (shell convention: 128 + signal
                for a killed process, e.g. 137 = SIGKILL), written when the attempt ends
  outcome.json  the sweep runner's record: outcome, message, last lines of the log, attempts
                (start, end, wall time, exit code, CPUs)
  .sweep.lock   held (flock) by the sweep process that is running the point right now

The outcome is derived from these files by one function (`point_state`), so a point run by the
built-in runner and the same command run by hand (`--print-commands`) read the same. The order of
evidence: a checkpoint at the last step or status.json "finished" -> finished; else the exit code
(with the trainer's status.json for the details when the trainer wrote one in that attempt); else
status.json alone; else metrics.jsonl (interrupted) or nothing (pending).

Outcomes: finished | diverged (non-finite loss or gradient, or a loss blow-up under
health.policy=halt: a result, with its step and reason) | stalled (exit 6: the health rules saw
no progress; a result, with its step and reason; `diverged_step` holds that step) | failed
(exit code + last lines of the log) | invalid (bad config: exit 2; not retried) | interrupted
(stopped by a signal or a kill; a rerun resumes it from its last checkpoint) | running | pending.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import signal
import socket
import time
from pathlib import Path
from typing import Any

from optaxlab.train import errors
from optaxlab.train import metrics as metrics_lib
from optaxlab.train import workdir as workdir_lib

# The trainer's statuses (status.json) where a point's outcome means the same; three of the sweep's.
FINISHED, DIVERGED, STALLED, FAILED, INTERRUPTED = (
    workdir_lib.FINISHED, workdir_lib.DIVERGED, workdir_lib.STALLED, workdir_lib.FAILED,
    workdir_lib.INTERRUPTED)
INVALID, RUNNING, PENDING = "invalid", "running", "pending"
STATUSES = (FINISHED, DIVERGED, STALLED, FAILED, INVALID, INTERRUPTED, RUNNING, PENDING)
DONE = (FINISHED, DIVERGED, STALLED, INVALID)  # a rerun skips these; the others run (and resume)

# Trainer exit codes: defined once, in optaxlab.train.errors.
EXIT_OK, EXIT_BUG, EXIT_CONFIG = errors.FINISHED, errors.BUG, errors.BAD_INPUT
EXIT_NONFINITE, EXIT_RUNTIME, EXIT_LOCKED = errors.DIVERGED, errors.IO_FAILURE, errors.LOCKED
EXIT_STALLED, EXIT_SIGINT = errors.STALLED, errors.INTERRUPTED
# Exit codes after which the trainer has written status.json for this very attempt.
WRITES_STATUS = (EXIT_OK, EXIT_BUG, EXIT_NONFINITE, EXIT_RUNTIME, EXIT_STALLED, EXIT_SIGINT)

EXIT_CODE_FILE, OUTCOME_JSON, LOG_FILE, LOCK_FILE = "exit_code", "outcome.json", "train.log", \
    ".sweep.lock"
STATUS_JSON, METRICS = workdir_lib.STATUS, "metrics.jsonl"
ATTEMPT_HEADER = "==> optaxlab.sweep attempt"
LOG_TAIL = 20
_STEP_RE = re.compile(r"non-finite .*?\bat step (\d+)")


@dataclasses.dataclass
class State:
    status: str
    step: int  # last step in metrics.jsonl (0: none)
    steps: int
    diverged_step: int | None = None
    exit_code: int | None = None
    message: str = ""


def shell_exit_code(returncode: int) -> int:
    """subprocess's -N (killed by signal N) as a shell reports it: 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def _signal_name(code: int) -> str | None:
    if code > 128:
        with contextlib.suppress(ValueError):
            return signal.Signals(code - 128).name
    return None


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def read_exit_code(workdir: Path) -> int | None:
    try:
        return int((Path(workdir) / EXIT_CODE_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def last_attempt_log(workdir: Path, max_bytes: int = 200_000) -> list[str]:
    """The non-empty lines of train.log since the last attempt header (its tail when long)."""
    path = Path(workdir) / LOG_FILE
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    lines = [ln for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith(ATTEMPT_HEADER):
            return lines[i + 1:]
    return lines


def last_step(workdir: Path) -> int:
    """The step of the last complete record of metrics.jsonl (read from the file's end: the
    driver asks every second while points run)."""
    path = Path(workdir) / METRICS
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 16384))
            tail = f.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return 0
    for line in reversed(tail):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "step" in record:
            return int(record["step"])
    if size <= 16384:
        return 0
    records = metrics_lib.read_jsonl(path)
    return int(records[-1].get("step", 0)) if records else 0


def _error_line(lines: list[str]) -> str:
    for line in reversed(lines):
        if line.startswith("error:"):
            return line
    return lines[-1] if lines else ""


def _stalled(status: dict[str, Any], step: int, steps: int, code: int | None,
             message: str) -> State:
    """A run the trainer's health rules stopped as stalled (exit 6): a result, with its step."""
    at = status.get("step")
    return State(STALLED, step, steps, diverged_step=None if at is None else int(at),
                 exit_code=code, message=status.get("reason") or message)


def classify(*, exit_code: int | None, status: dict[str, Any] | None, log: list[str],
             step: int, steps: int, final_checkpoint: bool) -> State:
    """The outcome from the evidence of one point (see the module docstring)."""
    if final_checkpoint or (status or {}).get("status") == "finished":
        if exit_code is None:  # e.g. it finished while its sweep was being killed
            exit_code = (status or {}).get("exit_code")
        return State(FINISHED, max(step, steps if final_checkpoint else step), steps,
                     exit_code=exit_code)
    if exit_code is not None and exit_code != EXIT_LOCKED:
        st = status if exit_code in WRITES_STATUS else None
        message = (st or {}).get("message") or _error_line(log)
        if exit_code == EXIT_CONFIG:
            return State(INVALID, step, steps, exit_code=exit_code, message=message)
        if exit_code == EXIT_STALLED:
            return _stalled(st or {}, step, steps, exit_code, message)
        if exit_code == EXIT_NONFINITE:
            div = (st or {}).get("diverged_step", (st or {}).get("step"))
            if div is None:
                found = [int(m.group(1)) for line in log for m in [_STEP_RE.search(line)] if m]
                div = found[-1] if found else step + 1
            return State(DIVERGED, step, steps, diverged_step=int(div), exit_code=exit_code,
                         message=(st or {}).get("reason") or message)
        if exit_code == EXIT_OK or exit_code == EXIT_SIGINT or _signal_name(exit_code) in (
                "SIGTERM", "SIGINT", "SIGHUP"):
            why = (st or {}).get("status") or _signal_name(exit_code) or f"exit {exit_code}"
            return State(INTERRUPTED, step, steps, exit_code=exit_code,
                         message=f"stopped at step {step} ({why}); a rerun resumes it")
        sig = _signal_name(exit_code)
        if sig:
            message = f"killed by {sig} (exit {exit_code}) at step {step}" + (
                " (by hand, or by the out-of-memory killer)" if sig == "SIGKILL" else "")
        return State(FAILED, step, steps, exit_code=exit_code, message=message)
    if status:
        kind = status.get("status")
        code = status.get("exit_code")
        if kind == "diverged":
            div = status.get("diverged_step", status.get("step"))
            return State(DIVERGED, step, steps, diverged_step=None if div is None else int(div),
                         exit_code=code, message=status.get("reason") or status.get("message", ""))
        if kind == "stalled":
            return _stalled(status, step, steps, code, status.get("message", ""))
        if kind == "failed":
            return State(FAILED, step, steps, exit_code=code, message=status.get("message", ""))
        return State(INTERRUPTED, step, steps, exit_code=code,
                     message=f"stopped at step {step} ({kind}); a rerun resumes it")
    if step:
        return State(INTERRUPTED, step, steps,
                     message=f"stopped at step {step} with no exit record (killed?); a rerun "
                     "resumes it")
    return State(PENDING, 0, steps)


def point_state(workdir: Path, steps: int) -> State:
    """The outcome of the point in `workdir` (RUNNING while a sweep process holds its lock)."""
    workdir = Path(workdir)
    step = last_step(workdir)
    if is_locked(workdir):
        return State(RUNNING, step, steps)
    return classify(exit_code=read_exit_code(workdir), status=read_json(workdir / STATUS_JSON),
                    log=last_attempt_log(workdir), step=step, steps=steps,
                    final_checkpoint=(workdir / "checkpoints" / str(steps)).is_dir())


def read_outcome(workdir: Path) -> dict[str, Any]:
    return read_json(Path(workdir) / OUTCOME_JSON) or {}


def write_json(path: Path, data: Any) -> None:
    """Atomic write (tmp file + os.replace): a kill never leaves a half-written file. The one
    JSON writer of sweep/ (sweep.json, point.json, outcome.json, group.json)."""
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=repr) + "\n")
    os.replace(tmp, path)


def record_attempt(workdir: Path, name: str, steps: int, attempt: dict[str, Any],
                   exit_code: int | None, note: str | None = None) -> State:
    """After an attempt: write `exit_code` (None: the sweep stopped the trainer itself, so the
    code says nothing about the point) and outcome.json; returns the point's state. `note`
    replaces the message of an interrupted or pending point (why it stopped)."""
    workdir = Path(workdir)
    if exit_code is not None and exit_code != EXIT_LOCKED:
        tmp = workdir / f".{EXIT_CODE_FILE}.tmp"
        tmp.write_text(f"{exit_code}\n")
        os.replace(tmp, workdir / EXIT_CODE_FILE)
    state = classify(exit_code=None if exit_code == EXIT_LOCKED else read_exit_code(workdir),
                     status=read_json(workdir / STATUS_JSON), log=last_attempt_log(workdir),
                     step=last_step(workdir), steps=steps,
                     final_checkpoint=(workdir / "checkpoints" / str(steps)).is_dir())
    if note and state.status in (INTERRUPTED, PENDING):
        state.message = note
    old = read_outcome(workdir)
    attempts = [*old.get("attempts", []), {**attempt, "status": state.status}]
    write_json(workdir / OUTCOME_JSON, {
        "name": name, **dataclasses.asdict(state), "log_tail": last_attempt_log(workdir)[
            -LOG_TAIL:], "wall_s": round(sum(a.get("wall_s", 0.0) for a in attempts), 3),
        "attempts": attempts})
    return state


def begin_attempt(workdir: Path) -> None:
    """Before an attempt: the previous exit code no longer describes the point (it stays in
    outcome.json's attempts)."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(Path(workdir) / EXIT_CODE_FILE)


# ---------------------------------------------------------------------------------------------
# The sweep's claim on a point: an flock, released by the kernel when its holder dies (kill -9
# included), so two sweep processes (two drivers, SLURM tasks) never start the same point.


class PointLock:
    def __init__(self, workdir: Path):
        self.path = Path(workdir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        self.describe()
        return True

    def describe(self, **info: Any) -> None:
        """Write who holds the lock (host, sweep pid, trainer pid, start) into the lock file."""
        if self._fd is None:
            return
        text = json.dumps({"host": socket.gethostname(), "sweep_pid": os.getpid(),
                           "start": time.strftime("%Y-%m-%dT%H:%M:%S"), **info})
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, text.encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def is_locked(workdir: Path) -> bool:
    path = Path(workdir) / LOCK_FILE
    if not path.exists():
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def lock_info(workdir: Path) -> dict[str, Any]:
    return read_json(Path(workdir) / LOCK_FILE) or {}
