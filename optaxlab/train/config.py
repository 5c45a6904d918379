"""The trainer's config schema and its validation (done before anything touches the workdir).

A training config is an `ml_collections.ConfigDict` built from `default_config()` by a
`configs/*.py` file, which fills in `model`, `data` and the optimizer. `validate` checks every field
and raises a one-line `ValueError` that names the bad field and says what is valid.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import ml_collections

from optaxlab import monitor
from optaxlab.train import optim

AXES = ("data", "fsdp", "tensor")
NAN_POLICIES = ("halt", "skip")
LM_MODELS = ("transformer",)
VISION_MODELS = ("cnn", "mlp")


def default_config() -> ml_collections.ConfigDict:
    """Every trainer field with its default; configs/*.py start from this.

    Fields:
      seed, steps: run seed (init and data order) and number of train steps.
      batch_size: global batch (all processes together); seq_len: LM window length.
      log_every: write metrics every N steps; eval_every: evaluate every N steps and at the end
        (0: never); eval_batches: validation batches per evaluation (0: the whole split).
      checkpoint_every: save every N steps (and at the end); keep_checkpoints: how many to keep;
        async_checkpointing: save in the background.
      nan_policy: 'halt' (raise, naming the step and parameter) or 'skip' (drop the update).
      grad_clip: global-norm clip of the raw gradient before the optimizer (0: off).
      mesh: device mesh shape over ('data', 'fsdp', 'tensor'); -1 means all remaining devices.
      optimizer: name and learning_rate, the schedule (warmup_fraction of the steps linear
        warmup, then cosine to lr_floor * learning_rate; schedule='constant' keeps the peak after
        warmup), and any hparam of the registry entry.
      monitor: optaxlab.monitor.default_config(); model, data: see optaxlab.models / data.
      progress_bar: show a tqdm bar on process 0.
      debug.nonfinite_at_step / debug.nonfinite_param: test hook; poisons the gradient of the
        parameters whose name contains nonfinite_param ('' = all) with NaN at that step (0: off).
    """
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.steps = 1000
    c.batch_size = 32
    c.seq_len = 128
    c.log_every = 10
    c.eval_every = 200
    c.eval_batches = 16
    c.checkpoint_every = 200
    c.keep_checkpoints = 3
    c.async_checkpointing = True
    c.nan_policy = "halt"
    c.grad_clip = 0.0
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    c.optimizer = ml_collections.ConfigDict(
        dict(name="adam", learning_rate=1e-3, schedule="cosine", warmup_fraction=0.1, lr_floor=0.1)
    )
    c.monitor = monitor.default_config()
    c.model = ml_collections.ConfigDict()
    c.data = ml_collections.ConfigDict()
    c.progress_bar = True
    c.debug = ml_collections.ConfigDict(dict(nonfinite_at_step=0, nonfinite_param=""))
    return c


class Plan(NamedTuple):
    """What validation resolved: the concrete mesh shape, task and optimizer hparams."""

    mesh_shape: tuple[int, int, int]
    task: str  # 'lm' | 'classification'
    optimizer_hparams: dict[str, Any]


def _fail(field: str, msg: str):
    raise ValueError(f"config.{field}: {msg}")


def _check_keys(block, reference, prefix: str):
    where = f"config.{prefix[:-1]}" if prefix else "config"
    for key in block.keys():
        if key not in reference:
            _fail(f"{prefix}{key}", f"unknown field; valid fields of {where}: "
                  f"{', '.join(sorted(reference))}")


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


def validate(config, *, num_devices: int) -> Plan:
    """Check every field of a training config; raise a one-line ValueError on the first bad one."""
    ref = default_config()
    _check_keys(config, ref, "")
    _check_keys(config.mesh, ref.mesh, "mesh.")
    _check_keys(config.debug, ref.debug, "debug.")
    _check_keys(config.monitor, monitor.default_config(), "monitor.")
    for field in ("steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints"):
        if not isinstance(config[field], int) or config[field] < 1:
            _fail(field, f"{config[field]!r} must be a positive int")
    for field in ("eval_every", "eval_batches", "seed"):
        if not isinstance(config[field], int) or config[field] < 0:
            _fail(field, f"{config[field]!r} must be a non-negative int")
    if config.nan_policy not in NAN_POLICIES:
        _fail("nan_policy", f"{config.nan_policy!r}; valid: {', '.join(NAN_POLICIES)}")
    if not config.grad_clip or config.grad_clip < 0:
        if config.grad_clip not in (0, 0.0, None):
            _fail("grad_clip", f"{config.grad_clip!r} must be >= 0 (0 turns clipping off)")
    try:
        monitor.settings(config.monitor)
    except ValueError as e:
        raise ValueError(f"config.{e}") from e

    model_name = config.model.get("name")
    if model_name in LM_MODELS:
        task = "lm"
        if not isinstance(config.seq_len, int) or config.seq_len < 2:
            _fail("seq_len", f"{config.seq_len!r} must be an int >= 2")
        max_len = config.model.get("max_len")
        if max_len is not None and config.seq_len > max_len:
            _fail("seq_len", f"{config.seq_len} exceeds model.max_len={max_len}")
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
    if config.debug.nonfinite_at_step < 0:
        _fail("debug.nonfinite_at_step", "must be >= 0 (0: off)")

    hparams = optim.optimizer_hparams(config.optimizer)
    optim.check_schedule(config.optimizer)
    return Plan(mesh_shape=shape, task=task, optimizer_hparams=hparams)


# Hparams whose registry default is None, with the type a config field needs to be overridable.
_NONE_TYPES = {"max_norm": float, "mu_dtype": str}
# Registry hparams a config cannot express (callables); left at their defaults.
_NOT_IN_CONFIG = ("mask",)


def optimizer_config(name: str, learning_rate: float, **overrides) -> ml_collections.ConfigDict:
    """A `config.optimizer` block: name, learning_rate, the schedule fields and every hparam of
    the registry entry (its defaults, updated with `overrides`)."""
    from optaxlab import optimizers

    if name not in optimizers.names():
        raise ValueError(f"config.optimizer.name: {name!r} is not a registered optimizer; valid: "
                         f"{', '.join(optimizers.names())}")
    block: dict[str, Any] = dict(name=name, learning_rate=learning_rate, schedule="cosine",
                                 warmup_fraction=0.1, lr_floor=0.1)
    for key, value in optimizers.hparams(name).items():
        if key in _NOT_IN_CONFIG:
            continue
        if value is None:
            value = ml_collections.FieldReference(None, field_type=_NONE_TYPES.get(key, str))
        block[key] = value
    for key, value in overrides.items():
        if key not in block:
            raise ValueError(f"config.optimizer.{key}: optimizer {name!r} has no hparam "
                             f"{key!r}; valid: {', '.join(sorted(block))}")
        block[key] = value
    return ml_collections.ConfigDict(block)


def switch_optimizer(opt_cfg, name: str, explicit: dict[str, Any] | None = None
                     ) -> ml_collections.ConfigDict:
    """`opt_cfg` rebuilt for optimizer `name` (e.g. after --config.optimizer.name=signum).

    The new block has the registry defaults of `name`, the schedule fields of `opt_cfg`, the
    hparams `opt_cfg` had set away from its own optimizer's defaults when `name` has them too
    (e.g. weight_decay=0.1), and finally `explicit` (hparams given on the command line, which
    must be valid for `name`).
    """
    from optaxlab import optimizers

    old_name = opt_cfg.get("name")
    old_defaults = optimizers.hparams(old_name) if old_name in optimizers.names() else {}
    schedule = {k: opt_cfg[k] for k in optim.RESERVED if k in opt_cfg and k != "name"}
    new = optimizer_config(name, schedule.pop("learning_rate"), **schedule)
    carried, dropped = [], []
    for key, value in opt_cfg.items():
        if key in optim.RESERVED:
            continue
        if key in old_defaults and value == old_defaults[key]:
            continue
        if key in new:
            new[key] = value
            carried.append(f"{key}={value!r}")
        else:
            dropped.append(f"{key}={value!r}")
    for key, value in (explicit or {}).items():
        if key in optim.RESERVED:
            new[key] = value
        elif key not in new:
            raise ValueError(f"config.optimizer.{key}: optimizer {name!r} has no hparam "
                             f"{key!r}; valid: {', '.join(sorted(new))}")
        else:
            new[key] = value
    import logging

    if carried or dropped:
        logging.getLogger("optaxlab.train").info(
            "optimizer %s -> %s: kept %s; not applicable: %s", old_name, name,
            ", ".join(carried) or "-", ", ".join(dropped) or "-")
    return new


def data_config(name: str, **overrides) -> ml_collections.ConfigDict:
    """A `config.data` block with every optaxlab.data key (None = the package default)."""
    from optaxlab import data

    block: dict[str, Any] = {}
    for key, value in {**data.DEFAULTS, "name": name, **overrides}.items():
        if key not in data.DEFAULTS:
            raise ValueError(f"config.data.{key}: unknown field; valid: "
                             f"{', '.join(sorted(data.DEFAULTS))}")
        block[key] = (ml_collections.FieldReference(None, field_type=str) if value is None
                      else value)
    return ml_collections.ConfigDict(block)


def model_config(name: str, **overrides) -> ml_collections.ConfigDict:
    """A `config.model` block with every key of optaxlab.models' `name` (defaults + overrides)."""
    from optaxlab import models

    if name not in models.DEFAULTS:
        raise ValueError(f"config.model.name: {name!r}; valid: {', '.join(models.DEFAULTS)}")
    block = {"name": name, **models.DEFAULTS[name]}
    for key, value in overrides.items():
        if key not in block:
            raise ValueError(f"config.model.{key}: unknown field for {name!r}; valid: "
                             f"{', '.join(sorted(block))}")
        block[key] = value
    return ml_collections.ConfigDict(block)
