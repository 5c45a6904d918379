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
within TV 0.003 of the one at step 4096). One simulation costs about 2 s of CPU time on the
2-core machine (measured 1.9-2.1 s; compiling the scan is most of it), once per process and
optimizer: too little to pay for a disk cache that would have to be invalidated with the
simulator. (A first, 64-step simulation for short runs was dropped: its compile cost about as
much as the whole 2048-step run.)
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from optaxlab import theory

SAMPLES = 1 << 15
BLOCK = 64
HORIZON = 2048


@functools.lru_cache(maxsize=1)
def _cpu():
    return jax.devices("cpu")[0]


@functools.lru_cache(maxsize=32)
def _simulated(b1: float, b2: float, eps: float, bias_correction: bool, bins: int, r: float,
               steps: int) -> np.ndarray:
    """float64[steps, bins + 2]: per-step masses (underflow, bins of [-r, r), overflow)."""
    hparams = dict(b1=b1, b2=b2, eps=eps, bias_correction=bias_correction)
    with jax.default_device(_cpu()):
        res = theory.simulate("adam_model", theory.gaussian(), key=0, n=SAMPLES, steps=steps,
                              hparams=hparams, bins=bins, value_range=(-r, r))
        counts, under, over = jax.device_get((res.counts, res.underflow, res.overflow))
    m = np.concatenate([np.asarray(under, np.float64)[:, None], np.asarray(counts, np.float64),
                        np.asarray(over, np.float64)[:, None]], axis=1)
    m /= np.maximum(m.sum(axis=1, keepdims=True), 1.0)
    m.flags.writeable = False
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
