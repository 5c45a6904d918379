"""How points execute. The driver hands a runner one job at a time (a list of points that share
a `group_key`) and polls it; everything else (plan, skip/resume, outcomes, progress, report) is
independent of how a point runs.

`SubprocessRunner`: one `python -m optaxlab.train` process per point, its output appended to the
point's train.log, in its own session (the driver forwards signals itself), on its worker slot's
CPUs. `GroupRunner` (the default, `--vectorize`): points that differ only in seed, peak learning
rate and numeric optimizer hyperparameters run as one `python -m optaxlab.sweep.group` process
(one jitted program with a member axis, `optaxlab.train.vectorized`) that writes each member's
ordinary workdir files; the driver writes their exit_code files as for solo points.

CPU split: XLA:CPU sizes its thread pool from the process's CPU affinity mask; OMP_NUM_THREADS
and --xla_cpu_multi_thread_eigen=false do not change how many cores a jitted step uses (measured
with jax 0.10.2: a matmul loop used 1.9 cores under both and 1.0 core under `taskset -c 0`). So
N workers on C cores get disjoint affinity sets of C // N cores each (Linux; elsewhere the
workers share all cores).

JAX's persistent compilation cache (JAX_COMPILATION_CACHE_DIR, by default DIR/jax_cache) is
shared by the point processes: points whose compiled programs are identical (seeds of one
setting, resumed points, reruns) load the compiled step instead of compiling it again. Group
processes that start together split their identical programs between them
(`optaxlab.train.compilation.compile_shared`: one compiles, the others load). The
threshold JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS is set to 0 (jax's default of 1 s would skip
the small programs: init, eval step) unless the environment sets it.
"""

from __future__ import annotations

import copy
import ctypes
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

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

    def split(self, points: Sequence[Point], workers: int) -> list[list[Point]]:
        """One job's points as the jobs to start (vectorized groups: capped chunks)."""

    def describe(self, points: Sequence[Point]) -> str | None:
        """A progress line about how a job runs, or None."""

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

    def split(self, points: Sequence[Point], workers: int) -> list[list[Point]]:
        del workers
        return [list(points)]

    def describe(self, points: Sequence[Point]) -> str | None:
        del points
        return None

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


# ---------------------------------------------------------------------------------------------
# Vectorized groups: many points, one process, one jitted program.

GROUPS_DIR = "groups"
MAX_MEMBERS_CAP = 256  # beyond this the per-member cost no longer falls (bench_sweep.py)


def available_memory_bytes() -> int | None:
    """Memory a group may use: the free memory of the first NVIDIA GPU (nvidia-smi), else the
    host's MemAvailable. (Not through jax: initializing a backend in the driver would make
    every later fork of a trainer unsafe.)"""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=memory.free", "--format=csv,noheader,"
                                  "nounits"], capture_output=True, text=True, timeout=20)
            return int(out.stdout.split()[0]) << 20
        except (OSError, ValueError, IndexError, subprocess.SubprocessError):
            pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def member_bytes(config) -> float:
    """Estimated bytes one member needs (optaxlab.train.memory: parameters, gradients,
    optimizer state, activations), doubled for XLA's temporaries."""
    from optaxlab.train import memory

    est = memory.estimate(copy.deepcopy(config), devices=1)
    acts = max(est.activations.values()) if est.activations else 0.0
    return 2.0 * (est.static() + acts)


class GroupJob:
    """One `python -m optaxlab.sweep.group` process running several points."""

    def __init__(self, points: Sequence[Point], proc: subprocess.Popen, log_file,
                 started: float, group_dir: Path):
        self.points = list(points)
        self.proc = proc
        self._log = log_file
        self.started = started
        self.group_dir = group_dir

    def poll(self) -> dict[str, int] | None:
        code = self.proc.poll()
        if code is None:
            return None
        self._log.close()
        codes = outcome.read_json(self.group_dir / "codes.json") or {}
        dead = outcome.shell_exit_code(code)
        return {p.name: int(codes.get(p.name, dead)) if code == 0 else dead
                for p in self.points}

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass


