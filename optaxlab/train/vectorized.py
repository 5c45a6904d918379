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

The host loop is `run.run`, the same as a solo run's (`GroupProgram` is what it drives): each
member writes what its solo run writes into its own workdir, plus WORKDIR/group.json naming its
group. The group's Orbax checkpoint (the stacked state and the members' `active` flags, with
every member's data-iterator position) lives in GROUP_DIR/checkpoints/<step>/; rerunning
`train_group` with the same members resumes it. Under nan_policy='halt' a diverged member is
frozen on the device (its state the last finite one) and the others go on.

Sharding: the member axis is split over `devices` (a 1-D mesh with axis 'members'); each member
is computed whole on one device. Which configs can share a group: `grouping`.
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
import logging
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

from optaxlab import models, optimizers
from optaxlab.train import checkpoint as ckpt_lib
from optaxlab.train import compilation, errors, grouping, optim
from optaxlab.train import loop as loop_lib
from optaxlab.train import run as run_lib
from optaxlab.train import signals as signals_lib
from optaxlab.train import state as state_lib
from optaxlab.train import step as step_lib
from optaxlab.train import workdir as workdir_lib
from optaxlab.train.errors import ConfigError

log = logging.getLogger("optaxlab.train")
# the grouping policy lives in `grouping`; these names stay importable from here
GROUP_JSON, MEMBER_AXIS, signature_key = (grouping.GROUP_JSON, grouping.MEMBER_AXIS,
                                          grouping.signature_key)

PEAK = "lr_peak"  # the injected peak learning rate (hyperparams['learning_rate'] is the shape)


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
                      member_batch: int, monitored=None, grad_accum_steps: int = 1):
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
                                       loss_fn=loss_fn, grad_accum_steps=grad_accum_steps)
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
    traced = list(grouping.traced_hparams(config))
    static = {k_: v for k_, v in optim.optimizer_hparams(opt_cfg).items() if k_ not in traced}
    shape_cfg = copy.deepcopy(opt_cfg)
    shape_cfg.learning_rate = 1.0
    shape = optim.learning_rate_schedule(shape_cfg, config.steps)
    inject = optax.inject_hyperparams(_factory(opt_cfg.name, static, traced))

    def tx_of(hps):
        return inject(learning_rate=shape, **hps)

    placeholder = {PEAK: 1.0, **grouping.traced_hparams(config)}
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
    why = grouping.solo_only(config)
    if why:
        raise ConfigError(f"{why}; set it to 0 for a vectorized group")
    if config.monitor.get("every", 0):
        loop_lib.monitor_watch(config, tx)  # a bad monitor config fails here, as solo

        def monitored(state, batch):  # one member: its monitor divides by its own lr
            peak = state.opt_state.hyperparams[PEAK]
            watch = loop_lib.monitor_watch(config, tx, learning_rate=lambda n: shape(n) * peak)
            return step_lib.train_step(state, batch, graphdef=graphdef, tx=tx, loss_fn=loss_fn,
                                       watch=watch, grad_accum_steps=config.grad_accum_steps)

    # Members initialized like the step runs them (on CPU a lax.map loop: 4.7 s to compile for
    # lm_tiny at K=4, against 9.8 s for jax.vmap(init_one); same values).
    # (not in shard_map: the model's own sharding annotations name axes this mesh lacks).
    init = jax.jit(lambda seeds, hps: _member_loop(init_one, (seeds, hps), member_batch),
                   out_shardings=shardings)
    train = jax.jit(functools.partial(_group_train_step, graphdef=graphdef, tx=tx,
                                      loss_fn=loss_fn, halt=config.nan_policy == "halt",
                                      mesh=mesh, member_batch=member_batch,
                                      monitored=monitored,
                                      grad_accum_steps=config.grad_accum_steps),
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


# ------------------------------------------------------------------------------ the run


class GroupResult(NamedTuple):
    records: list[list[dict[str, Any]]]  # per member: what was appended to its metrics.jsonl
    state: state_lib.TrainState  # the stacked final state (leading axis: members)
    start_step: int
    statuses: list[str]  # per member: finished | preempted | interrupted | diverged | failed
    exit_codes: list[int]  # per member: the exit code its solo run would have had
    messages: list[str]


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
    task = grouping.check_group(configs)
    k = len(configs)
    base = configs[0]
    end = base.steps if stop_after is None else int(stop_after)
    if not 0 < end <= base.steps:
        raise ConfigError(f"stop_after={stop_after} must be in [1, config.steps={base.steps}]")
    mesh = grouping.member_mesh(k, devices)
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
                                "traced": grouping.traced_hparams(c)} for c in configs]}
    fingerprint = json.loads(json.dumps(fingerprint))
    optimizer_json = json.loads(json.dumps(base.optimizer.to_dict(), default=str))

    group = GroupProgram(configs, workdirs, group_dir, program, mesh, task, datasets,
                         fingerprint, optimizer_json)
    members = [run_lib.Member(c, w) for c, w in zip(configs, workdirs, strict=True)]
    holders = []
    try:
        for w in workdirs:
            holders.append((w, workdir_lib.acquire(w)))
        group_dir.mkdir(parents=True, exist_ok=True)
        mngr = ckpt_lib.manager(group_dir / "checkpoints", keep=base.keep_checkpoints,
                                async_save=base.async_checkpointing)
        with signals_lib.Stopper(mesh) as stopper:
            result = run_lib.run(group, members, mngr, stopper, end)
    finally:
        for w, h in holders:
            workdir_lib.release(w, h)
    return GroupResult(records=[m.records for m in members], state=result.state,
                       start_step=result.start_step,
                       statuses=[m.outcome.status for m in members],
                       exit_codes=[m.outcome.exit_code for m in members],
                       messages=[m.outcome.message for m in members])


