"""Is a run still learning? Divergence by loss and stalls, judged from the logged metrics.

A non-finite loss is caught inside the step (`nan_policy`). These rules catch the finite failures
a fair comparison must not call results:

- **diverged**: the loss exceeds `max_loss_ratio` x the first logged loss (Adam at lr 100 with no
  clipping "finished" at a loss of 1.4e5 from 5.5);
- **stalled**: the gradient norm was exactly 0 for `zero_grad_steps` consecutive steps (a dead
  model: SGD at lr 1e4 sat at loss ln 256 with gradient 0.0), or, once `stall_after` of the run
  is done, the loss never went below the first logged loss by `stall_margin` (relative).

`config.health` holds the rules and `policy`: 'off' (not checked), 'warn' (say so, keep
training), 'halt' (stop: the run's status is diverged / stalled, with the step and the reason).
The trainer checks every logged record as it is written; the sweep reads the same verdict back
from a finished point's metrics.jsonl (`check_records`), so both say the same thing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import ml_collections

POLICIES = ("off", "warn", "halt")
DIVERGED, STALLED = "diverged", "stalled"


def default_config(policy: str = "warn") -> ml_collections.ConfigDict:
    """The health rules: see the module docstring. Sweeps run with policy 'halt'."""
    return ml_collections.ConfigDict(dict(
        policy=policy, max_loss_ratio=10.0, zero_grad_steps=20, stall_after=0.5,
        stall_margin=0.01))


def validate(cfg: Mapping[str, Any]) -> None:
    """Raise ValueError('health.FIELD=VALUE: ...') on the first bad field."""
    if cfg["policy"] not in POLICIES:
        raise ValueError(f"health.policy={cfg['policy']!r}; valid: {', '.join(POLICIES)}")
    r = cfg["max_loss_ratio"]
    if r is not None and not (isinstance(r, (int, float)) and math.isfinite(r) and r > 1):
        raise ValueError(f"health.max_loss_ratio={r!r}: must be a number > 1, or None (off)")
    z = cfg["zero_grad_steps"]
    if z is not None and (isinstance(z, bool) or not isinstance(z, int) or z < 1):
        raise ValueError(f"health.zero_grad_steps={z!r}: must be an int >= 1, or None (off)")
    a = cfg["stall_after"]
    if a is not None and not (isinstance(a, (int, float)) and 0 < a <= 1):
        raise ValueError(f"health.stall_after={a!r}: must be a fraction of the run in (0, 1], "
                         "or None (off)")
    m = cfg["stall_margin"]
    if not (isinstance(m, (int, float)) and 0 <= m < 1):
        raise ValueError(f"health.stall_margin={m!r}: must be in [0, 1)")


class Verdict(NamedTuple):
    status: str  # DIVERGED | STALLED
    step: int
    reason: str


class Checker:
    """Feed it each logged record (step, loss, grad_norm) in order; it returns a Verdict the
    first time a rule fires (then None again: one verdict per run)."""

    def __init__(self, cfg: Mapping[str, Any], steps: int, *, start: Mapping[str, Any] | None
                 = None):
        self.cfg, self.steps = dict(cfg), steps
        st = dict(start or {})
        self.first_loss: float | None = st.get("first_loss")
        self.best_loss: float = st.get("best_loss", math.inf)
        self.zero_since: int | None = st.get("zero_since")
        self.fired = bool(st.get("fired", False))

    def state(self) -> dict[str, Any]:
        """What a resumed run needs to go on judging (stored with its checkpoint meta)."""
        return {"first_loss": self.first_loss, "best_loss": self.best_loss,
                "zero_since": self.zero_since, "fired": self.fired}

    def observe(self, step: int, loss: float, grad_norm: float | None,
                log_every: int = 1) -> Verdict | None:
        if self.cfg["policy"] == "off" or self.fired or not math.isfinite(loss):
            return None
        v = self._rules(step, loss, grad_norm, log_every)
        self.fired = v is not None
        return v

    def _rules(self, step, loss, grad_norm, log_every) -> Verdict | None:
        c = self.cfg
        if self.first_loss is None:
            self.first_loss = loss
        self.best_loss = min(self.best_loss, loss)
        ratio = c["max_loss_ratio"]
        if ratio is not None and loss > ratio * self.first_loss:
            return Verdict(DIVERGED, step, f"loss {loss:.4g} at step {step} > max_loss_ratio "
                           f"{ratio:g} x the first logged loss {self.first_loss:.4g}")
        if c["zero_grad_steps"] is not None and grad_norm is not None:
            if grad_norm == 0.0:
                self.zero_since = self.zero_since or max(step - log_every + 1, 1)
                if step - self.zero_since + 1 >= c["zero_grad_steps"]:
                    return Verdict(STALLED, step, f"gradient norm exactly 0 since step "
                                   f"{self.zero_since} ({step - self.zero_since + 1} steps)")
            else:
                self.zero_since = None
        after = c["stall_after"]
        if after is not None and step >= after * self.steps:
            target = self.first_loss - c["stall_margin"] * abs(self.first_loss)
            if self.best_loss > target:
                return Verdict(STALLED, step, f"loss never below {target:.4g} (the first logged "
                               f"loss {self.first_loss:.4g} less {c['stall_margin']:g} of it) "
                               f"by step {step} ({after:g} of the run)")
        return None


def check_records(records: Iterable[Mapping[str, Any]], cfg: Mapping[str, Any], steps: int,
                  log_every: int = 1) -> Verdict | None:
    """The verdict for a run's metrics.jsonl records (train records: those with a 'loss'),
    whatever `cfg.policy` says (the sweep judges every point the same way)."""
    checker = Checker({**cfg, "policy": "warn" if cfg["policy"] == "off" else cfg["policy"]},
                      steps)
    for r in records:
        if "loss" in r and "step" in r:
            v = checker.observe(int(r["step"]), float(r["loss"]), r.get("grad_norm"), log_every)
            if v is not None:
                return v
    return None
