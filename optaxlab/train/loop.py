"""A solo training run: validate, lock the workdir, resume, train/eval/checkpoint/log, clean up.

Order of a run (the lock is the first thing written to the workdir; a run refused at steps 1-3
leaves it byte-identical):
  1. validate the config, build the optimizer, model shapes and data pipelines (exit 2 on error);
  2. take WORKDIR/.lock (exit 5 if another live process holds it);
  3. with --restart, move the old run aside; else check that the newest checkpoint fits this
     config (exit 2 if not, lock released, nothing else touched);
  4. restore (corrupt checkpoints are moved aside, unreadable storage is exit 4), train;
  5. write WORKDIR/status.json, release the lock.

Steps 4-5 are the host loop `run.run` (the same one a vectorized group runs) driving a
`SoloProgram`: the compiled steps of `step.compile_steps` on the config's mesh. SIGTERM / SIGINT
stop it at a step boundary every process agrees on (`signals.Stopper`), after a checkpoint.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
import optax
from etils import epath
from jax.experimental import multihost_utils

from optaxlab import data as data_lib
from optaxlab import monitor
from optaxlab.train import checkpoint as ckpt_lib
from optaxlab.train import config as config_lib
from optaxlab.train import errors, optim
from optaxlab.train import mesh as mesh_lib
from optaxlab.train import run as run_lib
from optaxlab.train import signals as signals_lib
from optaxlab.train import state as state_lib
from optaxlab.train import step as step_lib
from optaxlab.train import workdir as workdir_lib
from optaxlab.train.errors import ConfigError
from optaxlab.train.run import save_config  # noqa: F401 - re-exported

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
    noise_step: Callable | None = None  # train_step with the noise fold (noise_every > 0)
    sharpness: Callable | None = None  # jitted sharpness_metrics (sharpness_every > 0)


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


COMPUTE_ONLY = ("attention_impl", "remat", "logits_chunk")


def fingerprint(config, task: str) -> dict[str, Any]:
    """The config fields a resumed run must share with its checkpoint: the model and the data
    stream (the optimizer state is compared leaf by leaf)."""
    data = {k: config.data.get(k) for k in ("name", "path", "dtype")}
    # How the model is computed (attention kernel, rematerialization, loss chunks) does not
    # change its parameters: a run may resume with another setting, and older checkpoints
    # written before these fields existed still resume.
    model = {k: v for k, v in config.model.to_dict().items() if k not in COMPUTE_ONLY}
    out = {"task": task, "model": model, "data": data, "seed": config.seed,
           "batch_size": config.batch_size}
    if task == "lm":
        out["seq_len"] = config.seq_len
    return _jsonable(out)


def _jsonable(obj):
    """`obj` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(obj, default=str))


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
        watch=watch, grad_accum_steps=config.grad_accum_steps)
    noise_step, sharpness = _instruments(config, plan, mesh, tx, graphdef, shardings, watch,
                                         abstract.params)
    return _Setup(config=config, plan=plan, mesh=mesh, end=end,
                  names=state_lib.param_names(abstract.params),
                  fingerprint=fingerprint(config, plan.task),
                  optimizer=_jsonable(config.optimizer.to_dict()), abstract=abstract,
                  init_fn=init_fn, train_ds=train_ds, val_ds=val_ds, train_step=train_step,
                  eval_step=eval_step, every=every, noise_step=noise_step,
                  sharpness=sharpness)


