"""The pure-noise reference: the law of an Adam-form optimizer's normalized update when the
gradients are iid N(0, 1), simulated once with `optaxlab.theory.simulate` and cached.

The closed-form law f_m ("On the Distributional Properties of Adaptive Gradients", Theorem 1)
has no first-moment momentum: for Adam with b1 = 0.9 a layer's distance to it stays large for the
whole run whatever the gradients do. The reference here is the same optimizer (its b1, b2, eps,
bias correction) at the same step t fed with pure noise, so a layer's distance to it reads as
"how far from noise-dominated": small when the layer's gradient is mostly noise, large when a
consistent signal (a non-zero mean) moves Delta away from the noise law.

Cost and cache: one simulation per (b1, b2, eps, bias correction, bins, range), of
`SAMPLES` = 2^15 coordinates for `HORIZON` = 2048 steps, at the first step that needs it; it
stays in memory for the process. Steps 1..64 use that step's simulated histogram; later steps
the average over their block of 64 steps (the law changes slowly by then, and the average cuts
the sampling noise: TV between two independent block averages ~0.004); steps beyond HORIZON
use the last block (stationary: for Adam(0.9, 0.999) the block averages from step ~100 on are
within TV 0.003 of the one at step 4096). One simulation costs 2-4 s on the 2-core machine
(compile ~1-2 s, then ~2 s of CPU time for the 2^15 x 2048 steps), and it was most of the
pause at the first `monitor.write` of every process, so its result (1.1 MB) is also kept on
disk: `cache_dir()` (`$OPTAXLAB_DATA/monitor` or ~/.cache/optaxlab/monitor), under a name that
hashes the settings, `SAMPLES`, `HORIZON`, the jax version and the simulator's source
(`optaxlab/theory/simulate.py`), so a changed simulator is simulated afresh. Set
`OPTAXLAB_MONITOR_CACHE=0` to turn the disk cache off. (A first, 64-step simulation for short
runs was dropped: its compile cost about as much as the whole 2048-step run.)
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import logging
import os
import tempfile
from pathlib import Path

import jax
import numpy as np

from optaxlab import theory

log = logging.getLogger(__name__)

SAMPLES = 1 << 15
BLOCK = 64
HORIZON = 2048


@functools.lru_cache(maxsize=1)
def _cpu():
    return jax.devices("cpu")[0]


def cache_dir() -> Path | None:
    """Where simulated references are kept: $OPTAXLAB_DATA/monitor, else
    ~/.cache/optaxlab/monitor (the data cache's root); None when OPTAXLAB_MONITOR_CACHE=0."""
    if os.environ.get("OPTAXLAB_MONITOR_CACHE", "1") == "0":
        return None
    env = os.environ.get("OPTAXLAB_DATA")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "optaxlab"
    return root / "monitor"


@functools.lru_cache(maxsize=1)
def _source_hash() -> str:
    source = importlib.import_module("optaxlab.theory.simulate").__file__
    return hashlib.sha256(Path(source).read_bytes()).hexdigest()


def _cache_file(key: tuple) -> Path | None:
    root = cache_dir()
    if root is None:
        return None
    name = repr((key, SAMPLES, jax.__version__, _source_hash()))
    return root / f"noise-{hashlib.sha256(name.encode()).hexdigest()[:24]}.npy"


@functools.lru_cache(maxsize=32)
def _simulated(b1: float, b2: float, eps: float, bias_correction: bool, bins: int, r: float,
               steps: int) -> np.ndarray:
    """float64[steps, bins + 2]: per-step masses (underflow, bins of [-r, r), overflow), from
    the disk cache when it holds them."""
    path = _cache_file((b1, b2, eps, bias_correction, bins, r, steps))
    if path is not None and path.is_file():
        try:
            m = np.load(path)
            if m.shape == (steps, bins + 2):
                m.flags.writeable = False
                return m
        except (OSError, ValueError) as e:  # a torn or foreign file: simulate again
            log.debug("ignoring %s: %s", path, e)
    m = _simulate(b1, b2, eps, bias_correction, bins, r, steps)
    if path is not None:
        try:  # atomically: concurrent processes may write the same file
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as f:
                np.save(f, m)
            os.replace(f.name, path)
        except OSError as e:
            log.debug("not caching the noise reference in %s: %s", path, e)
    m.flags.writeable = False
    return m


def _simulate(b1: float, b2: float, eps: float, bias_correction: bool, bins: int, r: float,
              steps: int) -> np.ndarray:
    hparams = dict(b1=b1, b2=b2, eps=eps, bias_correction=bias_correction)
    with jax.default_device(_cpu()):
        res = theory.simulate("adam_model", theory.gaussian(), key=0, n=SAMPLES, steps=steps,
                              hparams=hparams, bins=bins, value_range=(-r, r))
        counts, under, over = jax.device_get((res.counts, res.underflow, res.overflow))
    m = np.concatenate([np.asarray(under, np.float64)[:, None], np.asarray(counts, np.float64),
                        np.asarray(over, np.float64)[:, None]], axis=1)
    m /= np.maximum(m.sum(axis=1, keepdims=True), 1.0)
    return m


@functools.lru_cache(maxsize=256)
def _block(b1, b2, eps, bias_correction, bins, r, first: int) -> np.ndarray:
    sim = _simulated(b1, b2, eps, bias_correction, bins, r, HORIZON)
    out = sim[first - 1 : first - 1 + BLOCK].mean(axis=0)
    out.flags.writeable = False
    return out


def noise_reference(b1: float, b2: float, t: int, bins: int, r: float, eps: float = 0.0,
                    bias_correction: bool = True) -> np.ndarray:
    r"""Bin masses of Adam's normalized update at step t on iid N(0, 1) gradients.

    The optimizer is :math:`u_t = (m_t / c_1) / (\sqrt{v_t / c_2} + \epsilon)` with
    :math:`m_t, v_t` the EMAs (b1, b2) of :math:`g` and :math:`g^2`, :math:`c_i = 1 - b_i^t`
    (1 without bias correction), and :math:`\Delta_t = -u_t` (`theory.adam_model`); b1 = 0 is
    RMSprop, b1 = b2 Adam with equal betas (the VI tracker + mollified sign). eps is relative
    to the unit gradient scale of the simulation.

    Args:
      b1, b2: the EMA decays, in [0, 1).
      t: the step (>= 1).
      bins, r: the histogram: `bins` equal bins of [-r, r) plus underflow and overflow.
      eps, bias_correction: as in Adam.

    Returns:
      float64[bins + 2] masses summing to 1 (see the module docstring for blocks and caching).

    References:
      Zhang & Liu, On the Distributional Properties of Adaptive Gradients (2021), Section 3
      (the update's law on Gaussian gradients; here with momentum, by Monte Carlo).
    """
    key = (float(b1), float(b2), float(eps), bool(bias_correction), int(bins), float(r))
    t = max(int(t), 1)
    if t <= BLOCK:
        return _simulated(*key, HORIZON)[t - 1]
    first = min((t - 1) // BLOCK, HORIZON // BLOCK - 1) * BLOCK + 1
    return _block(*key, first)


def supported(b1: float | None, b2: float | None) -> bool:
    """Whether the reference exists: b1 and b2 known, in [0, 1)."""
    return b1 is not None and b2 is not None and 0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0
