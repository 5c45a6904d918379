"""Default `config.monitor` block shared by every training config, and its validation."""

from __future__ import annotations

import dataclasses
import functools
import re

import ml_collections
import numpy as np

_GROUPS = ("leaf", "module")
_SCALES = ("none", "rms")


def default_config() -> ml_collections.ConfigDict:
    """Monitoring defaults: what is measured inside the train step and how often.

    Fields:
      every: log the monitor every N steps; 0 turns it off (the trainer then compiles a step
        with no monitor code at all).
      histograms: True: per-layer histograms of Delta and of the gradient (and the theory
        distance); False: "scalars only" (moments, norms, spread; no binning).
      bins: number of equal-width bins on the symmetric range, plus one underflow and one
        overflow bin. Odd by default so that 0 (and +-1, where SignSGD and Adam's first step
        land) sit inside a bin rather than on an edge.
      delta_range: histogram range [-R, R] of the normalized update
        Delta = (theta_t - theta_{t-1}) / lr_t. Adam-like updates have a natural scale
        (|Delta| <= sqrt(m_eff) <= ~45 without eps, Var[Delta] = 1 under the theory model).
      delta_scale: 'none' (bin Delta itself; needed for the theory overlay) or 'rms' (bin
        Delta / rms(Delta) per leaf; use it for SGD-like optimizers whose Delta = -g is tiny).
      grad_range: histogram range [-R, R] of the gradient after `grad_scale`.
      grad_scale: 'rms' (default: bin g / rms(g) per leaf, so every layer uses its own scale
        and the histogram shows the shape: Gaussian gradients put ~99.7% within +-3) or 'none'
        (bin the raw gradient on [-grad_range, grad_range]).
      group: 'leaf' (one layer per parameter leaf, named by its path, e.g. 'blocks/0/mlp/kernel')
        or 'module' (leaves of one module merged: kernel and bias together).
      include / exclude: regular expressions (re.search) on layer names; '' means all / none.
      theory: log the theory overlay (distance to f_{m_eff(t)}, shape diagnostics vs theory).
      theory_b2: the optimizer's second-moment decay b2 (optax does not store it in the state).
        The trainer fills it from the optimizer hparams (b2, or beta for adam_equal_betas);
        None (and no 'b2' found in an inject_hyperparams state) = no theory overlay.
        1.0 means simple averaging (nu = mean of g_1^2..g_t^2, m_eff(t) = t).
      theory_b1: the first-moment decay b1 (optional). When set together with theory_b2, the
        spread gamma is computed from bias-corrected moments (m/(1-b1^t), v/(1-b2^t)), so that
        for b1 = b2 the Adam direction is exactly sign(m)/sqrt(1+gamma^2); otherwise from the raw
        EMAs (seed 002's definition).
      tail: |Delta| threshold for the tail-mass diagnostic (fraction of coordinates beyond it).
      image_steps: steps at which a "histogram vs theory" figure is written to TensorBoard.
      image_max_layers: at most this many layers per figure (the first ones, in name order).
    """
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
            theory_b2=ml_collections.config_dict.placeholder(float),
            theory_b1=ml_collections.config_dict.placeholder(float),
            tail=3.0,
            image_steps=(1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000),
            image_max_layers=12,
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
    theory_b2: float | None
    theory_b1: float | None
    tail: float
    image_steps: tuple[int, ...]
    image_max_layers: int

    def edges(self, kind: str = "delta") -> np.ndarray:
        """The bins + 1 bin edges (float64, read-only) of the 'delta' or 'grad' histogram."""
        return _edges(self.delta_range if kind == "delta" else self.grad_range, self.bins)

    def selected(self, name: str) -> bool:
        """Whether a layer name passes the include/exclude filters."""
        if self.include and not re.search(self.include, name):
            return False
        return not (self.exclude and re.search(self.exclude, name))


def _get(config, name, default):
    if config is None:
        return default
    try:
        value = config[name] if name in config else default
    except TypeError:
        value = getattr(config, name, default)
    return default if value is None and default is not None else value


def settings(config) -> Settings:
    """Reads and validates a `config.monitor` block (a ConfigDict, dict or None).

    Missing fields take their defaults. Raises ValueError naming the bad field and what is valid.
    """
    if isinstance(config, Settings):
        return config
    d = default_config()
    get = lambda k: _get(config, k, d[k])
    s = Settings(
        every=get("every"),
        histograms=bool(get("histograms")),
        bins=get("bins"),
        delta_range=get("delta_range"),
        delta_scale=get("delta_scale"),
        grad_range=get("grad_range"),
        grad_scale=get("grad_scale"),
        group=get("group"),
        include=get("include") or "",
        exclude=get("exclude") or "",
        theory=bool(get("theory")),
        theory_b2=_get(config, "theory_b2", None),
        theory_b1=_get(config, "theory_b1", None),
        tail=get("tail"),
        image_steps=tuple(int(x) for x in (get("image_steps") or ())),
        image_max_layers=get("image_max_layers"),
    )
    if not isinstance(s.every, (int, np.integer)) or isinstance(s.every, bool) or s.every < 0:
        raise ValueError(f"monitor.every={s.every!r}: must be an int >= 0 (0 = off).")
    if not isinstance(s.bins, (int, np.integer)) or isinstance(s.bins, bool) or s.bins < 2:
        raise ValueError(f"monitor.bins={s.bins!r}: must be an int >= 2 (64-128 is typical).")
    for k in ("delta_range", "grad_range", "tail"):
        v = getattr(s, k)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
            raise ValueError(f"monitor.{k}={v!r}: must be a positive number.")
    for k in ("delta_scale", "grad_scale"):
        if getattr(s, k) not in _SCALES:
            raise ValueError(f"monitor.{k}={getattr(s, k)!r}: must be one of {_SCALES}.")
    if s.group not in _GROUPS:
        raise ValueError(f"monitor.group={s.group!r}: must be one of {_GROUPS}.")
    for k in ("include", "exclude"):
        try:
            re.compile(getattr(s, k))
        except re.error as e:
            raise ValueError(f"monitor.{k}={getattr(s, k)!r}: not a valid regex ({e}).") from e
    if s.theory_b2 is not None and not 0.0 <= s.theory_b2 <= 1.0:
        raise ValueError(f"monitor.theory_b2={s.theory_b2!r}: must be in [0, 1] or None.")
    if s.theory_b1 is not None and not 0.0 <= s.theory_b1 < 1.0:
        raise ValueError(f"monitor.theory_b1={s.theory_b1!r}: must be in [0, 1) or None.")
    if s.image_max_layers < 1:
        raise ValueError(f"monitor.image_max_layers={s.image_max_layers!r}: must be >= 1.")
    return s