def _instruments(config, plan, mesh, tx, graphdef, shardings, watch, params):
    """(noise step, sharpness function) of config.monitor's noise_every / sharpness_every, each
    None when off. The noise step is a second compilation of the train step, with the
    gradient-noise fold (`step.noise_fold`), that the loop runs on the noise_every-th steps
    instead of the plain one, so the plain step stays the program it is without the
    instrument."""
    noise_every = config.monitor.get("noise_every") or 0
    sharpness_every = config.monitor.get("sharpness_every") or 0
    noise_step = sharpness = None
    batch_sharding, replicated = mesh_lib.batch_sharding(mesh), mesh_lib.replicated(mesh)
    if noise_every:
        k = config.grad_accum_steps
        fold = step_lib.noise_fold(state_lib.param_names(params), config.batch_size // k)
        noise_step, _ = step_lib.compile_steps(
            graphdef=graphdef, tx=tx, task=plan.task, state_shardings=shardings,
            batch_sharding=batch_sharding, replicated=replicated, watch=watch,
            grad_accum_steps=k, microbatch_fn=fold)
    if sharpness_every:
        theory = monitor.theory_settings(config.optimizer.name,
                                         optim.optimizer_hparams(config.optimizer))
        theory.update({k: config.monitor[k] for k in ("b1", "b2", "eps", "bias_correction")
                       if config.monitor.get(k) is not None})
        fn = functools.partial(step_lib.sharpness_metrics, graphdef=graphdef,
                               loss_fn=step_lib.LOSSES[plan.task], theory=theory,
                               iters=config.monitor.get("sharpness_iters") or 20)
        sharpness = jax.jit(step_lib.on_mesh(fn, mesh),
                            in_shardings=(shardings.params, shardings.rest,
                                          shardings.opt_state, batch_sharding),
                            out_shardings=replicated)
    return noise_step, sharpness


def _after_lock(setup: _Setup, workdir, holder, stopper, restart: bool) -> RunResult:
    """Steps 3-5 of a run (see the module docstring), the lock held by `holder`."""
    config = setup.config
    mngr = None
    try:
        if restart and jax.process_index() == 0:
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
    member = run_lib.Member(config, workdir)
    try:
        result = run_lib.run(SoloProgram(setup, workdir), [member], mngr, stopper, setup.end)
    finally:
        if holder is not None:
            workdir_lib.release(workdir, holder)
    return RunResult(records=member.records, state=result.state, start_step=result.start_step,
                     status=member.outcome.status, message=member.outcome.message)


class SoloProgram:
    """`run.Program` of one run: the trainer's compiled steps on the config's own mesh (its
    metrics get a leading member axis of 1 on the host); the checkpoint tree is the TrainState."""

    k = 1
    raise_on_divergence = True

    def __init__(self, setup: _Setup, workdir):
        self.s, self.workdir = setup, workdir
        self.task, self.mesh, self.names = setup.plan.task, setup.mesh, setup.names
        self.checkpoint_dir = workdir / "checkpoints"
        self.data_iter = None
        self.fixed_batch = None  # the sharpness instrument's batch: the first one trained on
        monitor_cfg = setup.config.monitor
        self.noise_every = monitor_cfg.get("noise_every") or 0
        self.sharpness_every = monitor_cfg.get("sharpness_every") or 0

    def restore(self, mngr, members):
        s = self.s
        restored = ckpt_lib.restore_latest(mngr, s.abstract, s.fingerprint, s.optimizer)
        self.data_iter = iter(s.train_ds)
        if restored is None:
            return 0, s.init_fn()
        start, state, meta = restored
        if isinstance(state, dict):  # a target-less restore gives dicts; ours gives TrainState
            state = state_lib.TrainState(**state)
        self.data_iter.set_state(meta["data_iterator"])
        log.info("resumed from the checkpoint at step %d in %s", start, self.checkpoint_dir)
        return start, state

    def _global(self, batch) -> dict[str, jax.Array]:
        return mesh_lib.global_batch(batch, self.mesh, self.s.config.batch_size)

    def batch(self):
        return self._global(next(self.data_iter))

    def train(self, state, batch, step: int):
        s = self.s
        noisy = self.noise_every and step % self.noise_every == 0
        state, metrics, stats = (s.noise_step if noisy else s.train_step)(state, batch)
        if self.sharpness_every:
            if self.fixed_batch is None:
                self.fixed_batch = batch
            if step % self.sharpness_every == 0:
                metrics = {**metrics, **s.sharpness(state.params, state.rest, state.opt_state,
                                                    self.fixed_batch)}
        return state, metrics, stats

    def host(self, metrics, stats):
        return ({k: np.asarray(v)[None] for k, v in metrics.items()},
                None if stats is None else [stats])

    def eval_batches(self):
        return (self._global(b) for b in self.s.val_ds)

    def eval_step(self, state, batch):
        return self.s.eval_step(state.params, state.rest, state.opt_state, batch)

    def tree(self, state):
        return state

    def meta(self, members) -> dict[str, Any]:
        return {"fingerprint": self.s.fingerprint,
                "config": _jsonable(self.s.config.to_dict()),
                "data_iterator": _jsonable(self.data_iter.get_state()),
                "process_count": jax.process_count()}

    def member_files(self, i: int) -> dict[str, str]:
        return {}
