"""The one host loop: K >= 1 members trained by one compiled `Program` (a solo run is K = 1).

`run(program, members, mngr, stopper, end)` restores (or initializes) the program's state, then
steps it to `end`: metrics are fetched one step behind (the device runs step t while the host
reads step t-1), except at eval / checkpoint / stop steps, which sync first, so that a non-finite
step is always caught before anything is saved. Every member writes what a solo run writes:
metrics.jsonl, TensorBoard train/ and eval/ scalars (the monitor's histograms when it is on),
config.json, status.json; writes happen on process 0 only. A member whose step is non-finite
under nan_policy='halt' is frozen and recorded as diverged at that step (its status written at
once); the run ends when no member is left (a solo program then raises NonFiniteError).

Throughput: `steps_per_sec`; `<unit>_per_sec` is the member's own rate (its batch x steps/s);
`<unit>_per_sec_per_device` counts every member's tokens (or examples) a device processes per
second (a group of K on D devices: K x the member rate / D), and `mfu` (model FLOPs utilization,
`hardware.mfu`) is written where the device's peak is known (not on CPU).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
from typing import Any, NamedTuple, Protocol

import jax
import numpy as np
import tqdm
from etils import epath

from optaxlab import models, monitor
from optaxlab.train import checkpoint as ckpt_lib
from optaxlab.train import errors, hardware, health
from optaxlab.train import metrics as metrics_lib
from optaxlab.train import signals as signals_lib
from optaxlab.train import workdir as workdir_lib
from optaxlab.train.errors import DivergedError, NonFiniteError, StalledError

log = logging.getLogger("optaxlab.train")

INSTRUMENTS = ("noise/", "sharpness/")  # metric-name prefixes of config.monitor's instruments
NOISE_EMA = 0.9  # decay of the EMAs behind noise/critical_batch


@dataclasses.dataclass
class Outcome:
    """How a member's run ended (what its status.json says)."""

    status: str  # finished | preempted | interrupted | diverged | failed
    exit_code: int  # the exit code its solo run has
    message: str = ""
    diverged_step: int | None = None
    written: bool = False  # status.json already says so


@dataclasses.dataclass
class Member:
    """One training run of a program: its config and workdir, and what happened to it."""

    config: Any
    workdir: epath.Path
    writer: metrics_lib.Writer | None = None
    alive: bool = True  # False once diverged (its state frozen, its files final)
    outcome: Outcome | None = None
    records: list[dict[str, Any]] = dataclasses.field(default_factory=list)


class Program(Protocol):
    """What the loop drives: K members' compiled steps, their data and checkpoint tree.
    `restore(mngr, members) -> (start, state)` (the newest checkpoint's, else initialized; may
    mark members diverged earlier), `batch()`, `train(state, batch, step) -> (state, metrics,
    stats)` on the device (`step` the one it completes; metrics named 'noise/...' or
    'sharpness/...' are the instruments' scalars of that step), `host(metrics, stats)` ->
    fetched metrics with a leading member axis (lr the member's own) and stats per member,
    `tree(state)` / `meta(members)` what a checkpoint saves,
    `eval_batches()` the validation batches, `eval_step(state, batch)` their sums
    (loss_sum, count[, correct]) on the device, `member_files(i)` extra files (name -> text)
    for member i's workdir."""

    k: int
    task: str  # 'lm' | 'classification'
    mesh: Any  # the devices the K members run on
    names: list[str]  # parameter names, in leaf order
    checkpoint_dir: epath.Path
    raise_on_divergence: bool  # a solo run raises NonFiniteError when its member diverges

    def restore(self, mngr, members: list[Member]) -> tuple[int, Any]: ...
    def batch(self) -> Any: ...
    def train(self, state, batch, step: int) -> tuple[Any, Any, Any]: ...
    def host(self, metrics, stats) -> tuple[dict[str, np.ndarray], list | None]: ...
    def eval_batches(self) -> Any: ...
    def eval_step(self, state, batch) -> Any: ...
    def tree(self, state) -> Any: ...
    def meta(self, members: list[Member]) -> dict[str, Any]: ...
    def member_files(self, i: int) -> dict[str, str]: ...


class Result(NamedTuple):
    state: Any  # the final state
    start_step: int


