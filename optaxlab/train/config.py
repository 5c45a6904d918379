"""The trainer's config schema and its validation (done before anything touches the workdir).

A training config is an `ml_collections.ConfigDict` built from `default_config()` by a
`optaxlab/configs/*.py` file (or a user's own), which fills in `model`, `data` and the
optimizer. Every block is locked (ml_collections' own key locking: a misspelt field fails
where it is set, on the command line
or in Python) except `optimizer`, whose keys depend on the optimizer. `validate` checks the
values and raises a one-line `ConfigError` that names the bad field and says what is valid; the
optimizer's name, hparams and learning rate are checked by the optimizer registry itself
(`optaxlab.optimizers.check`: the table's rules, without building the optimizer), which is the
only place that knows them.
"""

from __future__ import annotations

import logging
import math
from typing import Any, NamedTuple

import ml_collections

from optaxlab import monitor, optimizers
from optaxlab.train import health, optim
from optaxlab.train.errors import ConfigError

AXES = ("data", "fsdp", "tensor")
NAN_POLICIES = ("halt", "skip")
LM_MODELS = ("transformer",)
VISION_MODELS = ("cnn", "mlp")

log = logging.getLogger("optaxlab.train")


def default_config() -> ml_collections.ConfigDict:
    """Every trainer field with its default; optaxlab/configs/*.py start from this.

    Fields:
      seed, steps: run seed (init and data order) and number of train steps.
      batch_size: global batch (all processes together); seq_len: LM window length.
      grad_accum_steps: k microbatches of batch_size / k scanned inside one step, their mean
        gradient applied once (optaxlab.train.step.loss_and_grads); 1: off.
      log_every: write metrics every N steps; eval_every: evaluate every N steps and at the end
        (0: never); eval_batches: validation batches per evaluation (0: the whole split).
      checkpoint_every: save every N steps (and at the end); keep_checkpoints: how many to keep;
        async_checkpointing: save in the background.
      nan_policy: 'halt' (stop with exit code 3, naming the step and parameter) or 'skip' (drop
        the update and count it).
      health: finite failures judged from the logged loss and gradient norm
        (optaxlab.train.health): diverged (loss > max_loss_ratio x the first logged loss) and
        stalled (gradient exactly 0 for zero_grad_steps steps, or no progress by stall_after of
        the run); policy 'off', 'warn' (default: say so, keep training) or 'halt' (stop: exit
        3 diverged, 6 stalled).
      mesh: device mesh shape over ('data', 'fsdp', 'tensor'); -1 means all remaining devices.
      optimizer: name and learning_rate, the schedule (warmup_fraction of the steps linear
        warmup, then cosine to lr_floor * learning_rate; schedule='constant' keeps the peak after
        warmup), and any hparam of the registry entry (gradient clipping: `max_norm`).
      monitor: optaxlab.monitor.default_config(); model, data: see optaxlab.models / data.
      progress_bar: show a tqdm bar on process 0.
      profile: start, steps: a `jax.profiler` trace of steps [start, start + steps) written
        under WORKDIR/tensorboard/plugins/profile/ (steps=0: off).
    """
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.steps = 1000
    c.batch_size = 32
    c.grad_accum_steps = 1
    c.seq_len = 128
    c.log_every = 10
    c.eval_every = 200
    c.eval_batches = 16
    c.checkpoint_every = 200
    c.keep_checkpoints = 3
    c.async_checkpointing = True
    c.nan_policy = "halt"
    c.health = health.default_config("warn")
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    c.optimizer = optimizer_config("adam", 1e-3)
    c.monitor = monitor.default_config()
    c.model = ml_collections.ConfigDict()
    c.data = ml_collections.ConfigDict()
    c.progress_bar = True
    c.profile = ml_collections.ConfigDict(dict(start=0, steps=0))
    c.lock()
    c.optimizer.unlock()  # its keys are the chosen optimizer's hparams
    return c


class Plan(NamedTuple):
    """What validation resolved: the concrete mesh shape, task and optimizer hparams."""

    mesh_shape: tuple[int, int, int]
    task: str  # 'lm' | 'classification'
    optimizer_hparams: dict[str, Any]


def _fail(field: str, msg: str):
    raise ConfigError(f"config.{field}: {msg}")


