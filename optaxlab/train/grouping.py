"""Grouping policy: which training configs can share one vectorized program (`vectorized`).

A group's members differ only in seed, peak learning rate and the numeric optimizer
hyperparameters that `traced_hparams` turns into traced inputs; `signature` is everything else,
`groupable` says why a config cannot be a member, `check_group` validates a group once,
`group_name` names its folder and `member_mesh` lays its member axis over devices. The sweep's
`GroupRunner` and `vectorized.train_group` both read this module.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from optaxlab import optimizers
from optaxlab.train import checkpoint as ckpt_lib
from optaxlab.train import config as config_lib
from optaxlab.train import errors, optim
from optaxlab.train.errors import ConfigError

MEMBER_AXIS = "members"
GROUP_JSON = "group.json"  # WORKDIR/group.json: the group a member was last trained in
# Fields that may differ between members (besides the traced optimizer hyperparameters).
PER_MEMBER = ("seed", "optimizer.learning_rate", "progress_bar")


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


SOLO_ONLY = ("noise_every", "sharpness_every")  # config.monitor instruments of solo runs


def solo_only(config) -> str | None:
    """Why `config` must run solo because of a solo-only monitor instrument, or None."""
    for field in SOLO_ONLY:
        if config.monitor.get(field):
            return (f"config.monitor.{field}={config.monitor[field]}: the noise and sharpness "
                    "instruments run in solo runs only")
    return None


def groupable(config, validated: bool = False) -> str | None:
    """None if `config` can run as a group member, else why not (one line). `validated`: the
    config already passed `config.validate` (on any device count): only what one device
    changes is checked again (the mesh), not every field."""
    try:
        if validated:
            config_lib.mesh_shape(config.mesh, 1)
        else:
            config_lib.validate(config, num_devices=1)
    except ConfigError as e:
        return f"{errors.one_line(e)} (a group member runs on one device)"
    why = solo_only(config)
    if why:
        return why
    # A user's factory that cannot take its numeric hparams traced runs solo (one-line note).
    return optimizers.untraceable(config.optimizer.name, optim.optimizer_hparams(
        config.optimizer), list(traced_hparams(config)))


def group_name(names: Sequence[str]) -> str:
    """A stable folder name for the group of members `names` (order matters: it is the member
    axis)."""
    digest = hashlib.sha1("\n".join(names).encode()).hexdigest()[:12]
    return f"group-{digest}"


def member_mesh(k: int, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh ('members',) over `devices` (default: as many of all devices as divide K)."""
    if devices is None:
        devices = jax.devices()[:math.gcd(k, jax.device_count())]
    devices = list(devices)
    if k % len(devices):
        raise ConfigError(f"a group of {k} members cannot be split over {len(devices)} devices; "
                          f"use a member count divisible by {len(devices)} or fewer devices")
    return Mesh(np.asarray(devices), (MEMBER_AXIS,))


def check_group(configs: Sequence[Any]) -> str:
    """The common task of `configs`; ConfigError unless they can share one program."""
    if not configs:
        raise ConfigError("a group needs at least one config")
    tasks = set()
    for i, c in enumerate(configs):  # each validated once
        try:
            tasks.add(config_lib.validate(c, num_devices=1).task)
        except ConfigError as e:
            raise ConfigError(f"member {i}: {errors.one_line(e)} (a group member runs on one "
                              "device)") from None
    first = signature(configs[0])
    for i, c in enumerate(configs[1:], 1):
        other = signature(c)
        if other != first:
            diffs = ckpt_lib.differences(first, other)  # the same wording
            raise ConfigError(f"member {i} cannot share a group with member 0: "
                              f"{'; '.join(diffs[:3])} (only {', '.join(PER_MEMBER)} and numeric "
                              "optimizer hyperparameters may differ)")
    return tasks.pop()
