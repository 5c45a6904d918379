"""The monitor's settings: the `config.monitor` block of every training config, and `watch`'s
keyword arguments (validated into one hashable `Settings`)."""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

_GROUPS = ("leaf", "module")
_SCALES = ("none", "rms")


def default_config() -> ml_collections.ConfigDict:
    """Monitoring defaults: what is measured inside the optimizer update and how often.

    Fields:
      every: compute the statistics on every N-th update (the others pay one scalar
        predicate); 0 turns the monitor off (the trainer then does not wrap its optimizer).
      histograms: True: per-layer histograms of Delta and of the gradient (and the theory
        distances); False: "scalars only" (moments, norms, spread; no binning).
      bins: number of equal-width bins on the symmetric range, plus one underflow and one
        overflow bin. Odd by default so that 0 (and +-1, where SignSGD and Adam's first step
        land) sit inside a bin rather than on an edge.
      delta_range: histogram range [-R, R] of the normalized update
        Delta = (theta_t - theta_{t-1}) / lr_t. Adam-like updates have a natural scale
        (|Delta| <= sqrt(m_eff) <= ~45 without eps, Var[Delta] = 1 under the theory model).
      delta_scale: 'none' (bin Delta itself; needed for the theory distances) or 'rms' (bin
        Delta / rms(Delta) per leaf; use it for SGD-like optimizers whose Delta = -g is tiny).
      grad_range: histogram range [-R, R] of the gradient after `grad_scale`.
      grad_scale: 'rms' (default: bin g / rms(g) per leaf, so every layer uses its own scale
        and the histogram shows the shape: Gaussian gradients put ~99.7% within +-3) or 'none'
        (bin the raw gradient on [-grad_range, grad_range]).
      group: 'leaf' (one layer per parameter leaf, named by its path, e.g. 'blocks/0/mlp/kernel')
        or 'module' (leaves of one module merged: kernel and bias together).
      include / exclude: regular expressions (re.search) on layer names; '' means all / none.
      theory: log the theory distances (to f_{m_eff(t)} and to the pure-noise reference) and
        the shape diagnostics.
      b1, b2, eps, bias_correction: the optimizer's Adam-form hyperparameters, for the theory.
        None = read them from an `optax.inject_hyperparams` state ('b1', 'b2', 'beta' for
        both, 'eps') when the watched optimizer has one, else unknown: optax's own states
        (`ScaleByAdamState`, the VI tracker's) do not store them, so pass them when you know
        them (the trainer does, from the optimizer config). b2 drives f_{m_eff(t)} (b2 = 1:
        simple averaging, m_eff(t) = t); b1 and b2 together drive the pure-noise reference and
        the bias-corrected spread (with `bias_correction`, None = True); eps defaults to 0.
        `theory_settings` gives them for an `optaxlab.optimizers` entry.
      tail: |Delta| threshold for the tail-mass diagnostic (fraction of coordinates beyond it).
      image_steps: steps at which a "histogram vs theory" figure is written to TensorBoard.
      image_max_layers: at most this many layers per figure (the first ones, in name order).
      noise_every: the trainer's gradient-noise instrument (`optaxlab.monitor.gradient_noise`)
        on every N-th step, from the k = grad_accum_steps >= 2 microbatch gradients of that
        step: B_simple, |G|^2, tr(Sigma), SNR and Hill tail index per layer and overall; 0 = off
        (the train step is then the same program as without it). Trainer only (`watch` ignores
        it).
      sharpness_every: the trainer's sharpness instrument (`optaxlab.monitor.curvature`) every
        N steps on a fixed batch (the first one the run trains on): lambda_max(H), and for an
        Adam-type optimizer the preconditioned lambda_max(P^-1 H) and the stability threshold
        (2 + 2 b1) / ((1 - b1) lr); 0 = off. Trainer only.
      sharpness_iters: Lanczos iterations (Hessian-vector products) per sharpness estimate;
        each keeps one parameter-sized vector.
    """
    placeholder = ml_collections.config_dict.placeholder
    return ml_collections.ConfigDict(
        dict(
            every=1,
            histograms=True,
            bins=65,
            delta_range=4.0,
            delta_scale="none",
            grad_range=6.0,
            grad_scale="rms",
            group="leaf",
            include="",
            exclude="",
            theory=True,
            b1=placeholder(float),
            b2=placeholder(float),
            eps=placeholder(float),
            bias_correction=placeholder(bool),
            tail=3.0,
            image_steps=(1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000),
            image_max_layers=12,
            noise_every=0,
            sharpness_every=0,
            sharpness_iters=20,
        )
    )


@functools.lru_cache(maxsize=16)
def _edges(r: float, bins: int) -> np.ndarray:
    e = np.linspace(-r, r, bins + 1)
    e.flags.writeable = False
    return e