def mesh_shape(mesh_cfg, num_devices: int) -> tuple[int, int, int]:
    """Resolve the ('data', 'fsdp', 'tensor') shape; at most one axis may be -1 (the rest)."""
    sizes = [mesh_cfg[a] for a in AXES]
    for axis, size in zip(AXES, sizes, strict=True):
        if not isinstance(size, int) or (size < 1 and size != -1):
            _fail(f"mesh.{axis}", f"{size!r} is not a valid axis size; use a positive int or -1 "
                  "(all remaining devices)")
    if sizes.count(-1) > 1:
        _fail("mesh", f"{dict(zip(AXES, sizes, strict=True))}: at most one axis may be -1")
    fixed = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % fixed:
            _fail("mesh", f"{dict(zip(AXES, sizes, strict=True))} cannot be laid out on "
                  f"{num_devices} devices: the fixed axes ({fixed}) must divide {num_devices}")
        sizes[sizes.index(-1)] = num_devices // fixed
    elif fixed != num_devices:
        _fail("mesh", f"data={sizes[0]} fsdp={sizes[1]} tensor={sizes[2]} needs {fixed} devices "
              f"but {num_devices} are available; valid shapes multiply to {num_devices} "
              "(e.g. --config.mesh.data=-1)")
    return tuple(sizes)


def check_optimizer(opt_cfg) -> dict[str, Any]:
    """The registry hparams of `opt_cfg`, after the registry's rules accepted them with the
    peak learning rate (`optimizers.check`: nothing is built); its `HparamError` becomes a
    ConfigError under config.optimizer (config.optimizer.<field>=<value>: what is valid)."""
    name = optimizers.canonical(opt_cfg.get("name"))
    if name != opt_cfg.get("name"):
        opt_cfg.name = name  # config.json records the absolute reference
    hparams = optim.optimizer_hparams(opt_cfg)
    try:
        optimizers.check(name, opt_cfg.get("learning_rate"), **hparams)
    except optimizers.HparamError as e:
        if e.field is None:  # unknown keywords
            raise ConfigError(f"config.optimizer: {e}") from None
        if e.field == "name":
            raise ConfigError(f"config.optimizer.name: {e.reason}") from None
        raise ConfigError(f"config.optimizer.{e}") from None  # "<field>=<value>: <reason>"
    return hparams


def validate(config, *, num_devices: int) -> Plan:
    """Check every field of a training config; raise a one-line ConfigError on the first bad one.

    Unknown fields cannot get here: the config's blocks are locked (ml_collections), except
    `optimizer`, whose keys the registry checks.
    """
    for field in ("steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints"):
        if not isinstance(config[field], int) or config[field] < 1:
            _fail(field, f"{config[field]!r} must be a positive int")
    for field in ("eval_every", "eval_batches", "seed"):
        if not isinstance(config[field], int) or config[field] < 0:
            _fail(field, f"{config[field]!r} must be a non-negative int")
    _check_profile(config)
    try:
        health.validate(config.health)
    except ValueError as e:
        raise ConfigError(f"config.{e}") from None
    if config.nan_policy not in NAN_POLICIES:
        _fail("nan_policy", f"{config.nan_policy!r}; valid: {', '.join(NAN_POLICIES)}")
    try:
        monitor.settings(config.monitor)
    except ValueError as e:
        raise ConfigError(f"config.{e}") from None

    _check_data_fields(config.data)
    model_name = config.model.get("name")
    if model_name in LM_MODELS:
        task = "lm"
        if not isinstance(config.seq_len, int) or config.seq_len < 2:
            _fail("seq_len", f"{config.seq_len!r} must be an int >= 2")
        max_len = config.model.get("max_len")
        if max_len is not None and config.seq_len > max_len:
            _fail("seq_len", f"{config.seq_len} exceeds model.max_len={max_len}")
        chunk = config.model.get("logits_chunk") or 0
        if isinstance(chunk, int) and chunk > 0 and config.seq_len % chunk:
            _fail("model.logits_chunk", f"{chunk} does not divide seq_len={config.seq_len}; "
                  "use a divisor of seq_len or 0 (off)")
    elif model_name in VISION_MODELS:
        task = "classification"
    else:
        _fail("model.name", f"{model_name!r}; valid: {', '.join(LM_MODELS + VISION_MODELS)}")

    shape = mesh_shape(config.mesh, num_devices)
    data, fsdp, tensor = shape
    heads = config.model.get("n_heads")
    if task == "lm" and heads is not None and heads % tensor:
        _fail("mesh.tensor", f"{tensor} does not divide model.n_heads={heads}; valid tensor "
              f"sizes: {', '.join(str(d) for d in range(1, heads + 1) if heads % d == 0)}")
    if config.batch_size % (data * fsdp):
        _fail("batch_size", f"{config.batch_size} is not divisible by the batch shards "
              f"data*fsdp = {data}*{fsdp} = {data * fsdp}")
    k = config.grad_accum_steps
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        _fail("grad_accum_steps", f"{k!r} must be a positive int (1: no accumulation)")
    noise_every = config.monitor.get("noise_every") or 0
    if noise_every and k < 2:
        _fail("monitor.noise_every", f"{noise_every} needs grad_accum_steps >= 2 (the noise is "
              f"measured across the microbatch gradients of a step), got grad_accum_steps={k}; "
              "set grad_accum_steps to 2 or more, or monitor.noise_every=0 (off)")
    per_device = config.batch_size // (data * fsdp)
    if per_device % k:
        _fail("grad_accum_steps", f"{k} does not divide the per-device batch {per_device} "
              f"(batch_size {config.batch_size} / data*fsdp {data * fsdp}); valid: "
              f"{', '.join(str(d) for d in range(1, per_device + 1) if per_device % d == 0)}")

    hparams = check_optimizer(config.optimizer)
    try:
        optim.check_schedule(config.optimizer)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return Plan(mesh_shape=shape, task=task, optimizer_hparams=hparams)


