"""The workdir's housekeeping: one process per workdir, the run's outcome, moving a run aside.

- WORKDIR/.lock (`acquire` / `release`): JSON {"host", "pid", "start"} of the process that owns
  the workdir. A second process is refused at once (`WorkdirLockedError`, exit 5) with one line
  naming the holder; a lock whose holder is dead (same host, pid gone) is taken over with a
  warning. On a local file system the lock is created with O_CREAT | O_EXCL (atomic); on an
  object store (gs://, ...) it is check-then-write, which cannot exclude two processes starting
  within the same second.
- WORKDIR/status.json (`write_status`): how the last run attempt ended, written atomically
  (temporary file + rename) by process 0: {"status", "step", "steps", "exit_code", "message",
  "diverged_step", "time"}.
- `move_aside`: everything in the workdir but the lock goes to WORKDIR/previous_runs/<time>/
  (`--restart`): an old run is never deleted.

Paths are `etils.epath` paths, so a workdir can be local or on an object store.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
from typing import Any

from etils import epath

from optaxlab.train.errors import WorkdirLockedError

log = logging.getLogger("optaxlab.train")

LOCK = ".lock"
STATUS = "status.json"
PREVIOUS = "previous_runs"
# status.json's statuses (the sweep's point outcomes reuse these names: sweep/outcome.py)
FINISHED, PREEMPTED, INTERRUPTED = "finished", "preempted", "interrupted"
DIVERGED, STALLED, FAILED = "diverged", "stalled", "failed"
STATUSES = (FINISHED, PREEMPTED, INTERRUPTED, DIVERGED, STALLED, FAILED)


def now() -> str:
    """The current time, ISO 8601 with the UTC offset (seconds)."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def is_local(path) -> bool:
    """Whether `path` is on the local file system (not gs://, s3://, ...)."""
    return "://" not in os.fspath(path)


def _alive(pid: int) -> bool:
    """Whether process `pid` exists on this host and is not a zombie."""
    if pid == os.getpid():
        return False  # a lock with our own pid is left over from an earlier boot/container
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _read_lock(path: epath.Path) -> dict[str, Any] | None:
    try:
        holder = json.loads(path.read_text())
        return holder if isinstance(holder, dict) else {}
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError):
        return {}  # being written, or garbage


def _refuse(workdir, holder: dict[str, Any]) -> WorkdirLockedError:
    lock = epath.Path(workdir) / LOCK
    return WorkdirLockedError(
        f"workdir {workdir} is in use by pid {holder.get('pid', '?')} on host "
        f"{holder.get('host', '?')} (since {holder.get('start', '?')}); wait for it to end or "
        f"stop it. If that process is gone (e.g. on another machine), delete {lock}")


def acquire(workdir) -> dict[str, Any]:
    """Take WORKDIR/.lock for this process (creating the workdir), or raise
    WorkdirLockedError. Returns the lock's contents."""
    workdir = epath.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / LOCK
    me = {"host": socket.gethostname(), "pid": os.getpid(), "start": now()}
    text = json.dumps(me)
    for _ in range(3):
        if is_local(path):
            try:
                fd = os.open(os.fspath(path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "w") as f:
                    f.write(text)
                return me
        elif not path.exists():
            path.write_text(text)
            return me
        holder = _read_lock(path)
        if holder is None:
            continue  # released meanwhile; try again
        same_host = holder.get("host") == me["host"]
        pid = holder.get("pid")
        if not (same_host and isinstance(pid, int) and not _alive(pid)):
            raise _refuse(workdir, holder)
        log.warning("taking over the stale lock %s of pid %d on %s (started %s; that process "
                    "is gone)", path, pid, holder.get("host"), holder.get("start", "?"))
        stale = workdir / f"{LOCK}.stale-{pid}"
        try:
            path.rename(stale)
            stale.unlink()
        except FileNotFoundError:
            pass  # another process took it over first; the next round decides
    raise _refuse(workdir, _read_lock(path) or {})


def holder(workdir) -> dict[str, Any] | None:
    """Who holds WORKDIR/.lock: its contents while a live process (or any process on another
    host) holds it; None when it is free or stale (its process on this host is gone)."""
    held = _read_lock(epath.Path(workdir) / LOCK)
    if held is None:
        return None
    pid = held.get("pid")
    if held.get("host") == socket.gethostname() and isinstance(pid, int) and not _alive(pid):
        return None
    return held


def release(workdir, holder: dict[str, Any]) -> None:
    """Remove WORKDIR/.lock if it is still `holder`'s."""
    path = epath.Path(workdir) / LOCK
    current = _read_lock(path)
    if current and current.get("pid") == holder.get("pid") and \
            current.get("host") == holder.get("host"):
        path.unlink()


def write_status(workdir, *, status: str, step: int, steps: int, exit_code: int, message: str,
                 diverged_step: int | None = None) -> dict[str, Any]:
    """Write WORKDIR/status.json atomically; returns what was written."""
    if status not in STATUSES:
        raise ValueError(f"status={status!r}; valid: {', '.join(STATUSES)}")
    record = {"status": status, "step": int(step), "steps": int(steps),
              "exit_code": int(exit_code),
              "message": message.splitlines()[0][:1000] if message else "",
              "diverged_step": None if diverged_step is None else int(diverged_step),
              "time": now()}
    path = epath.Path(workdir) / STATUS
    tmp = epath.Path(workdir) / f".{STATUS}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)
    return record


def read_status(workdir) -> dict[str, Any] | None:
    """WORKDIR/status.json, or None if there is none."""
    path = epath.Path(workdir) / STATUS
    return json.loads(path.read_text()) if path.exists() else None


def move_aside(workdir) -> epath.Path | None:
    """Move everything in `workdir` except the lock and earlier moved runs into
    WORKDIR/previous_runs/<time>/; returns that folder (None if there was nothing to move)."""
    workdir = epath.Path(workdir)
    entries = [p for p in workdir.iterdir() if p.name not in (LOCK, PREVIOUS)] \
        if workdir.exists() else []
    if not entries:
        return None
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    dest = workdir / PREVIOUS / stamp
    n = 0
    while dest.exists():
        n += 1
        dest = workdir / PREVIOUS / f"{stamp}.{n}"
    dest.mkdir(parents=True)
    for p in entries:
        p.rename(dest / p.name)
    log.warning("--restart: moved the previous run in %s to %s", workdir, dest)
    return dest
