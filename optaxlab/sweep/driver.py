"""`python -m optaxlab.sweep`: resolve a sweep, then run its points (or print/schedule them).

    python -m optaxlab.sweep SWEEP.py --workdir DIR [--workers N] [--only FILTER] [--dry-run]
    python -m optaxlab.sweep SWEEP.py --workdir DIR --print-commands
    python -m optaxlab.sweep SWEEP.py --workdir DIR --slurm-array [--slurm-option=--time=2:00:00]
    python -m optaxlab.sweep --workdir DIR [...]          (the sweep of DIR/sweep.json)

Rerunning the same command skips points that are done (finished, diverged, invalid) and runs or
resumes the others. Progress goes to stderr (one live line on a terminal, else one line per
event) and to DIR/sweep.log; at the end, DIR/results.csv, summary.md and plots/ are written.

Exit codes: 0 every selected point is finished or diverged (also: stopped by SIGTERM, every
running point checkpointed; a rerun resumes) | 1 internal error | 2 bad sweep file or arguments
(nothing ran) | 3 the sweep ran but some points failed, are invalid, or are running elsewhere
(see summary.md) | 130 stopped by SIGINT (Ctrl-C).
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optaxlab.sweep import outcome, slurm
from optaxlab.sweep import runner as runner_lib
from optaxlab.sweep.spec import (
    SWEEP_JSON,
    Plan,
    Point,
    SweepError,
    check_against_disk,
    check_points,
    format_value,
    load_sweep_file,
    read_plan,
    resolve,
    short_names,
    write_plan,
)

EXIT_DONE, EXIT_BUG, EXIT_USAGE, EXIT_INCOMPLETE, EXIT_SIGINT = 0, 1, 2, 3, 130
LOG = "sweep.log"


# ---------------------------------------------------------------------------------------------
# Selecting points.


def select(plan: Plan, only: Sequence[str] = (), indices: Sequence[int] = ()) -> list[Point]:
    """The points matching any --only filter (all of its comma-separated terms: field=glob, or
    a glob over the point's name) and any --index; all points when neither is given."""
    points = plan.points
    if indices:
        bad = [i for i in indices if not 0 <= i < len(points)]
        if bad:
            raise SweepError(f"--index {bad[0]}: the sweep has points 0..{len(points) - 1}")
        points = [p for p in points if p.index in set(indices)]
    if not only:
        return list(points)
    short = short_names(plan.fields)
    by_name = {**{f: f for f in plan.fields}, **{s: f for f, s in short.items()}}
    chosen = []
    for p in points:
        for flt in only:
            ok = True
            for term in filter(None, (t.strip() for t in flt.split(","))):
                key, eq, pattern = term.partition("=")
                if not eq or any(c in key for c in "*?["):  # a glob over the point's name
                    if not fnmatch.fnmatchcase(p.name, term):
                        ok = False
                    continue
                if key not in by_name:
                    raise SweepError(f"--only {flt!r}: unknown field {key!r}; valid: "
                                     f"{', '.join(sorted(by_name))}")
                if not fnmatch.fnmatchcase(format_value(p.values[by_name[key]]), pattern):
                    ok = False
            if ok:
                chosen.append(p)
                break
    if not chosen:
        raise SweepError(f"--only {' / '.join(only)}: no point matches (e.g. "
                         f"--only {plan.points[0].name!r})")
    return chosen


# ---------------------------------------------------------------------------------------------
# Progress: a live line on a terminal (else one line per event, a status line every minute)
# and DIR/sweep.log.


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    def __init__(self, sweep_dir: Path, stream=None, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty() and not quiet
        self.quiet = quiet
        self.log = open(Path(sweep_dir) / LOG, "a")  # noqa: SIM115 - closed in close()
        self._last_status = 0.0
        self._line = ""

    def _write_log(self, text: str) -> None:
        self.log.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {text}\n")
        self.log.flush()

    def event(self, text: str) -> None:
        self._write_log(text)
        if self.quiet:
            return
        if self.live and self._line:
            self.stream.write("\r\x1b[K")
        self.stream.write(f"[sweep {time.strftime('%H:%M:%S')}] {text}\n")
        if self.live and self._line:
            self.stream.write(self._line)
        self.stream.flush()

    def status(self, text: str, force: bool = False) -> None:
        now = time.time()
        if self.live:
            width = shutil.get_terminal_size((120, 20)).columns - 1
            self._line = f"[sweep] {text}"[:width]
            self.stream.write("\r\x1b[K" + self._line)
            self.stream.flush()
        if force or now - self._last_status >= 60:
            self._last_status = now
            self._write_log(text)
            if not self.live and not self.quiet:
                self.stream.write(f"[sweep {time.strftime('%H:%M:%S')}] {text}\n")
                self.stream.flush()

    def close(self) -> None:
        if self.live and self._line:
            self.stream.write("\n")
            self.stream.flush()
        self.log.close()


# ---------------------------------------------------------------------------------------------
# The run loop.


@dataclasses.dataclass
class _Running:
    job: Any
    slot: int
    points: list[Point]
    locks: list[outcome.PointLock]
    started: float


def _counts(states: dict[str, outcome.State]) -> dict[str, int]:
    out = {s: 0 for s in outcome.STATUSES}
    for st in states.values():
        out[st.status] += 1
    return out


def _fmt_counts(counts: dict[str, int], keys: Sequence[str]) -> str:
    return ", ".join(f"{counts[k]} {k}" for k in keys if counts.get(k))


class Driver:
    """Runs selected points of a plan with a runner on `workers` slots; records outcomes."""

    def __init__(self, plan: Plan, sweep_dir: Path, runner: runner_lib.Runner, workers: int,
                 progress: Progress, poll_s: float = 0.25, pin: bool = True):
        self.plan = plan
        self.sweep_dir = Path(sweep_dir)
        self.runner = runner
        self.slots = runner_lib.cpu_slots(workers) if pin else [None] * workers
        self.progress = progress
        self.poll_s = poll_s
        self.signals: list[int] = []
        self.busy: list[str] = []
        self.rows: dict[str, dict[str, Any]] = {}

    def _on_signal(self, signum, frame) -> None:
        del frame
        self.signals.append(signum)

    def _best_text(self) -> str:
        from optaxlab.sweep.report import best_so_far

        best = best_so_far(self.plan, list(self.rows.values()))
        return ", ".join(f"{g} {v:.4g}" for g, (v, _) in sorted(best.items()))

    def run(self, points: Sequence[Point]) -> dict[str, outcome.State]:
        from optaxlab.sweep.report import point_row

        states = {p.name: outcome.point_state(p.workdir(self.sweep_dir), p.steps)
                  for p in points}
        for p in points:
            if states[p.name].status == outcome.FINISHED:
                self.rows[p.name] = point_row(self.plan, p, self.sweep_dir)
        todo = [p for p in points if states[p.name].status not in outcome.DONE]
        # First seed of every setting first: the other seeds then load the compiled train step
        # from the compilation cache (same program; only the seed differs), and the whole grid
        # has a first result early.
        seeds = sorted({p.seed for p in todo})
        todo.sort(key=lambda p: (seeds.index(p.seed), p.index))
        jobs: list[list[Point]] = []
        keys: dict[Any, list[Point]] = {}
        for p in todo:
            key = self.runner.group_key(p)
            if key not in keys:
                keys[key] = []
                jobs.append(keys[key])
            keys[key].append(p)
        # vectorized groups: capped, one per worker at least (idle workers take chunks)
        per_job = max(1, len(self.slots) // max(1, len(jobs)))
        jobs = [chunk for job in jobs for chunk in self.runner.split(job, per_job)]
        for job in jobs:
            text = self.runner.describe(job)
            if text:
                self.progress.event(text)

        start_time = time.time()
        base_steps = {p.name: states[p.name].step for p in todo}
        done_steps: dict[str, int] = {}
        free = list(range(len(self.slots)))
        running: list[_Running] = []
        stopping_since: float | None = None
        killed = False
        last_status = 0.0
        old = {s: signal.signal(s, self._on_signal)
               for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        try:
            while (jobs and not self.signals) or running:
                if self.signals and stopping_since is None:
                    stopping_since = time.time()
                    name = signal.Signals(self.signals[0]).name
                    self.progress.event(
                        f"{name}: stopping; {len(running)} running point(s) get SIGTERM (they "
                        "checkpoint and stop); rerun the same command to resume")
                    for r in running:
                        r.job.signal(signal.SIGTERM)
                if self.signals and len(self.signals) > 1 and not killed:
                    killed = True
                    self.progress.event("second signal: killing the running points (they "
                                        "resume from their last checkpoint)")
                    for r in running:
                        r.job.signal(signal.SIGKILL)
                while jobs and free and not self.signals:
                    pts, locks = [], []
                    for p in jobs.pop(0):
                        lock = outcome.PointLock(p.workdir(self.sweep_dir))
                        if lock.acquire():
                            pts.append(p)
                            locks.append(lock)
                            continue
                        info = outcome.lock_info(p.workdir(self.sweep_dir))
                        self.busy.append(p.name)
                        self.progress.event(
                            f"skip   {p.name}: being run by another sweep process (pid "
                            f"{info.get('sweep_pid', '?')} on {info.get('host', '?')})")
                    if not pts:
                        continue
                    for p in pts:
                        outcome.begin_attempt(p.workdir(self.sweep_dir))
                    slot = free.pop(0)
                    job = self.runner.start(pts, self.slots[slot])
                    pid = getattr(getattr(job, "proc", None), "pid", None)
                    for lock in locks:
                        lock.describe(pid=pid, worker=slot)
                    running.append(_Running(job, slot, list(pts), locks, time.time()))
                    for p in pts:
                        st = states[p.name]
                        what = (f"resume {p.name} (from its last checkpoint; metrics at step "
                                f"{st.step})" if st.step else f"start  {p.name}")
                        self.progress.event(f"{what} [worker {slot}]")
                        states[p.name] = outcome.State(outcome.RUNNING, st.step, p.steps)
                for r in list(running):
                    codes = r.job.poll()
                    if codes is None:
                        continue
                    running.remove(r)
                    free.append(r.slot)
                    free.sort()
                    end = time.time()
                    for p, lock in zip(r.points, r.locks, strict=True):
                        code = codes.get(p.name)
                        if code == outcome.EXIT_LOCKED:  # the trainer's own workdir lock
                            lock.release()
                            self.busy.append(p.name)
                            self.progress.event(f"skip   {p.name}: its workdir is locked by "
                                                "another trainer process (exit 5)")
                            states[p.name] = outcome.point_state(p.workdir(self.sweep_dir),
                                                                 p.steps)
                            continue
                        # A trainer the sweep itself stopped says nothing about the point
                        # unless it got to an outcome of its own.
                        record = code if not self.signals or code in (
                            outcome.EXIT_OK, outcome.EXIT_CONFIG, outcome.EXIT_NONFINITE,
                            outcome.EXIT_STALLED) \
                            else None
                        attempt = {"start": time.strftime("%Y-%m-%dT%H:%M:%S",
                                                          time.localtime(r.started)),
                                   "wall_s": round(end - r.started, 3), "exit_code": code,
                                   "cpus": self.slots[r.slot], "runner": type(
                                       self.runner).__name__}
                        note = None if record is not None else (
                            f"stopped by the sweep ({signal.Signals(self.signals[0]).name}); a "
                            "rerun resumes it from its last checkpoint")
                        st = outcome.record_attempt(p.workdir(self.sweep_dir), p.name, p.steps,
                                                    attempt, record, note)
                        lock.release()
                        states[p.name] = st
                        done_steps[p.name] = st.step if st.status != outcome.FINISHED \
                            else p.steps
                        self.progress.event(self._end_text(p, st, end - r.started))
                    self.progress.status(self._status_text(states, running, start_time,
                                                           base_steps, done_steps, jobs),
                                         force=True)
                if stopping_since is not None and running and not killed and \
                        time.time() - stopping_since > 300:
                    self.signals.append(signal.SIGKILL)  # a trainer that ignores SIGTERM
                if time.time() - last_status >= 1.0:
                    last_status = time.time()
                    self.progress.status(self._status_text(states, running, start_time,
                                                           base_steps, done_steps, jobs))
                if running or jobs:
                    time.sleep(self.poll_s)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            for r in running:  # only on an internal error: leave no orphan trainers
                r.job.signal(signal.SIGKILL)
                for lock in r.locks:
                    lock.release()
        return states

    def _end_text(self, p: Point, st: outcome.State, wall: float) -> str:
        wd = p.workdir(self.sweep_dir)
        if st.status == outcome.FINISHED:
            from optaxlab.sweep.report import point_row

            row = point_row(self.plan, p, self.sweep_dir)
            self.rows[p.name] = row
            v = row.get(self.plan.metric)
            metric = f"{self.plan.metric} {v:.4g}" if isinstance(v, float) else \
                f"{self.plan.metric} -"
            return f"finished {p.name}: {metric} ({wall:.1f} s)"
        if st.status == outcome.DIVERGED:
            return f"diverged {p.name} at step {st.diverged_step} ({wall:.1f} s)"
        if st.status == outcome.STALLED:
            return f"stalled {p.name} at step {st.diverged_step}: {st.message} ({wall:.1f} s)"
        if st.status == outcome.INVALID:
            return f"invalid {p.name}: {st.message}"
        if st.status == outcome.FAILED:
            return (f"failed {p.name}: exit {st.exit_code}: {st.message} (log: "
                    f"{wd / outcome.LOG_FILE})")
        return f"{st.status} {p.name} at step {st.step}: {st.message}"

    def _status_text(self, states, running, start_time, base_steps, done_steps, jobs) -> str:
        counts = _counts(states)
        n = len(states)
        done = sum(counts[s] for s in (*outcome.DONE, outcome.FAILED))
        parts = [f"{done}/{n} done ({_fmt_counts(counts, (outcome.FINISHED, outcome.DIVERGED, outcome.STALLED, outcome.FAILED, outcome.INVALID)) or 'none yet'})",  # noqa: E501
                 f"{len(running)} running"]
        best = self._best_text()
        if best:
            parts.append(f"best {self.plan.metric}: {best}")
        # ETA from the steps this process has trained so far (startup and compiles included).
        advanced, remaining = 0, 0
        now_steps = dict(done_steps)
        for r in running:
            for p in r.points:
                now_steps[p.name] = outcome.last_step(p.workdir(self.sweep_dir))
        for name, base in base_steps.items():
            cur = now_steps.get(name, base)
            advanced += max(0, cur - base)
        for p in [p for r in running for p in r.points] + [p for j in jobs for p in j]:
            remaining += max(0, p.steps - now_steps.get(p.name, base_steps.get(p.name, 0)))
        elapsed = time.time() - start_time
        eta = (f", ETA {_duration(remaining * elapsed / advanced)}" if advanced and remaining
               else "")
        parts.append(f"{_duration(elapsed)} elapsed{eta}")
        return " | ".join(parts)


# ---------------------------------------------------------------------------------------------
# CLI.


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m optaxlab.sweep",
        description="Run a sweep of training runs (see optaxlab/sweep/__init__.py).",
        epilog="Exit codes: 0 done (or stopped by SIGTERM; rerun resumes), 2 bad sweep or "
               "arguments, 3 some points failed / invalid, 130 SIGINT.")
    p.add_argument("sweep", nargs="?", help="sweep file with get_sweep() (default: the "
                   "resolved sweep in WORKDIR/sweep.json)")
    p.add_argument("--workdir", required=True, help="the sweep's folder: sweep.json, "
                   "points/<name>/ (each a trainer workdir), results")
    p.add_argument("--workers", type=int, default=1, help="points run at once (default 1); "
                   "the CPUs are split among them")
    p.add_argument("--only", action="append", default=[], metavar="FILTER",
                   help="run only points matching FILTER: comma-separated field=glob terms "
                   "(short or full field names), e.g. 'optimizer=adam,seed=0'; repeat for OR")
    p.add_argument("--index", action="append", type=int, default=[],
                   help="run only the point with this index (as in sweep.json; SLURM tasks)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="show the points and what a run "
                      "would do; write nothing")
    mode.add_argument("--print-commands", action="store_true", help="write sweep.json and the "
                      "point folders, print one trainer command per point, run nothing")
    mode.add_argument("--slurm-array", action="store_true", help="write WORKDIR/sweep.sbatch, "
                      "a SLURM job array whose task i runs point i")
    p.add_argument("--slurm-option", action="append", default=[], metavar="OPT",
                   help="an extra #SBATCH line for --slurm-array, e.g. "
                   "--slurm-option=--time=1:00:00")
    p.add_argument("--no-report", action="store_true", help="do not write results at the end")
    p.add_argument("--no-pin", action="store_true", help="do not pin workers to CPU sets "
                   "(every trainer sees all CPUs)")
    p.add_argument("--no-compile-cache", action="store_true",
                   help="do not share JAX's persistent compilation cache between points")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr (sweep.log "
                   "still gets it)")
    p.add_argument("--vectorize", action=argparse.BooleanOptionalAction, default=True,
                   help="run points that differ only in seed, learning rate and numeric "
                   "optimizer hyperparameters as one vectorized program per group (default: "
                   "on); --no-vectorize: one trainer process per point")
    p.add_argument("--max-members", type=int, default=None, metavar="K",
                   help="at most K points per vectorized group (default: what fits in half "
                   "the free memory, from optaxlab.train.memory's estimate)")
    return p


def local_device_count() -> int:
    """The devices a point's trainer will see here, counted in a child process as the trainers
    run (the driver itself never initializes an accelerator backend: it would hold its memory)."""
    out = subprocess.run([sys.executable, "-c", "import jax; print(jax.device_count())"],
                         capture_output=True, text=True, timeout=300)
    if out.returncode != 0 or not out.stdout.strip().isdigit():
        raise SweepError("cannot count the devices here (python -c 'import jax; "
                         f"jax.device_count()' failed: {out.stderr.strip().splitlines()[-1:]})")
    return int(out.stdout.strip())


def _load_plan(args, sweep_dir: Path) -> Plan:
    if args.sweep:
        plan = resolve(load_sweep_file(args.sweep), args.sweep)
        if (sweep_dir / SWEEP_JSON).exists():
            gone = check_against_disk(plan, sweep_dir)
            if gone:
                print(f"note: {len(gone)} point folder(s) in {sweep_dir / 'points'} are not in "
                      f"this sweep (left as they are): {', '.join(gone[:5])}"
                      + (" ..." if len(gone) > 5 else ""), file=sys.stderr)
        return plan
    if not (sweep_dir / SWEEP_JSON).exists():
        raise SweepError(f"no sweep file given and {sweep_dir / SWEEP_JSON} does not exist; "
                         "usage: python -m optaxlab.sweep SWEEP.py --workdir DIR")
    return read_plan(sweep_dir)


def _describe(plan: Plan, points: Sequence[Point], sweep_dir: Path) -> list[str]:
    groups: dict[str, int] = {}
    for p in points:
        groups[p.group] = groups.get(p.group, 0) + 1
    fixed = ", ".join(f"{k}={format_value(v)}" for k, v in plan.overrides.items())
    return [f"sweep {plan.name}: {len(points)} of {len(plan.points)} point(s) in {sweep_dir} "
            f"({len(groups)} group(s): "
            f"{', '.join(f'{g} ({n})' for g, n in groups.items())})",
            f"base: {plan.config} with {fixed or 'no overrides'}",
            *(f"note: {n}" for n in plan.notes)]


def print_commands(plan: Plan, points: Sequence[Point], sweep_dir: Path,
                   env: dict[str, str]) -> None:
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    for p in points:
        wd = p.workdir(sweep_dir.absolute())
        cmd = " ".join(shlex.quote(c) for c in plan.trainer_command(p, sweep_dir.absolute()))
        print(f"{prefix + ' ' if prefix else ''}{cmd} >> "
              f"{shlex.quote(str(wd / outcome.LOG_FILE))} 2>&1; echo $? > "
              f"{shlex.quote(str(wd / outcome.EXIT_CODE_FILE))}")


def _report_stale(plan: Plan, sweep_dir: Path) -> bool:
    from optaxlab.sweep.report import RESULTS_CSV

    results = sweep_dir / RESULTS_CSV
    if not results.exists():
        return True
    t = results.stat().st_mtime
    if (sweep_dir / SWEEP_JSON).stat().st_mtime > t:  # the sweep changed (its target, say)
        return True
    for p in plan.points:
        wd = p.workdir(sweep_dir)
        for name in (outcome.METRICS, outcome.EXIT_CODE_FILE, outcome.STATUS_JSON,
                     outcome.OUTCOME_JSON):
            f = wd / name
            if f.exists() and f.stat().st_mtime > t:
                return True
    return False


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_SIGINT


def _main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sweep_dir = Path(args.workdir)
    try:
        if args.workers < 1:
            raise SweepError(f"--workers {args.workers}: must be >= 1")
        if args.max_members is not None and args.max_members < 1:
            raise SweepError(f"--max-members {args.max_members}: must be >= 1")
        plan = _load_plan(args, sweep_dir)
        points = select(plan, args.only, args.index)
        # Every selected point's config, values included, before anything is written or runs
        # (printed commands and Slurm scripts run elsewhere: their meshes are checked alone).
        elsewhere = args.print_commands or args.slurm_array
        configs = check_points(plan, points, None if elsewhere else local_device_count())
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    env = runner_lib.compile_cache_env(sweep_dir, not args.no_compile_cache)

    if args.dry_run:
        for line in _describe(plan, points, sweep_dir):
            print(line)
        slots = runner_lib.cpu_slots(args.workers) if not args.no_pin else [None] * args.workers
        print(f"workers: {runner_lib.describe_slots(slots)}")
        would = 0
        for p in points:
            st = outcome.point_state(p.workdir(sweep_dir), p.steps)
            act = "skip" if st.status in outcome.DONE or st.status == outcome.RUNNING else (
                "resume" if st.step else "run")
            would += act != "skip"
            print(f"  [{p.index:3d}] {act:6s} {st.status:11s} {p.name}")
            if p.hparams:
                print("        hparams: " + ", ".join(f"{k}={format_value(v)}"
                                                   for k, v in p.hparams.items()))
        if args.vectorize and would:
            runner = runner_lib.GroupRunner(plan, sweep_dir, env, max_members=args.max_members,
                                            configs=configs)
            todo = [p for p in points if outcome.point_state(
                p.workdir(sweep_dir), p.steps).status not in (*outcome.DONE, outcome.RUNNING)]
            keys: dict[Any, list[Point]] = {}
            for p in todo:
                keys.setdefault(runner.group_key(p), []).append(p)
            per_job = max(1, len(slots) // max(1, len(keys)))
            for job in keys.values():
                for chunk in runner.split(job, per_job):
                    text = runner.describe(chunk)
                    if text:
                        print(text)
        print(f"dry run: would run {would} point(s), skip {len(points) - would}; nothing written")
        return EXIT_DONE

    write_plan(plan, sweep_dir, env)
    if args.print_commands:
        print_commands(plan, points, sweep_dir, env)
        return EXIT_DONE
    if args.slurm_array:
        path = slurm.write_script(plan, points, sweep_dir, args.slurm_option)
        print(f"wrote {path} ({len(points)} array task(s)); submit with: sbatch {path}")
        return EXIT_DONE

    progress = Progress(sweep_dir, quiet=args.quiet)
    try:
        for line in _describe(plan, points, sweep_dir):
            progress.event(line)
        before = {p.name: outcome.point_state(p.workdir(sweep_dir), p.steps) for p in points}
        counts = _counts(before)
        todo = [p for p in points if before[p.name].status not in outcome.DONE]
        if not todo:
            progress.event(f"nothing to run: all {len(points)} selected point(s) are done "
                           f"({_fmt_counts(counts, outcome.DONE)})")
        else:
            skipped = len(points) - len(todo)
            progress.event(f"to run: {len(todo)} ("
                           + _fmt_counts(_counts({p.name: before[p.name] for p in todo}),
                                         outcome.STATUSES)
                           + f"); skipping {skipped} done"
                           + (f" ({_fmt_counts(counts, outcome.DONE)})" if skipped else ""))
            slots = runner_lib.cpu_slots(args.workers) if not args.no_pin else [None] * \
                args.workers
            progress.event(f"workers: {runner_lib.describe_slots(slots)}")
            if env:
                progress.event(f"compilation cache: {env['JAX_COMPILATION_CACHE_DIR']}")
        progress.event(f"log: {sweep_dir / LOG}")
        runner = (runner_lib.GroupRunner(plan, sweep_dir, env, max_members=args.max_members,
                                         configs=configs)
                  if args.vectorize else runner_lib.SubprocessRunner(plan, sweep_dir, env))
        driver = Driver(plan, sweep_dir, runner, min(args.workers, max(len(todo), 1)),
                        progress, pin=not args.no_pin)
        t0 = time.time()
        states = driver.run(points) if todo else before
        counts = _counts(states)
        if todo:
            progress.event(f"{'stopped' if driver.signals else 'done'} after "
                           f"{_duration(time.time() - t0)}: "
                           f"{_fmt_counts(counts, outcome.STATUSES)}")
    finally:
        progress.close()

    if driver.signals:
        first = driver.signals[0]
        return EXIT_SIGINT if first == signal.SIGINT else EXIT_DONE
    if not args.no_report and (todo or _report_stale(plan, sweep_dir)):
        from optaxlab.sweep.report import write_report

        write_report(sweep_dir)
    elif not args.no_report:
        print(f"results unchanged: {sweep_dir / 'summary.md'}")
    # (a point running elsewhere is also counted as pending or interrupted: once)
    bad = max(counts[outcome.FAILED] + counts[outcome.INVALID] + counts[outcome.INTERRUPTED]
              + counts[outcome.PENDING], len(driver.busy))
    if bad:
        parts = [_fmt_counts(counts, (outcome.FAILED, outcome.INVALID, outcome.INTERRUPTED,
                                      outcome.PENDING)),
                 f"of them {len(driver.busy)} running elsewhere" if driver.busy else ""]
        print(f"{bad} point(s) need attention: {', '.join(p for p in parts if p)}"
              f"; see {sweep_dir / 'summary.md'}", file=sys.stderr)
        return EXIT_INCOMPLETE
    return EXIT_DONE