def save_config(config, workdir: epath.Path, start: int) -> None:
    """WORKDIR/config.json (or config.resumed_at_<start>.json when a resumed run's config
    differs from the saved one)."""
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    path = workdir / "config.json"
    if path.exists() and path.read_text() != text:
        path = workdir / f"config.resumed_at_{start}.json"
        log.warning("config differs from %s; saved this run's config to %s",
                    workdir / "config.json", path)
    path.write_text(text)


def culprit(names: list[str], m: dict[str, np.ndarray], i: int, step: int) -> str:
    """What was non-finite in member i's step (the first offending parameter when known)."""
    for flags, what in (("grad_finite", "gradient"), ("param_finite", "update")):
        bad = [n for n, ok in zip(names, m[flags][i], strict=True) if not ok]
        if bad:
            return f"{what} at step {step} (first offending parameter: {bad[0]})"
    if not bool(m["state_finite"][i]):
        return f"optimizer state at step {step}"
    return f"loss ({float(m['loss'][i])}) at step {step}"


def run(program: Program, members: list[Member], mngr, stopper: signals_lib.Stopper,
        end: int) -> Result:
    """Train `members` with `program` to step `end`; each member's outcome is in
    `member.outcome` and its status.json, whether this returns or raises. Closes `mngr`."""
    return _Loop(program, members, mngr, end).run(stopper)