class GroupRunner(SubprocessRunner):
    """Points whose configs differ only in seed, peak learning rate and numeric optimizer
    hyperparameters (`optaxlab.train.grouping.signature`) run together, at most
    `max_members` per group (default: what fits in half the free memory), as one
    `python -m optaxlab.sweep.group DIR/groups/<name>` process; the others (a solo checkpoint
    to resume, a workdir another trainer holds, a config that needs several devices) run as solo
    trainers."""

    def __init__(self, plan: Plan, sweep_dir: Path, env: Mapping[str, str] | None = None,
                 python: str | None = None, max_members: int | None = None,
                 configs: Mapping[str, Any] | None = None):
        super().__init__(plan, sweep_dir, env, python)
        self.max_members = max_members
        self.solo_reasons: dict[str, str] = {}
        # A group to resume: its points -> its members in checkpoint order (diverged ones too)
        self._resume: dict[frozenset[str], list[str]] = {}
        self._configs: dict[str, object] = dict(configs or {})  # check_points' (built once)
        self._validated = set(self._configs)
        self._groupable: dict[str, str | None] = {}
        self._base = None

    def config(self, point: Point):
        """The point's training config, as its trainer command builds it."""
        if point.name not in self._configs:
            from optaxlab.sweep import spec

            if self._base is None:
                file, _, arg = self.plan.config.partition(":")
                self._base = spec.load_config_file(Path(file), arg or None)
            self._configs[point.name] = spec.point_config(
                self._base, copy.deepcopy(self._base.optimizer), point.overrides, point.name)
        return self._configs[point.name]

    def group_key(self, point: Point) -> Hashable:
        from optaxlab.train import grouping
        from optaxlab.train import workdir as workdir_lib

        try:
            cfg = self.config(point)
        except Exception as e:  # noqa: BLE001 - its solo trainer reports it (exit 2)
            self.solo_reasons[point.name] = f"its config does not build: {e}"
            return ("solo", point.index)
        if point.name not in self._groupable:  # (check_points validated its configs)
            self._groupable[point.name] = grouping.groupable(
                cfg, validated=point.name in self._validated)
        why = self._groupable[point.name]
        workdir = point.workdir(self.sweep_dir)
        ckpts = workdir / "checkpoints"
        if why is None and ckpts.is_dir() and any(c.name.isdigit() for c in ckpts.iterdir()):
            why = "it has a solo checkpoint to resume"
        if why is None and (held := workdir_lib.holder(workdir)) is not None:
            # alone, so that only this point reports "running elsewhere" (a group takes every
            # member's lock and would give up as a whole)
            why = (f"its workdir is locked by another trainer process (pid {held.get('pid')} "
                   f"on {held.get('host')})")
        if why is not None:
            self.solo_reasons[point.name] = why
            return ("solo", point.index)
        return ("vectorized", grouping.signature_key(cfg))

    def split(self, points: Sequence[Point], workers: int) -> list[list[Point]]:
        """A job of same-key points as groups of at most max_members, at least one per worker
        when there are enough points, sizes as equal as possible; members in point order (so
        the same points always make the same groups, whatever order the caller has)."""
        points = sorted(points, key=lambda p: p.index)
        if self.group_key(points[0])[0] == "solo":
            return [points]
        resumed = self._resumable(points)
        taken = {p.name for chunk in resumed for p in chunk}
        points = [p for p in points if p.name not in taken]
        if not points:
            return resumed
        cap = self.max_members or self.default_max_members(points[0])
        n = max(math.ceil(len(points) / cap), min(workers, len(points)))
        size, extra = divmod(len(points), n)
        out, start = [], 0
        for i in range(n):
            end = start + size + (1 if i < extra else 0)
            out.append(points[start:end])
            start = end
        return resumed + out

    def _resumable(self, points: Sequence[Point]) -> list[list[Point]]:
        """The groups of `points` to resume as they were: an earlier group with a checkpoint
        whose members are all among `points` or diverged (a diverged member stays in its
        group, frozen: without it the others would make a new group and start from step 0)."""
        from optaxlab.sweep import group as group_lib
        from optaxlab.train import grouping

        here = {p.name: p for p in points}
        everyone = {p.name: p for p in self.plan.points}
        out: list[list[Point]] = []
        used: set[str] = set()
        for p in points:
            member = outcome.read_json(p.workdir(self.sweep_dir) / grouping.GROUP_JSON)
            if p.name in used or not member or "group_dir" not in member:
                continue
            group_dir = Path(member["group_dir"])
            data = outcome.read_json(group_dir / group_lib.GROUP_FILE) or {}
            names = [m.get("name") for m in data.get("members", [])]
            ckpts = group_dir / "checkpoints"
            if not names or used & set(names) or not ckpts.is_dir() or not any(
                    c.name.isdigit() for c in ckpts.iterdir()):
                continue
            ok = all(n in here or (n in everyone and outcome.point_state(
                everyone[n].workdir(self.sweep_dir), everyone[n].steps).status
                == outcome.DIVERGED) for n in names)
            if ok and len({self.group_key(here[n]) for n in names if n in here}) == 1:
                chunk = [here[n] for n in names if n in here]
                self._resume[frozenset(q.name for q in chunk)] = names
                used.update(names)
                out.append(chunk)
        return out

    def _members(self, points: Sequence[Point]) -> tuple[list[Point], set[str]]:
        """The group's members in order and the names of its frozen (diverged) passengers."""
        names = self._resume.get(frozenset(p.name for p in points))
        if names is None:
            return list(points), set()
        everyone = {p.name: p for p in self.plan.points}
        mine = {p.name for p in points}
        return [everyone[n] for n in names], {n for n in names if n not in mine}

    def default_max_members(self, point: Point) -> int:
        avail = available_memory_bytes()
        if not avail:
            return 16
        return max(1, min(MAX_MEMBERS_CAP, int(0.5 * avail // member_bytes(self.config(point)))))

    def describe(self, points: Sequence[Point]) -> str | None:
        """A line saying how a job runs (None for a solo point)."""
        if self.group_key(points[0])[0] == "solo":
            why = self.solo_reasons.get(points[0].name)
            return f"solo   {points[0].name}: not vectorized ({why})" if why else None
        from optaxlab.train import grouping

        members, frozen = self._members(points)
        name = grouping.group_name([p.name for p in members])
        extra = (f" (resuming its checkpoint with the diverged {', '.join(sorted(frozen))} "
                 "frozen in it)" if frozen else "")
        return (f"group  {name}: {len(points)} point(s) vectorized in one program: "
                f"{', '.join(p.name for p in points)}{extra}")

    def start(self, points: Sequence[Point], cpus: list[int] | None):
        if self.group_key(points[0])[0] == "solo":
            return super().start(points, cpus)
        from optaxlab.sweep import group as group_lib
        from optaxlab.train import grouping

        members, frozen = self._members(points)
        name = grouping.group_name([p.name for p in members])
        group_dir = self.sweep_dir / GROUPS_DIR / name
        group_dir.mkdir(parents=True, exist_ok=True)
        outcome.write_json(group_dir / group_lib.GROUP_FILE, {
            "config": self.plan.config,
            "members": [{"name": p.name, "overrides": p.overrides,
                         "workdir": str(p.workdir(self.sweep_dir)),
                         **({"frozen": True} if p.name in frozen else {})}
                        for p in members]})
        (group_dir / group_lib.CODES_FILE).unlink(missing_ok=True)
        stamp = time.strftime('%Y-%m-%dT%H:%M:%S')
        header = (f"{outcome.ATTEMPT_HEADER} at {stamp} on {socket.gethostname()} (cpus: "
                  f"{cpus or 'all'}) <==\n")
        for i, p in enumerate(members):
            if p.name in frozen:
                continue
            with open(p.workdir(self.sweep_dir) / outcome.LOG_FILE, "a") as f:
                f.write(header + f"vectorized: member {i} of {len(members)} in {group_dir} "
                        f"(its log: {group_dir / outcome.LOG_FILE})\n")
        log = open(group_dir / outcome.LOG_FILE, "ab")  # noqa: SIM115 - closed by the job
        log.write(header.encode())
        log.flush()
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([self.python, "-m", "optaxlab.sweep.group", str(group_dir)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True,
                                preexec_fn=_child_setup(cpus, os.getpid()))
        return GroupJob(points, proc, log, time.time(), group_dir)