class GroupProgram:
    """`run.Program` of a group: the shared compiled pieces (`_program`), every member's data
    iterators, its checkpoint tree {'state': stacked TrainState, 'active': bool[K]}."""

    raise_on_divergence = False

    def __init__(self, configs, workdirs, group_dir, program: _Program, mesh, task, datasets,
                 fingerprint, optimizer_json):
        self.configs, self.workdirs, self.group_dir = configs, workdirs, group_dir
        self.p, self.mesh, self.task, self.datasets = program, mesh, task, datasets
        self.fingerprint, self.optimizer_json = fingerprint, optimizer_json
        self.k, self.names = len(configs), program.names
        self.checkpoint_dir = group_dir / "checkpoints"
        self.peaks = np.array([c.optimizer.learning_rate for c in configs], np.float32)
        self.iters: list[Any] = []
        self.active = None

    def _stack(self, batches: list[dict[str, np.ndarray]]) -> dict[str, jax.Array]:
        return {key: jax.device_put(np.stack([b[key] for b in batches]), self.p.sharding)
                for key in batches[0]}

    def _init_args(self) -> tuple[jax.Array, dict[str, jax.Array]]:
        """(seeds, hyperparameters) of the members, the init program's inputs."""
        per = [{PEAK: float(c.optimizer.learning_rate), **grouping.traced_hparams(c)}
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

    def restore(self, mngr, members):
        self._compile(fresh=mngr.latest_step() is None)
        self.iters = [iter(ds) for ds, _ in self.datasets]
        ckpt_lib.check_compatible(mngr, self.p.abstract, self.fingerprint, self.optimizer_json)
        restored = ckpt_lib.restore_latest(mngr, self.p.abstract, self.fingerprint,
                                           self.optimizer_json)
        if restored is None:
            self.active = jax.device_put(np.ones(self.k, bool), self.p.sharding)
            return 0, self._fn("init")(*self._init_args())
        start, tree, meta = restored
        state = tree["state"]
        if isinstance(state, dict):
            state = state_lib.TrainState(**state)
        for it, pos in zip(self.iters, meta["data_iterators"], strict=True):
            it.set_state(pos)
        for m, div in zip(members, meta.get("diverged", []), strict=False):
            if div is not None:  # recorded when it happened; stays frozen, its files as they are
                try:
                    status = workdir_lib.read_status(m.workdir) or {}
                except (OSError, ValueError):
                    status = {}
                m.alive = False
                m.outcome = run_lib.Outcome("diverged", errors.DIVERGED,
                                            status.get("message", ""), div, written=True)
        log.info("group resumed from the checkpoint at step %d in %s", start,
                 self.checkpoint_dir)
        self.active = tree["active"]
        return start, state

    def batch(self):
        return self._stack([next(it) for it in self.iters])

    def train(self, state, batch, step: int):
        del step
        state, metrics, self.active, stats = self._fn("train")(state, batch, self.active)
        return state, metrics, stats

    def host(self, metrics, stats):
        if "lr" in metrics:  # the train step's (not eval sums): the member's own lr
            metrics = dict(metrics, lr=np.float32(metrics["lr"]) * self.peaks)
        return metrics, (None if stats is None else
                         [jax.tree.map(lambda x, i=i: x[i], stats) for i in range(self.k)])

    def eval_batches(self):
        return (self._stack(list(b)) for b in zip(*(v for _, v in self.datasets),
                                                                strict=False))

    def eval_step(self, state, batch):
        return self._fn("evaluate")(state.params, state.rest, state.opt_state, batch)

    def tree(self, state):
        return {"state": state, "active": self.active}

    def meta(self, members) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint,
                "config": {"optimizer": self.optimizer_json},
                "members": [os.fspath(w) for w in self.workdirs],
                "data_iterators": [json.loads(json.dumps(it.get_state(), default=str))
                                   for it in self.iters],
                "diverged": [m.outcome.diverged_step if m.outcome else None for m in members],
                "process_count": 1}

    def member_files(self, i: int) -> dict[str, str]:
        return {GROUP_JSON: json.dumps(
            {"group_dir": os.fspath(self.group_dir), "member": i, "members": self.k,
             "workdirs": [os.fspath(x) for x in self.workdirs]}, indent=1) + "\n"}


def member_state(state: state_lib.TrainState, i: int) -> state_lib.TrainState:
    """Member i of a stacked group state."""
    return jax.tree.map(lambda x: x[i], state)

