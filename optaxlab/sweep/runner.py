"""How points execute. The driver hands a runner one job at a time (a list of points that share
a `group_key`) and polls it; everything else (plan, skip/resume, outcomes, progress, report) is
independent of how a point runs.

`SubprocessRunner` (today): one `python -m optaxlab.train` process per point, its output
appended to the point's train.log, in its own session (the driver forwards signals itself), on
its worker slot's CPUs. A runner for vectorized groups (many points in one jitted program) can
implement the same two methods (`group_key`, `start`) and write each member's ordinary workdir
files, exit_code included.

CPU split: XLA:CPU sizes its thread pool from the process's CPU affinity mask; OMP_NUM_THREADS
and --xla_cpu_multi_thread_eigen=false do not change how many cores a jitted step uses (measured
with jax 0.10.2: a matmul loop used 1.9 cores under both and 1.0 core under `taskset -c 0`). So
N workers on C cores get disjoint affinity sets of C // N cores each (Linux; elsewhere the
workers share all cores).

JAX's persistent compilation cache (JAX_COMPILATION_CACHE_DIR, by default DIR/jax_cache) is
shared by the point processes: points whose compiled programs are identical (seeds of one
setting, resumed points, reruns) load the compiled step instead of compiling it again. The
threshold JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS is set to 0 (jax's default of 1 s would skip
the small programs: init, eval step) unless the environment sets it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from optaxlab.sweep import outcome
from optaxlab.sweep.spec import Plan, Point

CACHE_DIR = "jax_cache"


def available_cpus() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def cpu_slots(workers: int) -> list[list[int] | None]:
    """The CPUs of each worker slot: disjoint, near-equal chunks of this process's CPUs (None
    where the platform cannot pin, or there are fewer CPUs than workers: shared)."""
    cpus = available_cpus()
    if not hasattr(os, "sched_setaffinity") or workers < 1 or len(cpus) < workers:
        return [None] * max(workers, 1)
    size, extra = divmod(len(cpus), workers)
    out, start = [], 0
    for i in range(workers):
        n = size + (1 if i < extra else 0)
        out.append(cpus[start:start + n])
        start += n
    return out


def describe_slots(slots: Sequence[list[int] | None]) -> str:
    if all(s is None for s in slots):
        return f"{len(slots)} worker(s) sharing all {len(available_cpus())} CPUs (not pinned)"
    parts = [f"worker {i}: cpu {','.join(map(str, s))}" for i, s in enumerate(slots)]
    return f"{len(slots)} worker(s) pinned by CPU affinity ({'; '.join(parts)})"


def compile_cache_env(sweep_dir: Path, enabled: bool = True) -> dict[str, str]:
    """The environment that points the trainers at the shared compilation cache."""
    if not enabled:
        return {}
    env = {"JAX_COMPILATION_CACHE_DIR": os.environ.get(
        "JAX_COMPILATION_CACHE_DIR", str(Path(sweep_dir).absolute() / CACHE_DIR))}
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = os.environ.get(
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    return env


class Job(Protocol):
    """A running job: one or more points started together."""

    points: Sequence[Point]

    def poll(self) -> dict[str, int] | None:
        """None while running; when done, point name -> exit code (shell convention)."""

    def signal(self, sig: int) -> None:
        """Forward a signal (the driver is stopping: SIGTERM, then SIGKILL)."""


class Runner(Protocol):
    def group_key(self, point: Point) -> Hashable:
        """Points with equal keys may run as one job (the subprocess runner: every point alone)."""

    def start(self, points: Sequence[Point], cpus: list[int] | None) -> Job:
        """Start the points (the driver holds their locks and has called begin_attempt)."""


def _prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _child_setup(cpus: list[int] | None, parent: int):
    """Runs in the child between fork and exec: pin CPUs and (Linux) get SIGTERM when the
    driver dies, kill -9 included (PR_SET_PDEATHSIG), so no trainer outlives its sweep."""
    prctl = _prctl()  # looked up before the fork

    def setup():
        if cpus is not None:
            os.sched_setaffinity(0, cpus)
        if prctl is not None:
            prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
            if os.getppid() != parent:  # the driver died before prctl took effect
                os._exit(143)

    return setup


class SubprocessJob:
    def __init__(self, point: Point, proc: subprocess.Popen, log_file, started: float):
        self.points = [point]
        self.proc = proc
        self._log = log_file
        self.started = started

    def poll(self) -> dict[str, int] | None:
        code = self.proc.poll()
        if code is None:
            return None
        self._log.close()
        return {self.points[0].name: outcome.shell_exit_code(code)}

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass


class SubprocessRunner:
    """Each point is `python -m optaxlab.train --config C --workdir DIR/points/NAME ...`."""

    def __init__(self, plan: Plan, sweep_dir: Path, env: Mapping[str, str] | None = None,
                 python: str | None = None):
        self.plan = plan
        self.sweep_dir = Path(sweep_dir).absolute()
        self.env = dict(env or {})
        self.python = python or sys.executable

    def group_key(self, point: Point) -> Hashable:
        return ("solo", point.index)

    def command(self, point: Point) -> list[str]:
        return self.plan.trainer_command(point, self.sweep_dir, self.python)

    def start(self, points: Sequence[Point], cpus: list[int] | None) -> SubprocessJob:
        (point,) = points
        workdir = point.workdir(self.sweep_dir)
        log = open(workdir / outcome.LOG_FILE, "ab")  # noqa: SIM115 - closed by the job
        header = (f"{outcome.ATTEMPT_HEADER} at {time.strftime('%Y-%m-%dT%H:%M:%S')} on "
                  f"{socket.gethostname()} (cpus: {cpus or 'all'}) <==\n")
        log.write(header.encode())
        log.flush()
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(self.command(point), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                preexec_fn=_child_setup(cpus, os.getpid()))
        return SubprocessJob(point, proc, log, time.time())
