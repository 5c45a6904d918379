"""The training loop: validate, lock the workdir, resume, train/eval/checkpoint/log, clean up.

Order of a run (the lock is the first thing written to the workdir; a run refused at steps 1-3
leaves it byte-identical):
  1. validate the config, build the optimizer, model shapes and data pipelines (exit 2 on error);
  2. take WORKDIR/.lock (exit 5 if another live process holds it);
  3. with --restart, move the old run aside; else check that the newest checkpoint fits this
     config (exit 2 if not, lock released, nothing else touched);
  4. restore (corrupt checkpoints are moved aside, unreadable storage is exit 4), train;
  5. write WORKDIR/status.json, release the lock.

Metrics are fetched one step behind (the device runs step t while the host reads step t-1),
except at checkpoint / eval / final / stop steps, which sync first, so that a non-finite step is
always caught before anything is saved. SIGTERM / SIGINT stop the loop at a step boundary every
process agrees on (`signals.Stopper`), after a checkpoint.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
import optax
import tqdm
from etils import epath
from jax.experimental import multihost_utils

from optaxlab import data as data_lib
from optaxlab import monitor
from optaxlab.train import checkpoint as ckpt_lib
from optaxlab.train import config as config_lib
from optaxlab.train import errors, optim
from optaxlab.train import mesh as mesh_lib
from optaxlab.train import metrics as metrics_lib
from optaxlab.train import signals as signals_lib
from optaxlab.train import state as state_lib
from optaxlab.train import step as step_lib
from optaxlab.train import workdir as workdir_lib
from optaxlab.train.errors import ConfigError, NonFiniteError

log = logging.getLogger("optaxlab.train")


class RunResult(NamedTuple):
    records: list[dict[str, Any]]  # what was appended to metrics.jsonl in this run
    state: state_lib.TrainState  # the final (sharded) train state
    start_step: int  # the step this run started from (> 0 when it resumed)
    status: str = "finished"  # 'finished' | 'preempted' (SIGTERM) | 'interrupted' (SIGINT)
    message: str = ""  # one line saying how the run ended (also in status.json)


class _Setup(NamedTuple):
    """Everything a run needs that is decided before the workdir is touched."""

    config: Any
    plan: config_lib.Plan
    mesh: Any
    end: int  # the step this run stops at
    names: list[str]  # parameter names, in leaf order
    fingerprint: dict[str, Any]  # what a checkpoint must share with this config
    optimizer: dict[str, Any]  # config.optimizer as JSON
    abstract: state_lib.TrainState  # ShapeDtypeStructs with shardings
    init_fn: Callable[[], state_lib.TrainState]
    train_ds: Any
    val_ds: Any
    train_step: Callable  # jitted; monitored through monitor.watch when every > 0
    eval_step: Callable
    every: int  # monitor every N steps (0: off)


def datasets(config, task: str, rows):
    """(train dataset, val dataset or None) yielding this process's `rows` of each global
    batch (mesh.global_batch assembles the global arrays)."""
    if task == "lm":
        make = functools.partial(data_lib.lm_dataset, config.data, seq_len=config.seq_len,
                                 batch_size=config.batch_size, seed=config.seed, rows=rows,
                                 vocab_size=config.model.vocab_size)
    else:
        make = functools.partial(data_lib.vision_dataset, config.data,
                                 batch_size=config.batch_size, seed=config.seed, rows=rows)
    return make(split="train"), (make(split="val") if config.eval_every else None)


def monitor_watch(config, tx: optax.GradientTransformation,
                  learning_rate=None) -> optax.GradientTransformation:
    """`tx` wrapped by the monitor of `config.monitor` (`monitor.watch`), with the theory
    settings (b1, b2, eps) of the config's optimizer unless config.monitor sets them;
    `learning_rate` as in `monitor.watch` (None: read from tx's inject_hyperparams state)."""
    known = monitor.theory_settings(config.optimizer.name,
                                    optim.optimizer_hparams(config.optimizer))
    try:
        return monitor.watch(tx, config.monitor, learning_rate=learning_rate, **{
            k: v for k, v in known.items() if config.monitor.get(k) is None})
    except ValueError as e:
        raise ConfigError(f"config.monitor: {e}") from e


def fingerprint(config, task: str) -> dict[str, Any]:
    """The config fields a resumed run must share with its checkpoint: the model and the data
    stream (the optimizer state is compared leaf by leaf)."""
    data = {k: config.data.get(k) for k in ("name", "path", "dtype")}
    out = {"task": task, "model": config.model.to_dict(), "data": data, "seed": config.seed,
           "batch_size": config.batch_size}
    if task == "lm":
        out["seq_len"] = config.seq_len
    return _jsonable(out)


def _jsonable(obj):
    """`obj` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(obj, default=str))


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


def _take_lock(workdir) -> dict[str, Any] | None:
    """Process 0 takes the workdir lock; every process learns whether it got it."""
    holder, refused = None, None
    if jax.process_index() == 0:
        try:
            holder = workdir_lib.acquire(workdir)
        except errors.WorkdirLockedError as e:
            refused = e
    if jax.process_count() > 1:
        got = multihost_utils.broadcast_one_to_all(np.int32(refused is None))
        if not int(got) and refused is None:
            refused = errors.WorkdirLockedError(f"workdir {workdir} is locked (see process 0)")
    if refused is not None:
        raise refused
    return holder


def train(config, workdir, *, devices=None, stop_after: int | None = None,
          wrap_optimizer: Callable[[optax.GradientTransformation],
                                   optax.GradientTransformation] | None = None,
          restart: bool = False) -> RunResult:
    """Train `config` in `workdir` (resuming from its newest usable checkpoint).

    `devices`: the devices of the mesh (default all). `stop_after`: stop (and checkpoint) at
    that step instead of config.steps; the schedule still spans config.steps.
    `wrap_optimizer(tx) -> tx`: wraps the registry optimizer the config builds (the way to put
    any extra optax transform in the chain). `restart`: move an existing run in `workdir`
    aside (to WORKDIR/previous_runs/<time>/) and start from step 0. `workdir` may be any path
    `etils.epath` understands (local, gs://, ...).

    Raises ConfigError / DataError / IncompatibleCheckpointError (exit 2), NonFiniteError (3),
    IOFailure or other I/O errors (4), WorkdirLockedError (5); KeyboardInterrupt after a second
    SIGINT. SIGTERM / SIGINT return normally with status 'preempted' / 'interrupted'.
    """
    setup = _prepare(config, devices, stop_after, wrap_optimizer)
    # The config is valid: take the workdir, then look at its checkpoints (read-only).
    workdir = epath.Path(workdir)
    if workdir_lib.is_local(workdir):
        workdir = epath.Path(os.path.abspath(workdir))
    holder = _take_lock(workdir)
    with signals_lib.Stopper(setup.mesh) as stopper:  # from here a signal ends a run cleanly
        return _after_lock(setup, workdir, holder, stopper, restart)


def _prepare(config, devices, stop_after, wrap_optimizer) -> _Setup:
    """Step 1 of a run: validate, build the optimizer, shapes, data and steps (no I/O in the
    workdir; ConfigError / DataError on bad input)."""
    config = copy.deepcopy(config)
    devices = list(jax.devices() if devices is None else devices)
    plan = config_lib.validate(config, num_devices=len(devices))
    end = config.steps if stop_after is None else int(stop_after)
    if not 0 < end <= config.steps:
        raise ConfigError(f"stop_after={stop_after} must be in [1, config.steps={config.steps}]")
    every = config.monitor.get("every", 0)

    mesh = mesh_lib.make_mesh(plan.mesh_shape, devices)
    tx = optim.make_optimizer(config.optimizer, config.steps, wrap_optimizer)
    watch = monitor_watch(config, tx) if every else None
    try:
        graphdef, init_fn, abstract, shardings = state_lib.create(config.model, tx, mesh,
                                                                  config.seed)
    except ValueError as e:
        raise ConfigError(f"config.model: {e}") from e
    rows = mesh_lib.process_rows(mesh, config.batch_size)
    try:
        train_ds, val_ds = datasets(config, plan.task, rows)
    except data_lib.DataError:
        raise
    except ValueError as e:
        raise ConfigError(f"config.data: {e}") from e
    if jax.process_count() > 1:
        log.info("process %d reads rows %d-%d of each global batch of %d", jax.process_index(),
                 rows[0], rows[-1], config.batch_size)
    train_step, eval_step = step_lib.compile_steps(
        graphdef=graphdef, tx=tx, task=plan.task, state_shardings=shardings,
        batch_sharding=mesh_lib.batch_sharding(mesh), replicated=mesh_lib.replicated(mesh),
        watch=watch)
    return _Setup(config=config, plan=plan, mesh=mesh, end=end,
                  names=state_lib.param_names(abstract.params),
                  fingerprint=fingerprint(config, plan.task),
                  optimizer=_jsonable(config.optimizer.to_dict()), abstract=abstract,
                  init_fn=init_fn, train_ds=train_ds, val_ds=val_ds, train_step=train_step,
                  eval_step=eval_step, every=every)


def _after_lock(setup: _Setup, workdir, holder, stopper, restart: bool) -> RunResult:
    """Steps 3-5 of a run (see the module docstring), the lock held by `holder`."""
    config = setup.config
    is_main = jax.process_index() == 0
    mngr = None
    try:
        if restart and is_main:
            workdir_lib.move_aside(workdir)
        if restart and jax.process_count() > 1:
            multihost_utils.sync_global_devices("optaxlab_restart")
        mngr = ckpt_lib.manager(workdir / "checkpoints", keep=config.keep_checkpoints,
                                async_save=config.async_checkpointing)
        ckpt_lib.check_compatible(mngr, setup.abstract, setup.fingerprint, setup.optimizer)
    except BaseException:
        if mngr is not None:
            mngr.close()
        if holder is not None:
            workdir_lib.release(workdir, holder)
        raise

    run = _Run(setup, workdir, mngr)
    outcome = {"status": "failed", "exit_code": errors.BUG, "message": "", "diverged_step": None}
    aborted = False
    try:
        result = run.loop(stopper)
        mngr.wait_until_finished()  # the checkpoint is complete before we say so
        code = errors.INTERRUPTED if result.status == "interrupted" else errors.FINISHED
        outcome = {"status": result.status, "exit_code": code, "message": result.message,
                   "diverged_step": None}
        return result
    except BaseException as e:
        outcome["exit_code"] = errors.exit_code(e)
        outcome["message"] = (f"I/O failure: {errors.io_failure(e)}"
                              if outcome["exit_code"] == errors.IO_FAILURE else errors.one_line(e))
        if isinstance(e, NonFiniteError):
            outcome.update(status="diverged", diverged_step=run.diverged_step)
        elif isinstance(e, KeyboardInterrupt):
            aborted = True
            outcome.update(status="interrupted", message=(
                f"aborted by a second SIGINT after step {run.step}; no checkpoint of it "
                f"(last: {mngr.latest_step()})"))
        raise
    finally:
        run.close(wait=not aborted)
        if is_main:
            try:
                workdir_lib.write_status(workdir, step=run.step, steps=config.steps, **outcome)
            except OSError as e:
                log.error("could not write %s: %s", workdir / workdir_lib.STATUS, e)
            if holder is not None:
                workdir_lib.release(workdir, holder)


class _Run:
    """One run attempt after the workdir is taken: restore, loop, close."""

    def __init__(self, setup: _Setup, workdir, mngr):
        self.setup, self.workdir, self.mngr = setup, workdir, mngr
        self.is_main = jax.process_index() == 0
        self.writer = self.bar = None
        self.step = 0  # last completed step
        self.diverged_step = None
        self.status = "finished"

    def _restore(self):
        s = self.setup
        restored = ckpt_lib.restore_latest(self.mngr, s.abstract, s.fingerprint, s.optimizer)
        data_iter = iter(s.train_ds)
        if restored is None:
            return 0, s.init_fn(), data_iter
        start, state, meta = restored
        if isinstance(state, dict):  # a target-less restore gives dicts; ours gives TrainState
            state = state_lib.TrainState(**state)
        data_iter.set_state(meta["data_iterator"])
        log.info("resumed from the checkpoint at step %d in %s", start,
                 self.workdir / "checkpoints")
        return start, state, data_iter

    def _meta(self, data_iter) -> dict[str, Any]:
        return {"fingerprint": self.setup.fingerprint,
                "config": _jsonable(self.setup.config.to_dict()),
                "data_iterator": _jsonable(data_iter.get_state()),
                "process_count": jax.process_count()}

    def loop(self, stopper: signals_lib.Stopper) -> RunResult:
        s = self.setup
        config, plan, mesh, workdir = s.config, s.plan, s.mesh, self.workdir
        start, state, data_iter = self._restore()
        self.step = start
        if self.is_main:
            save_config(config, workdir, start)
        writer = self.writer = metrics_lib.Writer(workdir, resume_step=start,
                                                  enabled=self.is_main)
        per_step = config.batch_size * (config.seq_len if plan.task == "lm" else 1)
        unit = "tokens" if plan.task == "lm" else "examples"
        bar = self.bar = tqdm.tqdm(total=s.end, initial=start,
                                   disable=not (config.progress_bar and self.is_main),
                                   file=sys.stderr, dynamic_ncols=True, desc="train")
        records: list[dict[str, Any]] = []
        clock = {"time": None, "step": start}
        names, end = s.names, s.end

        def batch_of(it) -> dict[str, jax.Array]:
            return mesh_lib.global_batch(next(it), mesh, config.batch_size)

        def evaluate(state) -> dict[str, float]:
            sums: dict[str, float] = {}
            it, n = iter(s.val_ds), 0
            while not config.eval_batches or n < config.eval_batches:
                try:
                    batch = batch_of(it)
                except StopIteration:
                    break
                n += 1
                out = s.eval_step(state.params, state.rest, state.opt_state, batch)
                for k, v in jax.device_get(out).items():
                    sums[k] = sums.get(k, 0.0) + float(v)
            if not sums:
                return {}
            result = {"eval_loss": sums["loss_sum"] / sums["count"]}
            if plan.task == "lm":
                result["eval_perplexity"] = math.exp(min(result["eval_loss"], 80.0))
            else:
                result["eval_accuracy"] = sums["correct"] / sums["count"]
            writer.scalars(int(state.step), {k[5:]: v for k, v in result.items()}, "eval")
            log.info("step %d: %s", int(state.step),
                     ", ".join(f"{k}={v:.4g}" for k, v in result.items()))
            return result

        def culprit(m, step: int) -> str:
            for flags, what in ((m["grad_finite"], "gradient"), (m["param_finite"], "update")):
                bad = [n for n, ok in zip(names, flags, strict=True) if not ok]
                if bad:
                    return f"{what} at step {step} (first offending parameter: {bad[0]})"
            if not bool(m["state_finite"]):
                return f"optimizer state at step {step}"
            return f"loss ({float(m['loss'])}) at step {step}"

        def handle(pending, force: bool) -> tuple[dict[str, Any] | None, int]:
            """Host side of one finished step: NaN policy, then its record (if it is logged),
            and the agreed stop flag."""
            step, m, stats, stop = pending
            m, stats, stop = jax.device_get((m, stats, stop))
            if not bool(m["finite"]):
                what = culprit(m, step)
                if config.nan_policy == "halt":
                    self.diverged_step = step
                    latest = self.mngr.latest_step()
                    raise NonFiniteError(
                        f"non-finite {what}; nan_policy='halt' stopped the run "
                        f"(last good checkpoint: {f'step {latest}' if latest else 'none'} in "
                        f"{workdir / 'checkpoints'}); --config.nan_policy=skip skips such steps")
                log.warning("non-finite %s: update skipped (%d skipped so far)", what,
                            int(m["skipped"]))
            self.step = step
            if not (force or step % config.log_every == 0 or stats):
                return None, int(stop)
            now = time.perf_counter()
            train_metrics = {k: float(m[k]) for k in ("loss", "lr", "grad_norm", "update_norm")}
            if "accuracy" in m:
                train_metrics["accuracy"] = float(m["accuracy"])
            train_metrics["skipped_steps"] = int(m["skipped"])
            if clock["time"] is not None and step > clock["step"]:
                steps_per_sec = (step - clock["step"]) / (now - clock["time"])
                train_metrics["steps_per_sec"] = steps_per_sec
                train_metrics[f"{unit}_per_sec"] = steps_per_sec * per_step
            clock.update(time=now, step=step)
            writer.scalars(step, train_metrics, "train")
            record = {"step": step, **train_metrics}
            if stats is not None and self.is_main:
                record.update(monitor.write(writer.tb, step, stats))
            bar.set_postfix(loss=f"{train_metrics['loss']:.4f}", refresh=False, **(
                {f"{unit[:3]}/s": f"{train_metrics[f'{unit}_per_sec']:.0f}"}
                if f"{unit}_per_sec" in train_metrics else {}))  # drawn at the next update
            return record, int(stop)

        def emit(record: dict[str, Any] | None) -> None:
            if record is not None:
                writer.record(record)
                records.append(record)

        if start >= end:
            log.info("nothing to do: the workdir is already at step %d (end: %d)", start, end)
        pending, stop = None, signals_lib.NONE
        for step in range(start + 1, end + 1):
            batch = batch_of(data_iter)
            state, m, stats = s.train_step(state, batch)
            flag = stopper.poll()
            bar.update(1)
            if pending is not None:
                record, sig = handle(pending, force=False)
                emit(record)
                stop = max(stop, sig)
            pending = (step, m, stats if s.every and step % s.every == 0 else None, flag)
            do_eval = bool(config.eval_every) and (step % config.eval_every == 0 or step == end)
            do_save = step % config.checkpoint_every == 0 or step == end
            if do_eval or do_save or stop:
                record, sig = handle(pending, force=True)
                pending = None
                stop = max(stop, sig)
                if do_eval:
                    record.update(evaluate(state))
                emit(record)
                if do_save or stop:
                    ckpt_lib.save(self.mngr, step, state, self._meta(data_iter))
                writer.flush()
                clock.update(time=time.perf_counter(), step=step)  # throughput excludes these
                if stop and step < end:
                    break
        if pending is not None:
            record, _ = handle(pending, force=True)
            emit(record)
        self.step = int(jax.device_get(state.step))
        if stop and self.step < end:
            self.status = signals_lib.STATUS[stop]
            message = (f"{self.status} at step {self.step}; checkpoint saved; rerun the same "
                       "command to resume")
        elif end < config.steps:
            message = (f"stopped at step {self.step} of {config.steps} (stop_after); rerun "
                       "without it to continue")
        else:
            message = f"finished at step {self.step} of {config.steps}"
        return RunResult(records=records, state=state, start_step=start, status=self.status,
                         message=message)

    def close(self, wait: bool = True) -> None:
        """Close the progress bar, checkpoint manager (waiting for a save in flight unless
        aborting) and metric writers; errors here are logged, not raised over the run's own."""
        if self.bar is not None:
            self.bar.close()
        if wait:
            try:
                self.mngr.close()
            except Exception as e:  # noqa: BLE001 - the run's outcome is already decided
                log.error("closing the checkpoint manager failed: %s", errors.one_line(e))
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception as e:  # noqa: BLE001
                log.error("closing the metric writers failed: %s", errors.one_line(e))
