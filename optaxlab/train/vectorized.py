"""Vectorized groups: K training runs that differ only in numeric optimizer hyperparameters and
seed, run as one jitted program with a leading "member" axis.

    result = train_group(configs, workdirs, group_dir)   # configs[k] trains into workdirs[k]

What makes it one program:
- the numeric hyperparameters of the registry optimizer (`traced_hparams`: every number that is
  not one of `optaxlab.optimizers.static_hparams`) and the peak learning rate are *traced*
  inputs: `optax.inject_hyperparams` keeps them in the optimizer state, and the schedule is
  `lr_peak * shape(count)` (the trainer's warmup/cosine schedule with peak 1), so one compiled
  step serves every member of a group, every group with the same `signature`, and every group
  run one after another in this process (the compiled functions are cached by signature);
- the trainer's own step over the member axis: its model half (`step.loss_and_grads`) and
  `step.eval_step` member by member (`jax.vmap` of `member_batch` members at a time, a
  `jax.lax.map` loop over such chunks: one at a time on CPU), its optimizer half
  (`step.apply_gradients`) vmapped over all members; each member is initialized from its own
  seed (the same `nnx.Rngs` key as its solo run) and reads its own Grain iterators (the solo
  run's batches);
- the programs are compiled before the first step, each by one of the processes that need it
  at the same time (`compilation.compile_shared`: a sweep's workers), the others loading it
  from JAX's persistent compilation cache.

Each member writes what its solo run writes into its own workdir (metrics.jsonl, TensorBoard
train/ and eval/ scalars, the monitor's histograms and theory overlay when monitor.every > 0,
config.json, status.json) through `metrics.Writer` and `workdir.write_status`, plus
WORKDIR/group.json naming its group. The group's Orbax checkpoint
(the stacked state, checksummed like a solo one, with every member's data-iterator position)
lives in GROUP_DIR/checkpoints/<step>/; rerunning `train_group` with the same members resumes it.

Divergence (nan_policy='halt'): a member whose step is non-finite is frozen on the device from
that step on (its state stays the last finite one), recorded as diverged at that step (status
'diverged', exit code 3, its metrics end at the step before, as a solo run's) and the others go
on. With nan_policy='skip' members skip such steps exactly as solo runs do.

Sharding: the member axis is split over `devices` (a 1-D mesh with axis 'members'); each member
is computed whole on one device (its own config's mesh must resolve to one device). The model is
not sharded inside a member: groups are for models that fit on one device.

Not vectorized (`groupable` says why; the sweep runner runs such points solo): configs whose
own mesh needs several devices. Hyperparameters that change the chain's structure (None vs a
number, strings, bools, loop counts), and with the monitor on its theory constants (b1, b2,
eps), differ between groups, not within one.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import inspect
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from optaxlab import models, monitor, optimizers
from optaxlab.train import checkpoint as ckpt_lib
from optaxlab.train import compilation, errors, optim
from optaxlab.train import config as config_lib
from optaxlab.train import loop as loop_lib
from optaxlab.train import metrics as metrics_lib
from optaxlab.train import signals as signals_lib
from optaxlab.train import state as state_lib
from optaxlab.train import step as step_lib
from optaxlab.train import workdir as workdir_lib
from optaxlab.train.errors import ConfigError

log = logging.getLogger("optaxlab.train")

MEMBER_AXIS = "members"
GROUP_JSON = "group.json"  # WORKDIR/group.json: the group a member was last trained in
PEAK = "lr_peak"  # the injected peak learning rate (hyperparams['learning_rate'] is the shape)
# Fields that may differ between members (besides the traced optimizer hyperparameters).
PER_MEMBER = ("seed", "optimizer.learning_rate", "progress_bar")


# ------------------------------------------------------------------------------ grouping


# With the monitor on, the hyperparameters its theory overlay takes as constants
# (`monitor.theory_settings`) are not traced: members that differ in them are different groups.
MONITOR_CONSTANTS = ("b1", "b2", "eps", "beta")


def traced_hparams(config) -> dict[str, float | int]:
    """The registry hyperparameters of `config.optimizer` that become traced inputs: numbers
    (not bools, not None) that are not `optimizers.static_hparams` (loop counts, sizes), nor,
    with the monitor on, `MONITOR_CONSTANTS`. Floats (and ints of float-typed hparams, e.g.
    weight_decay=0) are float; other ints stay int."""
    opt_cfg = config.optimizer
    static = set(optimizers.static_hparams(opt_cfg.name))
    if config.monitor.get("every", 0):
        static |= set(MONITOR_CONSTANTS) | optimizers.theory_hparams(opt_cfg.name)
    types = optimizers.hparam_types(opt_cfg.name)
    out: dict[str, float | int] = {}
    for key, value in optim.optimizer_hparams(opt_cfg).items():
        if key in static or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out[key] = float(value) if isinstance(value, float) or types.get(key) is float else value
    return out


def signature(config) -> dict[str, Any]:
    """What every member of a group shares: the whole config but the seed, the peak learning
    rate and the values of the traced hyperparameters (their names and kinds stay)."""
    d = config.to_dict()
    d.pop("seed", None)
    d.pop("progress_bar", None)
    opt = d["optimizer"]
    opt.pop("learning_rate", None)
    for key, value in traced_hparams(config).items():
        opt[key] = f"<traced {type(value).__name__}>"
    return json.loads(json.dumps(d, default=str, sort_keys=True))


def signature_key(config) -> str:
    """`signature(config)` as one string (equal strings: the configs can share a group)."""
    return json.dumps(signature(config), sort_keys=True)


def groupable(config) -> str | None:
    """None if `config` can run as a group member, else why not (one line)."""
    try:
        config_lib.validate(config, num_devices=1)
    except ConfigError as e:
        return f"{errors.one_line(e)} (a group member runs on one device)"
    return optimizers.untraceable(config.optimizer.name, optim.optimizer_hparams(
        config.optimizer), list(traced_hparams(config)))


def group_name(names: Sequence[str]) -> str:
    """A stable folder name for the group of members `names` (order matters: it is the member
    axis)."""
    digest = hashlib.sha1("\n".join(names).encode()).hexdigest()[:12]
    return f"group-{digest}"


# ------------------------------------------------------------------------------ program


def _factory(name: str, static: dict[str, Any], traced: Sequence[str]):
    """A factory with an explicit signature (learning_rate, lr_peak, *traced) for
    `optax.inject_hyperparams`: builds registry optimizer `name` with lr = shape * peak."""
    inner = optimizers.get(name)

    def factory(learning_rate, **hps):
        peak = hps.pop(PEAK)
        return inner(learning_rate * peak, **static, **hps)

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    factory.__signature__ = inspect.Signature(
        [inspect.Parameter(k, kind) for k in ("learning_rate", PEAK, *traced)])
    return factory


class _Program(NamedTuple):
    """The compiled pieces shared by every group with one signature, K and device set."""

    tx: optax.GradientTransformation
    graphdef: Any
    abstract: Any  # {'state': TrainState, 'active': bool[K]} of ShapeDtypeStructs
    init: Any  # jitted (seeds[K], hparams{k: [K]}) -> TrainState
    train: Any  # jitted (state, batch, active) -> (state, metrics, active, monitor stats)
    evaluate: Any  # jitted (params, rest, opt_state, batch) -> sums per member
    sharding: NamedSharding
    names: list[str]
    traced: list[str]
    compiled: dict[str, Any]  # name -> jax.stages.Compiled, filled by _GroupRun._compile


_PROGRAMS: dict[tuple, _Program] = {}


def _member_init(model_cfg, tx_of):
    def init(seed, hps):
        with nnx.use_eager_sharding(False):  # the key of nnx.Rngs(seed), from a traced seed
            model = models.create(model_cfg, rngs=nnx.Rngs(jax.random.key(seed)))
        _, params, rest = state_lib.split(model)
        zero = jnp.zeros((), jnp.int32)
        return state_lib.TrainState(zero, params, rest, tx_of(hps).init(params), zero)

    return init


def default_member_batch(k: int, platform: str | None = None) -> int:
    """How many members one device computes at once with `jax.vmap` (the rest in a
    `jax.lax.map` loop over such chunks, inside the same program): all of them on GPU/TPU,
    1 on CPU. Measured reason (lm_tiny, K=8, 2-core CPU, jax 0.10): the vmapped forward pass
    took 138 ms against 56 ms for lax.map over the 8 unbatched members, forward+backward 639 vs
    245 ms (XLA:CPU emits slower code for the batched attention/einsum graph, while plain
    batched matmuls alone were faster); on CPU the win of a group is one compile and one
    dispatch per step for K runs, not wider kernels."""
    platform = platform or jax.default_backend()
    return k if platform in ("gpu", "cuda", "rocm", "tpu") else 1


def _member_loop(fn, args, member_batch: int):
    """fn applied to every member of the stacked `args` (leading axis K), `member_batch` at a
    time with `jax.vmap`, looping over the chunks with `jax.lax.map`."""
    k = jax.tree.leaves(args)[0].shape[0]
    if member_batch >= k:
        return jax.vmap(fn)(*args)
    return jax.lax.map(lambda a: fn(*a), args,
                       batch_size=member_batch if member_batch > 1 else None)


def _over_members(fn, args, mesh: Mesh, member_batch: int):
    """`_member_loop` on each device's own members (`jax.shard_map` over 'members' when the
    mesh has several devices)."""
    local = lambda *xs: _member_loop(fn, xs, member_batch)
    if mesh.size == 1:
        return local(*args)
    spec = PartitionSpec(MEMBER_AXIS)
    return jax.shard_map(local, mesh=mesh, in_specs=spec, out_specs=spec,
                         check_vma=False)(*args)


def _group_train_step(state, batch, active, *, graphdef, tx, loss_fn, halt: bool, mesh: Mesh,
                      member_batch: int, monitored=None):
    """The trainer's train step over members: its model half (`step.loss_and_grads`) member by
    member (`_over_members`), its optimizer half (`step.apply_gradients`: elementwise and
    per-member reductions) vmapped over all members at once. A member with `active` False keeps
    its state (frozen), and under halt a non-finite step deactivates its member.

    Measured reason for the split (lm_tiny, K=4, one core, jax 0.10.2): the whole step inside
    the member loop compiled in 14.9 s, the model half alone in a loop 4.7-6.0 s and the
    optimizer half vmapped 2.5 s (the optimizer inside the loop: 3.0 s, and K small kernels per
    leaf instead of one).

    `monitored` (the monitor on): the whole step, monitor included, member by member (in the
    member loop the monitor's every-N-steps `lax.cond` stays a branch; vmapped, as on GPU/TPU
    with member_batch = K, it computes the statistics on every step). Returns (state,
    metrics, active, the monitor's statistics or None)."""
    if monitored is not None:
        new, metrics, stats = _over_members(monitored, (state, batch), mesh, member_batch)
    else:
        model_half = functools.partial(step_lib.loss_and_grads, graphdef=graphdef,
                                       loss_fn=loss_fn)
        grads = _over_members(model_half, (state.params, state.rest, batch), mesh, member_batch)
        new, metrics, stats = jax.vmap(functools.partial(step_lib.apply_gradients, tx=tx))(
            state, grads)
    go = active & metrics["finite"] if halt else active

    def keep(n, o):
        return jnp.where(go.reshape(go.shape + (1,) * (n.ndim - 1)), n, o)

    return jax.tree.map(keep, new, state), metrics, go, stats


def _program(config, k: int, mesh: Mesh, task: str, member_batch: int) -> _Program:
    key = (signature_key(config), k, tuple(d.id for d in mesh.devices.flat), member_batch)
    if key in _PROGRAMS:
        return _PROGRAMS[key]
    opt_cfg = config.optimizer
    traced = list(traced_hparams(config))
    static = {k_: v for k_, v in optim.optimizer_hparams(opt_cfg).items() if k_ not in traced}
    shape_cfg = copy.deepcopy(opt_cfg)
    shape_cfg.learning_rate = 1.0
    shape = optim.learning_rate_schedule(shape_cfg, config.steps)
    inject = optax.inject_hyperparams(_factory(opt_cfg.name, static, traced))

    def tx_of(hps):
        return inject(learning_rate=shape, **hps)

    placeholder = {PEAK: 1.0, **traced_hparams(config)}
    tx = tx_of(placeholder)  # update reads the numeric hparams from the state, not these
    sharding = NamedSharding(mesh, PartitionSpec(MEMBER_AXIS))
    init_one = _member_init(config.model, tx_of)
    abstract_state = jax.eval_shape(jax.vmap(init_one), jax.ShapeDtypeStruct((k,), jnp.int32),
                                    {n: jax.ShapeDtypeStruct((k,), jnp.asarray(v).dtype)
                                     for n, v in placeholder.items()})
    shardings = jax.tree.map(lambda _: sharding, abstract_state)
    abstract = {"state": jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), abstract_state),
        "active": jax.ShapeDtypeStruct((k,), jnp.bool_, sharding=sharding)}
    graphdef, _ = state_lib.param_specs(config.model)
    loss_fn = step_lib.LOSSES[task]
    monitored = None
    if config.monitor.get("every", 0):
        loop_lib.monitor_watch(config, tx)  # a bad monitor config fails here, as solo

        def monitored(state, batch):  # one member: its monitor divides by its own lr
            peak = state.opt_state.hyperparams[PEAK]
            watch = loop_lib.monitor_watch(config, tx, learning_rate=lambda n: shape(n) * peak)
            return step_lib.train_step(state, batch, graphdef=graphdef, tx=tx, loss_fn=loss_fn,
                                       watch=watch)

    # Members initialized like the step runs them (on CPU a lax.map loop: 4.7 s to compile for
    # lm_tiny at K=4, against 9.8 s for jax.vmap(init_one); same values).
    # (not in shard_map: the model's own sharding annotations name axes this mesh lacks).
    init = jax.jit(lambda seeds, hps: _member_loop(init_one, (seeds, hps), member_batch),
                   out_shardings=shardings)
    train = jax.jit(functools.partial(_group_train_step, graphdef=graphdef, tx=tx,
                                      loss_fn=loss_fn, halt=config.nan_policy == "halt",
                                      mesh=mesh, member_batch=member_batch,
                                      monitored=monitored),
                    in_shardings=(shardings, sharding, sharding),
                    out_shardings=(shardings, sharding, sharding, sharding),
                    donate_argnums=(0,))
    one_eval = functools.partial(step_lib.eval_step, graphdef=graphdef, loss_fn=loss_fn)
    evaluate = jax.jit(lambda *a: _over_members(one_eval, a, mesh, member_batch),
                       in_shardings=(shardings.params, shardings.rest, shardings.opt_state,
                                     sharding), out_shardings=sharding)
    names = state_lib.param_names(abstract_state.params)
    program = _Program(tx, graphdef, abstract, init, train, evaluate, sharding, names, traced,
                       {})
    _PROGRAMS[key] = program
    return program