class _Loop:
    def __init__(self, program: Program, members: list[Member], mngr, end: int):
        self.p, self.members, self.mngr, self.end = program, members, mngr, end
        self.config = cfg = members[0].config  # what every member shares
        self.is_main = jax.process_index() == 0
        self.step = self.start = 0  # last completed step
        self.stop = signals_lib.NONE
        self.bar = None
        self.clock: tuple[float | None, int] = (None, 0)
        lm = program.task == "lm"
        self.unit = "tokens" if lm else "examples"
        self.per_step = cfg.batch_size * (cfg.seq_len if lm else 1)
        self.flops = models.flops_per_token(cfg.model, cfg.seq_len if lm else None)
        self.device_kind = program.mesh.devices.flat[0].device_kind
        prof = cfg.get("profile") or {}
        self.profile = (prof.get("start", 0), prof.get("steps", 0))
        self.profiling = False
        self.noise_ema = [(0.0, 0.0, 0) for _ in members]  # |G|^2, tr(Sigma), noise steps
        self.checkers = [health.Checker(m.config.get("health") or health.default_config("off"),
                                        m.config.steps) for m in members]

    def alive(self) -> bool:
        return any(m.alive for m in self.members)

    # -- the run

    def run(self, stopper) -> Result:
        aborted = False
        try:
            self.start, state = self.p.restore(self.mngr, self.members)
            self.step, self.clock = self.start, (None, self.start)
            self.open()
            state = self.loop(state, stopper)
            if not self.alive() and self.p.raise_on_divergence:
                o = self.members[0].outcome
                kind = {"stalled": StalledError, "diverged": NonFiniteError}[o.status]
                if o.status == "diverged" and o.message.startswith("diverged:"):
                    kind = DivergedError  # by loss (health), not a non-finite value
                raise kind(o.message)
            self.mngr.wait_until_finished()  # the checkpoint is complete before we say so
            self.finish()
            return Result(state, self.start)
        except BaseException as e:
            code = errors.exit_code(e)
            msg = (f"I/O failure: {errors.io_failure(e)}" if code == errors.IO_FAILURE
                   else errors.one_line(e))
            status = "failed"
            if isinstance(e, KeyboardInterrupt):
                aborted, status = True, "interrupted"
                msg = (f"aborted by a second SIGINT after step {self.step}; no checkpoint of it "
                       f"(last: {self.mngr.latest_step()})")
            for m in self.members:
                if m.alive or m.outcome is None:
                    m.outcome = Outcome(status, code, msg)
            raise
        finally:
            self.close(wait=not aborted)
            for m in self.members:
                if m.outcome is not None and not m.outcome.written:
                    try:
                        self.write_status(m, self.step)
                    except OSError as e:
                        log.error("could not write %s: %s", m.workdir / workdir_lib.STATUS, e)

    def open(self) -> None:
        """Each live member's config.json (and the program's files) and metric writers."""
        for i, m in enumerate(self.members):
            if not m.alive:  # diverged in an earlier run: nothing of it changes
                m.writer = metrics_lib.Writer(m.workdir, enabled=False)
                continue
            if self.is_main:
                save_config(m.config, m.workdir, self.start)
                for name, text in self.p.member_files(i).items():
                    (m.workdir / name).write_text(text)
            m.writer = metrics_lib.Writer(m.workdir, resume_step=self.start,
                                          enabled=self.is_main)
            if self.start:  # a resumed run judges its health from the records it kept
                path = m.workdir / metrics_lib.METRICS
                for r in metrics_lib.read_jsonl(path) if path.exists() else []:
                    if "loss" in r and 0 < r.get("step", 0) <= self.start:
                        self.checkers[i].observe(r["step"], r["loss"], r.get("grad_norm"),
                                                 m.config.log_every)
        show = self.is_main and all(m.config.progress_bar for m in self.members)
        self.bar = tqdm.tqdm(total=self.end, initial=self.start, disable=not show,
                             file=sys.stderr, dynamic_ncols=True, desc="train")

    def loop(self, state, stopper):
        cfg, every = self.config, self.config.monitor.get("every", 0)
        if self.start >= self.end:
            log.info("nothing to do: the workdir is already at step %d (end: %d)", self.start,
                     self.end)
        pending = None
        for step in range(self.start + 1, self.end + 1):
            self.trace(step, state, begin=True)
            state, m, stats = self.p.train(state, self.p.batch(), step)
            flag = stopper.poll()
            self.bar.update(1)
            self.trace(step, state, begin=False)
            if pending is not None:
                self.emit(self.handle(*pending, force=False))
            if not self.alive():
                return state
            pending = (step, m, stats if every and step % every == 0 else None, flag)
            do_eval = bool(cfg.eval_every) and (step % cfg.eval_every == 0 or step == self.end)
            do_save = step % cfg.checkpoint_every == 0 or step == self.end
            if do_eval or do_save or self.stop:
                recs, pending = self.handle(*pending, force=True), None
                if not self.alive():
                    return state
                if do_eval:
                    self.evaluate(state, recs)
                self.emit(recs)
                if do_save or self.stop:
                    ckpt_lib.save(self.mngr, step, self.p.tree(state), self.p.meta(self.members))
                for mem in self.members:
                    if mem.alive:
                        mem.writer.flush()
                self.clock = (time.perf_counter(), step)  # throughput excludes these
                if self.stop and step < self.end:
                    break
        if pending is not None:
            self.emit(self.handle(*pending, force=True))
        return state

    def trace(self, step: int, state, begin: bool) -> None:
        """The profiler window (config.profile): a trace of steps [start, start + steps) under
        the first member's tensorboard/ (process 0)."""
        first, n = self.profile
        if not n or not self.is_main:
            return
        if begin and step == first:
            jax.profiler.start_trace(str(self.members[0].workdir / "tensorboard"))
            self.profiling = True
            log.info("profiling steps %d-%d", first, first + n - 1)
        elif not begin and self.profiling and step == first + n - 1:
            jax.block_until_ready(state)
            self.stop_trace()

    def stop_trace(self) -> None:
        if self.profiling:
            self.profiling = False
            jax.profiler.stop_trace()

    # -- one step on the host

    def handle(self, step: int, m, stats, flag, force: bool) -> list[dict[str, Any] | None]:
        """Host side of one finished step: NaN policy, then each member's record (if it is
        logged), and the agreed stop flag."""
        m, stats, flag = jax.device_get((m, stats, flag))
        m, stats = self.p.host(m, stats)
        self.stop = max(self.stop, int(flag))
        for i, mem in enumerate(self.members):
            if mem.alive and not m["finite"][i]:
                if mem.config.nan_policy == "halt":
                    self.diverge(i, step, m)
                else:
                    log.warning("%snon-finite %s: update skipped (%d skipped so far)",
                                f"member {i}: " if self.p.k > 1 else "",
                                culprit(self.p.names, m, i, step), int(m["skipped"][i]))
        self.step = step
        recs: list[dict[str, Any] | None] = [None] * self.p.k
        instruments = [k for k in m if k.startswith(INSTRUMENTS)]
        if not (force or step % self.config.log_every == 0 or stats is not None
                or instruments):
            return recs
        now = time.perf_counter()
        rate = None
        if self.clock[0] is not None and step > self.clock[1]:
            rate = (step - self.clock[1]) / (now - self.clock[0])
        self.clock = (now, step)
        for i, mem in enumerate(self.members):
            if not mem.alive:
                continue
            tm = {k: float(m[k][i]) for k in ("loss", "lr", "grad_norm", "update_norm")}
            if "accuracy" in m:
                tm["accuracy"] = float(m["accuracy"][i])
            tm["skipped_steps"] = int(m["skipped"][i])
            if rate is not None:
                tm.update(self.throughput(rate))
            mem.writer.scalars(step, tm, "train")
            recs[i] = {"step": step, **tm}
            verdict = self.checkers[i].observe(step, tm["loss"], tm["grad_norm"],
                                               self.config.log_every)
            if verdict is not None:
                self.unhealthy(i, verdict, recs[i])
            if stats is not None and self.is_main:  # the member's histograms, theory overlay
                recs[i].update(monitor.write(mem.writer.tb, step, stats[i]))
            if instruments:
                recs[i].update(self.instruments(i, step, {k: float(m[k][i])
                                                          for k in instruments}))
        first = recs[0]
        if first is not None:
            u = self.unit
            self.bar.set_postfix(refresh=False, loss=f"{first['loss']:.4f}", **({
                f"{u[:3]}/s": f"{first[f'{u}_per_sec']:.0f}",
                "mfu": f"{first['mfu']:.1%}" if "mfu" in first else "n/a"}
                if f"{u}_per_sec" in first else {}))  # drawn at the next update
        return recs

    def instruments(self, i: int, step: int, values: dict[str, float]) -> dict[str, float]:
        """Member i's noise / sharpness scalars of this step, with 'noise/critical_batch' (the
        ratio of bias-corrected EMAs, decay NOISE_EMA, of tr(Sigma) and |G|^2 over the noise
        steps this process has run: McCandlish et al.'s way to tame the bias of the per-step
        ratio 'noise/b_simple'), written to TensorBoard (tags as named); returns them for the
        step's record."""
        if "noise/g2" in values and "noise/trace" in values:
            g2, trace, n = self.noise_ema[i]
            if math.isfinite(values["noise/g2"]) and math.isfinite(values["noise/trace"]):
                g2 = NOISE_EMA * g2 + (1 - NOISE_EMA) * values["noise/g2"]
                trace = NOISE_EMA * trace + (1 - NOISE_EMA) * values["noise/trace"]
                n += 1
                self.noise_ema[i] = (g2, trace, n)
            if n:
                values["noise/critical_batch"] = trace / g2 if g2 else math.nan
        tb = self.members[i].writer.tb
        if tb is not None:
            tb.add_scalars({k: v for k, v in values.items() if math.isfinite(v)}, step)
        return values

    def throughput(self, rate: float) -> dict[str, float]:
        """Steps/s, the member's own tokens (examples)/s, every member's per device, MFU."""
        u = self.unit
        per_device = rate * self.per_step * self.p.k / self.p.mesh.size
        out = {"steps_per_sec": rate, f"{u}_per_sec": rate * self.per_step,
               f"{u}_per_sec_per_device": per_device}
        mfu = hardware.mfu(self.flops, per_device, self.device_kind)
        if mfu is not None:
            out["mfu"] = mfu
        return out

    def diverge(self, i: int, step: int, m) -> None:
        """Record member i as diverged at `step` (its status at once; its state is frozen)."""
        latest = self.mngr.latest_step()
        message = (f"non-finite {culprit(self.p.names, m, i, step)}; nan_policy='halt' stopped "
                   f"the run (last good checkpoint: {f'step {latest}' if latest else 'none'} in "
                   f"{self.p.checkpoint_dir}); --config.nan_policy=skip skips such steps")
        mem = self.members[i]
        if self.p.k > 1:
            log.warning("member %d (%s): %s; the other members go on", i, mem.workdir.name,
                        message)
        mem.alive = False
        mem.outcome = Outcome("diverged", errors.DIVERGED, message, step)
        self.write_status(mem, step - 1)

    def unhealthy(self, i: int, v: health.Verdict, rec: dict[str, Any]) -> None:
        """A health rule fired for member i: say so ('warn') or stop it there ('halt'; its
        record of this step is written, its state is frozen)."""
        mem = self.members[i]
        who = f"member {i} ({mem.workdir.name}): " if self.p.k > 1 else ""
        if mem.config.health.policy != "halt":
            log.warning("%s%s: %s (health.policy='warn': training goes on)", who, v.status,
                        v.reason)
            return
        message = f"{v.status}: {v.reason}; health.policy='halt' stopped the run"
        if self.p.k > 1:
            log.warning("%s%s; the other members go on", who, message)
        code = errors.STALLED if v.status == health.STALLED else errors.DIVERGED
        mem.writer.record(rec)
        mem.records.append(rec)
        mem.alive = False
        mem.outcome = Outcome(v.status, code, message, v.step)
        self.write_status(mem, v.step)

    def evaluate(self, state, recs: list[dict[str, Any] | None]) -> None:
        """Each live member's eval_loss and eval_perplexity (LM) or eval_accuracy, into its
        record and TensorBoard eval/."""
        cfg, sums = self.config, [{} for _ in self.members]
        batches, n = self.p.eval_batches(), 0
        while not cfg.eval_batches or n < cfg.eval_batches:
            batch = next(batches, None)
            if batch is None:
                break
            n += 1
            out, _ = self.p.host(jax.device_get(self.p.eval_step(state, batch)), None)
            for i, total in enumerate(sums):
                for key, v in out.items():
                    total[key] = total.get(key, 0.0) + float(v[i])
        for mem, total, rec in zip(self.members, sums, recs, strict=True):
            if not mem.alive or not total or rec is None:
                continue
            res = {"eval_loss": total["loss_sum"] / total["count"]}
            if self.p.task == "lm":
                res["eval_perplexity"] = math.exp(min(res["eval_loss"], 80.0))
            else:
                res["eval_accuracy"] = total["correct"] / total["count"]
            mem.writer.scalars(self.step, {k[5:]: v for k, v in res.items()}, "eval")
            log.info("step %d: %s", self.step, ", ".join(f"{k}={v:.4g}" for k, v in res.items()))
            rec.update(res)

    def emit(self, recs: list[dict[str, Any] | None]) -> None:
        for mem, rec in zip(self.members, recs, strict=True):
            if rec is not None and mem.alive:
                mem.writer.record(rec)
                mem.records.append(rec)

    # -- the end

    def finish(self) -> None:
        """The outcome of every live member of a run that ended normally."""
        last = self.step
        for mem in self.members:
            if not mem.alive:
                continue
            steps = mem.config.steps
            status, code = "finished", errors.FINISHED
            if self.stop and last < self.end:
                status = signals_lib.STATUS[self.stop]
                code = errors.INTERRUPTED if status == "interrupted" else errors.FINISHED
                msg = (f"{status} at step {last}; checkpoint saved; rerun the same command to "
                       "resume")
            elif self.end < steps:
                msg = (f"stopped at step {last} of {steps} (stop_after); rerun without it to "
                       "continue")
            else:
                msg = f"finished at step {last} of {steps}"
            mem.outcome = Outcome(status, code, msg)

    def write_status(self, mem: Member, step: int) -> None:
        o, k = mem.outcome, self.p.k
        message = o.message
        if k > 1:  # a group member says where it ran (a group of one writes what a solo run does)
            i = self.members.index(mem)
            message += f" (vectorized: member {i} of {k} in {self.p.group_dir})"
        if self.is_main:
            workdir_lib.write_status(mem.workdir, status=o.status, step=step,
                                     steps=mem.config.steps, exit_code=o.exit_code,
                                     message=message, diverged_step=o.diverged_step)
        o.written = True

    def close(self, wait: bool = True) -> None:
        """Stop a trace, close the progress bar, the checkpoint manager (waiting for a save in
        flight unless aborting) and the metric writers; errors here are logged, not raised
        over the run's own."""
        try:
            self.stop_trace()
        except Exception as e:  # noqa: BLE001 - the run's outcome is already decided
            log.error("stopping the profiler trace failed: %s", errors.one_line(e))
        if self.bar is not None:
            self.bar.close()
        if wait:
            try:
                self.mngr.close()
            except Exception as e:  # noqa: BLE001
                log.error("closing the checkpoint manager failed: %s", errors.one_line(e))
        for mem in self.members:
            if mem.writer is not None:
                try:
                    mem.writer.close()
                except Exception as e:  # noqa: BLE001
                    log.error("closing the metric writers failed: %s", errors.one_line(e))