@dataclasses.dataclass(frozen=True)
class Settings:
    """Validated, hashable view of `config.monitor` (python values only)."""

    every: int
    histograms: bool
    bins: int
    delta_range: float
    delta_scale: str
    grad_range: float
    grad_scale: str
    group: str
    include: str
    exclude: str
    theory: bool
    b1: float | None
    b2: float | None
    eps: float | None
    bias_correction: bool
    tail: float
    image_steps: tuple[int, ...]
    image_max_layers: int
    noise_every: int
    sharpness_every: int
    sharpness_iters: int

    def edges(self, kind: str = "delta") -> np.ndarray:
        """The bins + 1 bin edges (float64, read-only) of the 'delta' or 'grad' histogram."""
        return _edges(self.delta_range if kind == "delta" else self.grad_range, self.bins)

    def selected(self, name: str) -> bool:
        """Whether a layer name passes the include/exclude filters."""
        if self.include and not re.search(self.include, name):
            return False
        return not (self.exclude and re.search(self.exclude, name))


FIELDS = tuple(f.name for f in dataclasses.fields(Settings))


def _number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def settings(config=None, **overrides) -> Settings:
    """Reads and validates a `config.monitor` block.

    Args:
      config: a ConfigDict or dict with any fields of `default_config()`, a `Settings`, or None.
      **overrides: fields that replace the config's.

    Returns:
      The `Settings` (missing fields take their defaults).

    Raises:
      ValueError: one line naming the bad field and value and what is valid (also for an
        unknown field).
    """
    if isinstance(config, Settings):
        if not overrides:
            return config
        config = dataclasses.asdict(config)
    given: dict[str, Any] = {}
    if config is not None:
        items = config.items() if isinstance(config, Mapping) or hasattr(config, "items") else ()
        given.update(items)
    given.update(overrides)
    unknown = sorted(k for k in given if k not in FIELDS)
    if unknown:
        raise ValueError(f"monitor.{unknown[0]}: unknown setting; valid: {', '.join(FIELDS)}")
    d = default_config()
    v = {k: given[k] if given.get(k) is not None else d[k] for k in FIELDS}
    if given.get("bias_correction") is None:
        v["bias_correction"] = True
    v["histograms"], v["theory"] = bool(v["histograms"]), bool(v["theory"])
    v["bias_correction"] = v["bias_correction"] is None or bool(v["bias_correction"])
    v["include"], v["exclude"] = v["include"] or "", v["exclude"] or ""
    v["image_steps"] = tuple(int(x) for x in (v["image_steps"] or ()))
    lows = {"every": 0, "bins": 2, "image_max_layers": 1, "noise_every": 0,
            "sharpness_every": 0, "sharpness_iters": 2}
    for k, low in lows.items():
        if not isinstance(v[k], (int, np.integer)) or isinstance(v[k], bool) or v[k] < low:
            what = {"bins": "an int >= 2 (64-128 is typical)", "image_max_layers": "an int >= 1",
                    "sharpness_iters": "an int >= 2 (20 is typical)"
                    }.get(k, "an int >= 0 (0 = off)")
            raise ValueError(f"monitor.{k}={v[k]!r}: must be {what}.")
        v[k] = int(v[k])
    for k in ("delta_range", "grad_range", "tail"):
        if not _number(v[k]) or not v[k] > 0:
            raise ValueError(f"monitor.{k}={v[k]!r}: must be a positive number.")
        v[k] = float(v[k])
    for k in ("delta_scale", "grad_scale"):
        if v[k] not in _SCALES:
            raise ValueError(f"monitor.{k}={v[k]!r}: must be one of {_SCALES}.")
    if v["group"] not in _GROUPS:
        raise ValueError(f"monitor.group={v['group']!r}: must be one of {_GROUPS}.")
    for k in ("include", "exclude"):
        try:
            re.compile(v[k])
        except re.error as e:
            raise ValueError(f"monitor.{k}={v[k]!r}: not a valid regex ({e}).") from e
    for k, (lo, hi_ok) in {"b1": (0.0, False), "b2": (0.0, True)}.items():
        x = v[k]
        if x is not None and not (_number(x) and lo <= x and (x <= 1.0 if hi_ok else x < 1.0)):
            valid = "[0, 1]" if hi_ok else "[0, 1)"
            raise ValueError(f"monitor.{k}={x!r}: must be in {valid} or None (unknown).")
    if v["eps"] is not None and not (_number(v["eps"]) and v["eps"] >= 0):
        raise ValueError(f"monitor.eps={v['eps']!r}: must be a number >= 0 or None (unknown).")
    for k in ("b1", "b2", "eps"):
        v[k] = None if v[k] is None else float(v[k])
    return Settings(**v)


def theory_settings(optimizer: str, hparams: Mapping[str, Any]) -> dict[str, Any]:
    """The theory settings (b1, b2, eps, bias_correction) of an `optaxlab.optimizers` entry,
    for `watch` (the trainer passes them): read from the registry table's theory mapping
    (`optaxlab.optimizers.Optimizer.theory`, imported lazily: the monitor does not depend on
    the registry). {} for an optimizer that declares no theory (no overlay).

    Args:
      optimizer: the registry name (or reference).
      hparams: its hyperparameters (defaults are filled in from the registry).

    Returns:
      {field: value} for `watch(..., **settings)`.
    """
    from optaxlab import optimizers  # lazy: monitor imports nothing above it at import time

    return optimizers.theory_settings(optimizer, dict(hparams))
