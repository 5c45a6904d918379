"""The optimizer a training config asks for: registry optimizer + warmup/cosine schedule.

The registry optimizer is wrapped in `optax.inject_hyperparams`, so the learning rate used at a
step is in the optimizer state (`learning_rate(opt_state)`), for logging and for the monitor's
Delta = update / lr. Only the learning rate is injected; the other hparams are static.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from optaxlab import optimizers

# Fields of config.optimizer that are not hparams of the registry entry.
RESERVED = ("name", "learning_rate", "schedule", "warmup_fraction", "lr_floor")
SCHEDULES = ("cosine", "constant")


def optimizer_hparams(opt_cfg) -> dict[str, Any]:
    """The registry hparams of `opt_cfg.name`: its defaults updated with the config's fields."""
    name = opt_cfg.get("name")
    valid_names = optimizers.names()
    if name not in valid_names:
        raise ValueError(f"config.optimizer.name: {name!r} is not a registered optimizer; "
                         f"valid: {', '.join(valid_names)}")
    defaults = optimizers.hparams(name)
    given = {k: v for k, v in opt_cfg.items() if k not in RESERVED}
    for key in given:
        if key not in defaults:
            raise ValueError(f"config.optimizer.{key}: optimizer {name!r} has no hparam {key!r}; "
                             f"valid: {', '.join(list(RESERVED) + sorted(defaults))}")
    out = dict(defaults)
    for key, value in given.items():
        out[key] = value.to_dict() if hasattr(value, "to_dict") else value
    return out


def check_schedule(opt_cfg) -> None:
    """ValueError unless learning_rate, schedule, warmup_fraction and lr_floor are valid."""
    lr = opt_cfg.get("learning_rate")
    if not isinstance(lr, (int, float)) or lr <= 0:
        raise ValueError(f"config.optimizer.learning_rate: {lr!r} must be a positive number")
    if opt_cfg.get("schedule", "cosine") not in SCHEDULES:
        raise ValueError(f"config.optimizer.schedule: {opt_cfg.schedule!r}; valid: "
                         f"{', '.join(SCHEDULES)}")
    wf = opt_cfg.get("warmup_fraction", 0.0)
    if not 0.0 <= wf < 1.0:
        raise ValueError(f"config.optimizer.warmup_fraction: {wf!r} must be in [0, 1)")
    floor = opt_cfg.get("lr_floor", 0.0)
    if not 0.0 <= floor <= 1.0:
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


def make_optimizer(opt_cfg, steps: int) -> optax.GradientTransformation:
    """Registry optimizer `opt_cfg.name` with the schedule injected as `learning_rate`."""
    name = opt_cfg.name
    hparams = optimizer_hparams(opt_cfg)
    factory = optimizers.get(name)

    def with_lr(learning_rate):
        return factory(learning_rate, **hparams)

    return optax.inject_hyperparams(with_lr)(learning_rate=learning_rate_schedule(opt_cfg, steps))


def learning_rate(opt_state) -> jax.Array:
    """The learning rate the last `update` used (read from the inject_hyperparams state)."""
    return opt_state.hyperparams["learning_rate"]


def first_moment_decay(opt_cfg) -> float | None:
    """b1 of a bias-corrected Adam (adam, adamw), for the monitor's bias-corrected spread."""
    hp = optimizer_hparams(opt_cfg)
    if opt_cfg.name in ("adam", "adamw") and hp.get("bias_correction", True) and "b1" in hp:
        return float(hp["b1"])
    return None


def second_moment_decay(opt_cfg) -> float | None:
    """b2 of the optimizer (or `beta` of adam_equal_betas); None without a second moment."""
    hp = optimizer_hparams(opt_cfg)
    if opt_cfg.name == "lion":  # lion's b2 interpolates the momentum; no second moment
        return None
    if "b2" in hp:
        return float(hp["b2"])
    if opt_cfg.name == "adam_equal_betas" and "beta" in hp:
        return float(hp["beta"])
    return None
