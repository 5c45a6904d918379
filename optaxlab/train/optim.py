"""The optimizer a training config asks for: registry optimizer + warmup/cosine schedule.

The registry optimizer is wrapped in `optax.inject_hyperparams`, so the learning rate used at a
step is in the optimizer state (`learning_rate(opt_state)`), for logging and for the monitor's
Delta = update / lr. Only the learning rate is injected; the other hparams are static. The
registry (`optaxlab.optimizers`) is the only place that knows optimizer names and hparams: this
module passes the config's fields through, and the registry rejects what is not valid.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax

from optaxlab import optimizers

# Fields of config.optimizer that belong to the trainer's schedule, not to the registry entry.
RESERVED = ("name", "learning_rate", "schedule", "warmup_fraction", "lr_floor")
SCHEDULES = ("cosine", "constant")


def optimizer_hparams(opt_cfg) -> dict[str, Any]:
    """The registry keywords a config block gives: every field but the schedule's."""
    return {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in opt_cfg.items()
            if k not in RESERVED}


def check_schedule(opt_cfg) -> None:
    """ValueError unless schedule, warmup_fraction and lr_floor are valid (the learning rate
    itself is the registry's to check)."""
    if opt_cfg.get("schedule", "cosine") not in SCHEDULES:
        raise ValueError(f"config.optimizer.schedule: {opt_cfg.schedule!r}; valid: "
                         f"{', '.join(SCHEDULES)}")
    wf = opt_cfg.get("warmup_fraction", 0.0)
    if not isinstance(wf, (int, float)) or not 0.0 <= wf < 1.0:
        raise ValueError(f"config.optimizer.warmup_fraction: {wf!r} must be in [0, 1)")
    floor = opt_cfg.get("lr_floor", 0.0)
    if not isinstance(floor, (int, float)) or not 0.0 <= floor <= 1.0:
        raise ValueError(f"config.optimizer.lr_floor: {floor!r} must be in [0, 1] (a fraction "
                         "of learning_rate)")


def learning_rate_schedule(opt_cfg, steps: int) -> optax.Schedule:
    """Linear warmup over `warmup_fraction * steps`, then cosine to `lr_floor * learning_rate`.

    The schedule is evaluated at the optimizer's update count c = 0, 1, ... as lr(c + 1), so the
    first update uses peak / warmup_steps (never 0) and the last one the floor.
    """
    peak = float(opt_cfg.learning_rate)
    warmup = int(round(opt_cfg.get("warmup_fraction", 0.0) * steps))
    floor = peak * float(opt_cfg.get("lr_floor", 0.0))
    if opt_cfg.get("schedule", "cosine") == "constant":
        base = optax.join_schedules(
            [optax.linear_schedule(0.0, peak, max(warmup, 1)), optax.constant_schedule(peak)],
            [max(warmup, 1)],
        )
    else:
        base = optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(steps, warmup + 1),
                                                  end_value=floor)
    return lambda count: base(count + 1)


def make_optimizer(opt_cfg, steps: int, wrap: Callable[[optax.GradientTransformation],
                   optax.GradientTransformation] | None = None) -> optax.GradientTransformation:
    """Registry optimizer `opt_cfg.name` with the schedule injected as `learning_rate`, then
    `wrap(tx)` if given (the documented way to add any optax transform to the chain)."""
    factory = optimizers.get(opt_cfg.name)
    hparams = optimizer_hparams(opt_cfg)

    def with_lr(learning_rate):
        return factory(learning_rate, **hparams)

    tx = optax.inject_hyperparams(with_lr)(learning_rate=learning_rate_schedule(opt_cfg, steps))
    return wrap(tx) if wrap is not None else tx


def learning_rate(opt_state) -> jax.Array:
    """The learning rate the last `update` used (read from the outermost inject_hyperparams
    state, wherever a wrapper put it)."""
    states = jax.tree.leaves(opt_state, is_leaf=lambda x: hasattr(x, "hyperparams"))
    for s in states:
        if "learning_rate" in getattr(s, "hyperparams", {}):
            return s.hyperparams["learning_rate"]
    raise ValueError("no inject_hyperparams state with a learning_rate in the optimizer state")