def member_mesh(k: int, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh ('members',) over `devices` (default: as many of all devices as divide K)."""
    if devices is None:
        devices = jax.devices()[:math.gcd(k, jax.device_count())]
    devices = list(devices)
    if k % len(devices):
        raise ConfigError(f"a group of {k} members cannot be split over {len(devices)} devices; "
                          f"use a member count divisible by {len(devices)} or fewer devices")
    return Mesh(np.asarray(devices), (MEMBER_AXIS,))


# ------------------------------------------------------------------------------ the run


class GroupResult(NamedTuple):
    records: list[list[dict[str, Any]]]  # per member: what was appended to its metrics.jsonl
    state: state_lib.TrainState  # the stacked final state (leading axis: members)
    start_step: int
    statuses: list[str]  # per member: finished | preempted | interrupted | diverged | failed
    exit_codes: list[int]  # per member: the exit code its solo run would have had
    messages: list[str]


def check_group(configs: Sequence[Any]) -> str:
    """The common task of `configs`; ConfigError unless they can share one program."""
    if not configs:
        raise ConfigError("a group needs at least one config")
    tasks = set()
    for i, c in enumerate(configs):
        why = groupable(c)
        if why:
            raise ConfigError(f"member {i}: {why}")
        tasks.add(config_lib.validate(c, num_devices=1).task)
    first = signature(configs[0])
    for i, c in enumerate(configs[1:], 1):
        other = signature(c)
        if other != first:
            diffs = ckpt_lib.differences(first, other)  # the same wording
            raise ConfigError(f"member {i} cannot share a group with member 0: "
                              f"{'; '.join(diffs[:3])} (only {', '.join(PER_MEMBER)} and numeric "
                              "optimizer hyperparameters may differ)")
    return tasks.pop()


def train_group(configs: Sequence[Any], workdirs: Sequence[Any], group_dir, *,
                devices: Sequence[jax.Device] | None = None,
                stop_after: int | None = None,
                member_batch: int | None = None) -> GroupResult:
    """Train `configs[k]` into `workdirs[k]` as one vectorized program (see the module
    docstring); resume from GROUP_DIR/checkpoints when it holds this group's checkpoint.

    `devices`: the member axis is split over them (default: as many devices as divide K).
    `member_batch`: members one device computes at once with jax.vmap, the others looped over
    with jax.lax.map in the same program (default `default_member_batch`: all on GPU/TPU, 1 on
    CPU).
    Raises ConfigError / DataError (nothing written), WorkdirLockedError; per-member outcomes
    (diverged, finished, preempted) are in the result and in each workdir's status.json.
    """
    configs = [copy.deepcopy(c) for c in configs]
    if len(configs) != len(workdirs):
        raise ConfigError(f"{len(configs)} configs but {len(workdirs)} workdirs")
    task = check_group(configs)
    k = len(configs)
    base = configs[0]
    end = base.steps if stop_after is None else int(stop_after)
    if not 0 < end <= base.steps:
        raise ConfigError(f"stop_after={stop_after} must be in [1, config.steps={base.steps}]")
    mesh = member_mesh(k, devices)
    local = k // mesh.size
    member_batch = min(local, member_batch or default_member_batch(
        local, mesh.devices.flat[0].platform))
    program = _program(base, k, mesh, task, member_batch)
    rows = np.arange(base.batch_size)
    datasets = [loop_lib.datasets(c, task, rows) for c in configs]  # the
    # trainer's own pipelines, so that each member reads exactly its solo run's batches
    workdirs = [epath.Path(os.path.abspath(w)) for w in workdirs]
    group_dir = epath.Path(os.path.abspath(group_dir))
    fingerprint = {"members": [{**loop_lib.fingerprint(c, task),
                                "learning_rate": float(c.optimizer.learning_rate),
                                "traced": traced_hparams(c)} for c in configs]}
    fingerprint = json.loads(json.dumps(fingerprint))
    optimizer_json = json.loads(json.dumps(base.optimizer.to_dict(), default=str))

    holders = []
    try:
        for w in workdirs:
            holders.append((w, workdir_lib.acquire(w)))
    except BaseException:
        for w, h in holders:
            workdir_lib.release(w, h)
        raise
    run = _GroupRun(configs, workdirs, group_dir, program, mesh, task, datasets, end,
                    fingerprint, optimizer_json)
    try:
        with signals_lib.Stopper(mesh) as stopper:
            return run.run(stopper)
    finally:
        for w, h in holders:
            workdir_lib.release(w, h)


class _GroupRun:
    def __init__(self, configs, workdirs, group_dir, program: _Program, mesh, task, datasets,
                 end, fingerprint, optimizer_json):
        self.configs, self.workdirs, self.group_dir = configs, workdirs, group_dir
        self.p, self.mesh, self.task, self.datasets = program, mesh, task, datasets
        self.end, self.fingerprint, self.optimizer_json = end, fingerprint, optimizer_json
        self.k = len(configs)
        self.step = 0
        self.alive = [True] * self.k
        self.outcome: list[dict[str, Any] | None] = [None] * self.k

    # -- pieces

    def _stack(self, batches: list[dict[str, np.ndarray]]) -> dict[str, jax.Array]:
        return {key: jax.device_put(np.stack([b[key] for b in batches]), self.p.sharding)
                for key in batches[0]}

    def _init_args(self) -> tuple[jax.Array, dict[str, jax.Array]]:
        """(seeds, hyperparameters) of the members, the init program's inputs."""
        per = [{PEAK: float(c.optimizer.learning_rate), **traced_hparams(c)}
               for c in self.configs]
        seeds = jnp.asarray(np.array([c.seed for c in self.configs], np.int32))
        return seeds, {n: jnp.asarray(np.array([h[n] for h in per])) for n in per[0]}

    def _fn(self, name: str):
        """Program `name`: its ahead-compiled executable, else the jitted function."""
        return self.p.compiled.get(name) or getattr(self.p, name)

    def _compile(self, fresh: bool) -> None:
        """Compile the programs this run needs before the loop, sharing the work with the
        sweep's other workers that need the same programs (`compilation.compile_shared`: the
        train step first, the longest); each program once per process."""
        p = self.p
        state, active = p.abstract["state"], p.abstract["active"]

        def batch_of(ds) -> dict[str, jax.ShapeDtypeStruct]:
            first = next(iter(ds))
            return {key: jax.ShapeDtypeStruct((self.k, *np.shape(v)), np.asarray(v).dtype,
                                              sharding=p.sharding) for key, v in first.items()}

        lowered = {}
        if "train" not in p.compiled:
            lowered["train"] = p.train.lower(state, batch_of(self.datasets[0][0]), active)
        if fresh and "init" not in p.compiled:
            lowered["init"] = p.init.lower(*self._init_args())
        if self.configs[0].eval_every and "evaluate" not in p.compiled:
            lowered["evaluate"] = p.evaluate.lower(state.params, state.rest, state.opt_state,
                                                   batch_of(self.datasets[0][1]))
        if compilation.cache_dir() is not None and "checksums" not in p.compiled:
            # Compiled here only to share it: `ckpt_lib.checksums` loads it from the cache.
            lowered["checksums"] = ckpt_lib.lower_checksums({"state": state, "active": active})
        if lowered:
            t = time.perf_counter()
            p.compiled.update(compilation.compile_shared(lowered))
            log.info("group programs ready in %.1f s (%s)", time.perf_counter() - t,
                     ", ".join(lowered))

    def _meta(self, iters) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint,
                "config": {"optimizer": self.optimizer_json},
                "members": [os.fspath(w) for w in self.workdirs],
                "data_iterators": [json.loads(json.dumps(it.get_state(), default=str))
                                   for it in iters],
                "diverged": [o["diverged_step"] if o else None for o in self.outcome],
                "process_count": 1}

    def _restore(self, mngr):
        iters = [iter(ds) for ds, _ in self.datasets]
        ckpt_lib.check_compatible(mngr, self.p.abstract, self.fingerprint, self.optimizer_json)
        restored = ckpt_lib.restore_latest(mngr, self.p.abstract, self.fingerprint,
                                           self.optimizer_json)
        if restored is None:
            state = self._fn("init")(*self._init_args())
            active = jax.device_put(np.ones(self.k, bool), self.p.sharding)
            return 0, state, active, iters
        start, tree, meta = restored
        state = tree["state"]
        if isinstance(state, dict):
            state = state_lib.TrainState(**state)
        for it, pos in zip(iters, meta["data_iterators"], strict=True):
            it.set_state(pos)
        for i, div in enumerate(meta.get("diverged", [])):
            if div is not None:  # recorded when it happened; stays frozen, its files as they are
                self.alive[i] = False
                try:
                    status = workdir_lib.read_status(self.workdirs[i]) or {}
                except (OSError, ValueError):
                    status = {}
                self.outcome[i] = {"status": "diverged", "exit_code": errors.DIVERGED,
                                   "message": status.get("message", ""), "diverged_step": div,
                                   "written": True}
        log.info("group resumed from the checkpoint at step %d in %s", start,
                 self.group_dir / "checkpoints")
        return start, state, tree["active"], iters

    def _diverge(self, i: int, step: int, m: dict[str, np.ndarray], mngr) -> None:
        """Record member i as diverged at `step` (what its solo run writes, at once)."""
        what = None
        for flags, kind in (("grad_finite", "gradient"), ("param_finite", "update")):
            bad = [n for n, ok in zip(self.p.names, m[flags][i], strict=True) if not ok]
            if bad:
                what = f"{kind} at step {step} (first offending parameter: {bad[0]})"
                break
        if what is None:
            what = (f"optimizer state at step {step}" if not m["state_finite"][i] else
                    f"loss ({float(m['loss'][i])}) at step {step}")
        latest = mngr.latest_step()
        message = (f"non-finite {what}; nan_policy='halt' stopped this member of the vectorized "
                   f"group {self.group_dir.name} (last good group checkpoint: "
                   f"{f'step {latest}' if latest else 'none'}); the other members go on")
        log.warning("member %d (%s): %s", i, self.workdirs[i].name, message)
        self.alive[i] = False
        self.outcome[i] = {"status": "diverged", "exit_code": errors.DIVERGED,
                           "message": message, "diverged_step": step}
        self._write_status(i, step - 1)

    def _write_status(self, i: int, step: int) -> None:
        o = self.outcome[i]
        workdir_lib.write_status(self.workdirs[i], status=o["status"], step=step,
                                 steps=self.configs[i].steps, exit_code=o["exit_code"],
                                 message=o["message"], diverged_step=o["diverged_step"])
        o["written"] = True

    # -- the loop

    def run(self, stopper) -> GroupResult:
        base = self.configs[0]
        self.group_dir.mkdir(parents=True, exist_ok=True)
        mngr = ckpt_lib.manager(self.group_dir / "checkpoints", keep=base.keep_checkpoints,
                                async_save=base.async_checkpointing)
        writers: list[metrics_lib.Writer] = []
        records: list[list[dict[str, Any]]] = [[] for _ in range(self.k)]
        state = None
        stop = signals_lib.NONE
        try:
            self._compile(fresh=mngr.latest_step() is None)
            train = self._fn("train")
            start, state, active, iters = self._restore(mngr)
            self.step = start
            for i, (c, w) in enumerate(zip(self.configs, self.workdirs, strict=True)):
                if not self.alive[i]:  # diverged in an earlier run: nothing of it changes
                    writers.append(metrics_lib.Writer(w, enabled=False))
                    continue
                loop_lib.save_config(c, w, start)  # the solo run's config.json
                (w / GROUP_JSON).write_text(json.dumps(
                    {"group_dir": os.fspath(self.group_dir), "member": i, "members": self.k,
                     "workdirs": [os.fspath(x) for x in self.workdirs]}, indent=1) + "\n")
                writers.append(metrics_lib.Writer(w, resume_step=start, enabled=self.alive[i]))
            per_step = base.batch_size * (base.seq_len if self.task == "lm" else 1)
            unit = "tokens" if self.task == "lm" else "examples"
            peaks = np.array([c.optimizer.learning_rate for c in self.configs], np.float32)
            every = base.monitor.get("every", 0)
            clock = {"time": None, "step": start}

            def handle(pending, force: bool) -> list[dict[str, Any] | None]:
                step, m, flag, stats = pending
                m, flag, stats = jax.device_get((m, flag, stats))
                nonlocal stop
                stop = max(stop, int(flag))
                out: list[dict[str, Any] | None] = [None] * self.k
                for i in range(self.k):
                    if self.alive[i] and not m["finite"][i]:
                        if base.nan_policy == "halt":
                            self._diverge(i, step, m, mngr)
                        else:
                            log.warning("member %d: non-finite step %d skipped (%d so far)", i,
                                        step, int(m["skipped"][i]))
                self.step = step
                if not (force or step % base.log_every == 0 or stats is not None):
                    return out
                now = time.perf_counter()
                rate = None
                if clock["time"] is not None and step > clock["step"]:
                    rate = (step - clock["step"]) / (now - clock["time"])
                clock.update(time=now, step=step)
                for i in range(self.k):
                    if not self.alive[i]:
                        continue
                    tm = {"loss": float(m["loss"][i]),
                          "lr": float(np.float32(m["lr"][i]) * peaks[i]),
                          "grad_norm": float(m["grad_norm"][i]),
                          "update_norm": float(m["update_norm"][i])}
                    if "accuracy" in m:
                        tm["accuracy"] = float(m["accuracy"][i])
                    tm["skipped_steps"] = int(m["skipped"][i])
                    if rate is not None:
                        tm["steps_per_sec"] = rate
                        tm[f"{unit}_per_sec"] = rate * per_step
                    writers[i].scalars(step, tm, "train")
                    out[i] = {"step": step, **tm}
                    if stats is not None:  # the member's histograms and theory overlay
                        out[i].update(monitor.write(writers[i].tb, step,
                                                    jax.tree.map(lambda x: x[i], stats)))
                return out

            def emit(recs) -> None:
                for i, r in enumerate(recs):
                    if r is not None and self.alive[i]:
                        writers[i].record(r)
                        records[i].append(r)

            def evaluate(state, recs) -> None:
                val = [iter(v) for _, v in self.datasets]
                sums: list[dict[str, float]] = [{} for _ in range(self.k)]
                n = 0
                while not base.eval_batches or n < base.eval_batches:
                    try:
                        batch = self._stack([next(it) for it in val])
                    except StopIteration:
                        break
                    n += 1
                    out = jax.device_get(self._fn("evaluate")(state.params, state.rest,
                                                              state.opt_state, batch))
                    for i in range(self.k):
                        for key, v in out.items():
                            sums[i][key] = sums[i].get(key, 0.0) + float(v[i])
                for i in range(self.k):
                    if not self.alive[i] or not sums[i] or recs[i] is None:
                        continue
                    res = {"eval_loss": sums[i]["loss_sum"] / sums[i]["count"]}
                    if self.task == "lm":
                        res["eval_perplexity"] = math.exp(min(res["eval_loss"], 80.0))
                    else:
                        res["eval_accuracy"] = sums[i]["correct"] / sums[i]["count"]
                    writers[i].scalars(self.step, {k_[5:]: v for k_, v in res.items()}, "eval")
                    recs[i].update(res)

            pending = None
            for step in range(start + 1, self.end + 1):
                if not any(self.alive):
                    break
                batch = self._stack([next(it) for it in iters])
                state, m, active, stats = train(state, batch, active)
                flag = stopper.poll()
                if pending is not None:
                    emit(handle(pending, force=False))
                pending = (step, m, flag, stats if every and step % every == 0 else None)
                do_eval = bool(base.eval_every) and (step % base.eval_every == 0
                                                     or step == self.end)
                do_save = step % base.checkpoint_every == 0 or step == self.end
                if do_eval or do_save or stop:
                    recs = handle(pending, force=True)
                    pending = None
                    if do_eval:
                        evaluate(state, recs)
                    emit(recs)
                    if do_save or stop:
                        ckpt_lib.save(mngr, step, {"state": state, "active": active},
                                      self._meta(iters))
                    for i, w in enumerate(writers):
                        if self.alive[i]:
                            w.flush()
                    clock.update(time=time.perf_counter(), step=step)
                    if stop and step < self.end:
                        break
            if pending is not None:
                emit(handle(pending, force=True))
            mngr.wait_until_finished()
            last = self.step
            for i, c in enumerate(self.configs):
                if not self.alive[i]:
                    continue
                if stop and last < self.end:
                    status = signals_lib.STATUS[stop]
                    code = errors.INTERRUPTED if status == "interrupted" else errors.FINISHED
                    msg = (f"{status} at step {last}; group checkpoint saved; rerun the same "
                           "command to resume")
                elif self.end < c.steps:
                    status, code = "finished", errors.FINISHED
                    msg = (f"stopped at step {last} of {c.steps} (stop_after); rerun without "
                           "it to continue")
                else:
                    status, code = "finished", errors.FINISHED
                    msg = f"finished at step {last} of {c.steps}"
                self.outcome[i] = {"status": status, "exit_code": code,
                                   "message": f"{msg} (vectorized: member {i} of {self.k} in "
                                   f"{self.group_dir})", "diverged_step": None}
        except BaseException as e:
            code = errors.exit_code(e)
            msg = (f"I/O failure: {errors.io_failure(e)}" if code == errors.IO_FAILURE
                   else errors.one_line(e))
            status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
            for i in range(self.k):
                if self.alive[i] or self.outcome[i] is None:
                    self.outcome[i] = {"status": status, "exit_code": code, "message": msg,
                                       "diverged_step": None}
            raise
        finally:
            try:
                mngr.close()
            except Exception as e:  # noqa: BLE001 - the outcome is decided
                log.error("closing the checkpoint manager failed: %s", errors.one_line(e))
            for w in writers:
                try:
                    w.close()
                except Exception as e:  # noqa: BLE001
                    log.error("closing the metric writers failed: %s", errors.one_line(e))
            for i in range(self.k):
                o = self.outcome[i]
                if o is not None and not o.get("written"):
                    try:
                        self._write_status(i, self.step)
                    except OSError as e:
                        log.error("could not write the status of %s: %s", self.workdirs[i], e)
        return GroupResult(records=records, state=state, start_step=start,
                           statuses=[o["status"] for o in self.outcome],
                           exit_codes=[o["exit_code"] for o in self.outcome],
                           messages=[o["message"] for o in self.outcome])


def member_state(state: state_lib.TrainState, i: int) -> state_lib.TrainState:
    """Member i of a stacked group state."""
    return jax.tree.map(lambda x: x[i], state)