# Data fields that only some data.name values read (a set field the chosen source ignores is a
# mistake, e.g. data.path with the default stdlib_text corpus).
_DATA_FIELD_READERS = {"path": ("memmap", "cifar10"), "dtype": ("memmap",)}


def _check_data_fields(data_cfg) -> None:
    """A data field set while the chosen data.name does not read it is an error."""
    name = data_cfg.get("name")
    for field, readers in _DATA_FIELD_READERS.items():
        if data_cfg.get(field) is not None and name not in readers:
            _fail(f"data.{field}", f"{data_cfg.get(field)!r} is ignored by data.name={name!r}; "
                  f"data.{field} is read only by data.name in {readers}")


def _check_profile(config) -> None:
    """The profiler window (config.profile) lies inside [1, config.steps]."""
    prof = config.get("profile") or {}
    start, steps = prof.get("start", 0), prof.get("steps", 0)
    for key, value in (("start", start), ("steps", steps)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            _fail(f"profile.{key}", f"{value!r} must be a non-negative int")
    if steps and not 1 <= start <= config.steps - steps + 1:
        _fail("profile", f"start={start} steps={steps} is not a window of steps 1..{config.steps}"
              f"; valid: 1 <= start and start + steps - 1 <= steps ({config.steps})")


# Registry hparams a config cannot express (callables); left at their defaults.
_NOT_IN_CONFIG = ("mask",)


def optimizer_config(name: str, learning_rate: float, **overrides) -> ml_collections.ConfigDict:
    """A `config.optimizer` block: name, learning_rate, the schedule fields and every hparam of
    the registry entry (its defaults, updated with `overrides`; the registry checks them when
    the config is validated). `name` may be a reference `package.module:factory` or
    `path/to/file.py:factory` (its file made absolute, so every process imports the same one)."""
    name = optimizers.canonical(name)
    if not (isinstance(name, str) and ":" in name) and name not in optimizers.names():
        raise ConfigError(f"config.optimizer.name: {name!r} is not a registered optimizer; "
                          f"valid: {', '.join(optimizers.names())} (or a reference "
                          "package.module:factory or path/to/file.py:factory)")
    try:
        entry = optimizers.entry(name)
    except ValueError as e:
        raise ConfigError(f"config.optimizer.name: {str(e).splitlines()[0]}") from None
    block: dict[str, Any] = dict(name=name, learning_rate=learning_rate, schedule="cosine",
                                 warmup_fraction=0.1, lr_floor=0.1)
    for key, value in entry.defaults.items():
        if key in _NOT_IN_CONFIG:
            continue
        if value is None:
            kind = entry.types.get(key)
            value = ml_collections.FieldReference(
                None, field_type=kind if kind in (int, float, str, bool) else str)
        block[key] = value
    block.update(overrides)
    return ml_collections.ConfigDict(block)


def switch_optimizer(opt_cfg, name: str, explicit: dict[str, Any] | None = None
                     ) -> ml_collections.ConfigDict:
    """`opt_cfg` (the config file's block) rebuilt for optimizer `name`
    (e.g. after --config.optimizer.name=signum).

    The rule for a run's optimizer hparams, in order:
      1. the registry defaults of `name`;
      2. the config file's hparam values, only if the file's optimizer *is* `name`;
      3. `explicit` (fields given on the command line or by a sweep point).
    No hparam carries over from another optimizer because it happens to share a name (the
    schedule fields, which are the trainer's, always come from the file). Every hparam whose
    value then differs from the file's same-named value is logged (`hparam_differences`).
    """
    name = optimizers.canonical(name)
    same = optimizers.canonical(opt_cfg.get("name")) == name
    schedule = {k: opt_cfg[k] for k in optim.RESERVED if k in opt_cfg and k != "name"}
    new = optimizer_config(name, schedule.pop("learning_rate"), **schedule)
    if same:
        for key, value in opt_cfg.items():
            if key not in optim.RESERVED and key in new:
                new[key] = value
    for key, value in (explicit or {}).items():
        new[key] = value
    diffs = hparam_differences(opt_cfg, new)
    if diffs:
        log.info("optimizer %s: %s", name, "; ".join(diffs))
    return new


def hparam_differences(file_opt, opt) -> list[str]:
    """Each hparam of block `opt` whose value differs from the same-named field of the config
    file's block `file_opt`, as "b2 = 0.999 (the config file has 0.95)"."""
    out = []
    for key, value in opt.items():
        if key in optim.RESERVED or key not in file_opt:
            continue
        if file_opt[key] != value:
            out.append(f"{key} = {value!r} (the config file has {file_opt[key]!r})")
    return out


def data_config(name: str, **overrides) -> ml_collections.ConfigDict:
    """A locked `config.data` block with every optaxlab.data key (None = the package default)."""
    from optaxlab import data

    block: dict[str, Any] = {}
    for key, value in {**data.DEFAULTS, "name": name, **overrides}.items():
        if key not in data.DEFAULTS:
            raise ConfigError(f"config.data.{key}: unknown field; valid: "
                              f"{', '.join(sorted(data.DEFAULTS))}")
        block[key] = (ml_collections.FieldReference(None, field_type=str) if value is None
                      else value)
    out = ml_collections.ConfigDict(block)
    out.lock()
    return out


def model_config(name: str, **overrides) -> ml_collections.ConfigDict:
    """A locked `config.model` block with every key of optaxlab.models' `name`."""
    from optaxlab import models

    if name not in models.DEFAULTS:
        raise ConfigError(f"config.model.name: {name!r}; valid: {', '.join(models.DEFAULTS)}")
    block = {"name": name, **models.DEFAULTS[name]}
    for key, value in overrides.items():
        if key not in block:
            raise ConfigError(f"config.model.{key}: unknown field for {name!r}; valid: "
                              f"{', '.join(sorted(block))}")
        block[key] = value
    out = ml_collections.ConfigDict(block)
    out.lock()
    return out


def unknown_field_message(config, path: str) -> str:
    """'config.<path>: unknown field; valid fields of config.<parent>: ...' for a key that a
    locked block refused (used by the CLI, whose parser reports only the last key)."""
    *parents, leaf = path.split(".")
    node = config
    for p in parents:
        if not hasattr(node, "keys") or p not in node:
            break
        node = node[p]
    where = ".".join(["config", *parents])
    valid = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else "-"
    return f"config.{path}: unknown field; valid fields of {where}: {valid}"


def config_args(argv: list[str]) -> list[str]:
    """argv with `--config NAME` / `--config=NAME` (a shipped config's name, e.g. `lm_tiny`)
    replaced by its file, for every CLI that takes `--config` (train, aot, memory)."""
    out = list(argv)
    for i, a in enumerate(out):
        if a == "--config" and i + 1 < len(out):
            out[i + 1] = config_file(out[i + 1])
        elif a.startswith("--config="):
            out[i] = "--config=" + config_file(a[len("--config="):])
    return out


def config_file(arg: str) -> str:
    """The config file `--config ARG` names: ARG itself if it is a file (a `:extra` suffix kept),
    else, for a bare name such as `lm_tiny`, the config of that name shipped in the package
    (`optaxlab/configs/NAME.py`); ARG unchanged when there is none (the loader reports it)."""
    from pathlib import Path

    file, sep, extra = arg.partition(":")
    if Path(file).is_file() or "/" in file or file.endswith(".py"):
        return arg
    shipped = Path(__file__).resolve().parents[1] / "configs" / f"{file}.py"
    return f"{shipped}{sep}{extra}" if shipped.is_file() else arg
