"""Host side: raw per-layer sums -> readable scalars, the theory overlay and shape diagnostics.

`summarize(stats, config)` turns the small arrays of `measure` (already on the host) into a flat
dict of floats, in float64. Per layer (tag `<metric>/<layer>`):

  update_var        Var[Delta]             (theory model: 1 at every step, seed 000 Corollary 1)
  update_var_abs    Var[|Delta|]           (theory: Corollary 2 at m_eff(t), 0.19 at m=2 -> 0.36)
  update_mean_abs   mean |Delta|           (seed 002's measured step size)
  update_mean       mean Delta
  update_param_rms  rms(theta_t - theta_{t-1}) / rms(theta_{t-1})
  grad_norm         ||g|| of the layer
  spread            mean over coordinates of gamma = sqrt(v - m^2)/|m| (seed 002; coordinates with
                    m = 0 are left out), where the optimizer state has (mu, nu) or (mean, var)
  spread_geo        geometric mean exp(mean log gamma) over the same coordinates: a typical spread
                    that the heavy 1/|m| tail of gamma near m = 0 does not dominate (the plain
                    mean is noisy from step to step)
  spread_step       mean of 1/sqrt(1 + gamma^2) = |m|/sqrt(v): the step the spread predicts
  snr               mean of |mean|/sqrt(var), for the Gaussian VI tracker's state
  theory_tv         total variation distance between the observed Delta histogram (normalized,
                    under/overflow bins included) and the theory's bin masses under f_{m_eff(t)}:
                    0 = identical, 1 = disjoint; ~0.01 is sampling noise for 1e5 coordinates
  shape_skew        third standardized moment of Delta. 0 for the theory (symmetric). |skew| of
                    a few tenths or more means the gradient has a non-zero mean in this layer
                    (seed 000 Sec. 6.2). Its sign is the sign of the mean gradient: the bulk of
                    Delta sits against the bound on the side opposite to g (Delta moves against
                    g) and the tail points back across 0 (g ~ N(-1, 1) gives skew -1.2 at t = 2,
                    -0.24 at t = 10 with simple averaging).
  shape_kurtosis    fourth standardized moment E[(x-mu)^4]/Var^2 (3 for a Gaussian). The theory
                    gives 3m/(m+2) < 3 (1 at m=1, 1.5 at m=2, 1.8 at m=3). Well above the theory:
                    a spike at 0 with far-out mass -- the trimodal shape of heavy-tailed
                    (Cauchy-like) gradients (Sec. 6.3; 3.2 vs 2.1 at t = 5); below it: mass
                    pushed to the edges (bimodal).
  shape_bimodality  Sarle's bimodality coefficient (skew^2 + 1)/kurtosis: 1/3 Gaussian, 5/9
                    uniform, above 5/9 bimodal. The theory gives (m+2)/(3m): bimodal at m=2
                    (0.67), 5/9 at m=3, then -> 1/3. A value that stays above the `theory/`
                    curve after the first steps is the persistent bimodality of a growing gradient
                    variance (Sec. 6.1).
  shape_tail        fraction of coordinates with |Delta| > `tail` (theory: P(|Delta| > tail)).

Global tags `monitor/<metric>` pool all monitored layers (coordinate-weighted), and `theory/...`
hold the theory's values at this step: m_eff, var_abs, kurtosis, bimodality, tail.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import numpy as np

from optaxlab import theory
from optaxlab.monitor.config import Settings, settings
from optaxlab.monitor.stats import FIELD

PER_LAYER_METRICS = (
    "update_var",
    "update_var_abs",
    "update_mean_abs",
    "update_mean",
    "update_param_rms",
    "grad_norm",
    "spread",
    "spread_geo",
    "spread_step",
    "snr",
    "theory_tv",
    "shape_skew",
    "shape_kurtosis",
    "shape_bimodality",
    "shape_tail",
)


def layers(stats: Mapping[str, np.ndarray]) -> list[str]:
    """The monitored layer names found in a stats dict, in order."""
    return [k[len("stats/") :] for k in stats if k.startswith("stats/")]


def theory_b2(stats: Mapping[str, np.ndarray], config) -> float | None:
    """b2 for the overlay: config.theory_b2, else an inject_hyperparams 'b2' seen by measure."""
    s = settings(config)
    if s.theory_b2 is not None:
        return float(s.theory_b2)
    if "hparam_b2" in stats:
        return float(np.asarray(stats["hparam_b2"]))
    return None


@functools.lru_cache(maxsize=1)
def _cpu():
    return jax.devices("cpu")[0]


@jax.jit
def _theory_at(edges, b2, t, tail):
    m = theory.effective_sample_size(b2, t)
    probs = theory.update_bin_probs(edges, m)
    under = theory.update_cdf(edges[0], m)
    over = 1.0 - under - probs.sum()
    tail_mass = 1.0 - (theory.update_cdf(tail, m) - theory.update_cdf(-tail, m))
    return m, probs, under, over, theory.abs_update_variance(m), tail_mass


@functools.lru_cache(maxsize=256)
def theory_at(b2: float, t: int, r: float, bins: int, tail: float) -> dict[str, object]:
    """The theory's prediction at step t for EMA decay b2 (computed on the CPU, cached).

    Returns m_eff, the bins + 2 masses (underflow, the bins of [-r, r), overflow), Var[|Delta|],
    kurtosis 3m/(m+2) and bimodality (m+2)/(3m) of f_m (from the Beta(1/2, (m-1)/2) law of
    Delta^2/m: E[Delta^4] = 3m/(m+2)), and P(|Delta| > tail).
    """
    edges = np.linspace(-r, r, bins + 1)
    with jax.default_device(_cpu()):
        m, probs, under, over, var_abs, tail_mass = jax.device_get(
            _theory_at(
                np.asarray(edges, np.float32),
                np.float32(b2),
                np.float32(max(t, 1)),
                np.float32(tail),
            )
        )
    m = float(m)
    masses = np.concatenate([[under], probs, [over]]).astype(np.float64)
    masses = np.clip(masses, 0.0, None)
    masses /= masses.sum()
    kurt = 3.0 * m / (m + 2.0)
    return dict(
        m_eff=m,
        masses=masses,
        var_abs=float(var_abs),
        kurtosis=kurt,
        bimodality=1.0 / kurt,
        tail=float(tail_mass),
    )


def _moments(v: np.ndarray) -> dict[str, float]:
    """Derived scalars from one layer's raw sums (float64)."""
    f = lambda k: float(v[FIELD[k]])
    out: dict[str, float] = {}
    n = f("n") - f("d_nan")
    if n > 0:
        mean, m2 = f("d_sum") / n, f("d_sum2") / n
        m3, m4, mabs = f("d_sum3") / n, f("d_sum4") / n, f("d_sumabs") / n
        var = max(m2 - mean * mean, 0.0)
        out["update_var"] = var
        out["update_var_abs"] = max(m2 - mabs * mabs, 0.0)
        out["update_mean_abs"] = mabs
        out["update_mean"] = mean
        out["shape_tail"] = f("d_tail") / n
        if var > 0:
            c3 = m3 - 3 * mean * m2 + 2 * mean**3
            c4 = m4 - 4 * mean * m3 + 6 * mean**2 * m2 - 3 * mean**4
            skew, kurt = c3 / var**1.5, max(c4, 0.0) / var**2
            out["shape_skew"] = skew
            out["shape_kurtosis"] = kurt
            if kurt > 0:
                out["shape_bimodality"] = (skew * skew + 1.0) / kurt
    if f("p_sum2") > 0:
        out["update_param_rms"] = float(np.sqrt(f("u_sum2") / f("p_sum2")))
    out["grad_norm"] = float(np.sqrt(max(f("g_sum2"), 0.0)))
    for name, (total, count) in dict(
        spread=("spread_sum", "spread_n"),
        spread_step=("step_sum", "step_n"),
        snr=("snr_sum", "snr_n"),
    ).items():
        if f(count) > 0:
            out[name] = f(total) / f(count)
    if f("spread_n") > 0:
        out["spread_geo"] = float(np.exp(f("spread_logsum") / f("spread_n")))
    return out


def tv_distance(counts: np.ndarray, masses: np.ndarray) -> float:
    """Total variation 0.5 * sum |counts/sum(counts) - masses| (both over the same bins)."""
    counts = np.asarray(counts, np.float64)
    total = counts.sum()
    if total <= 0:
        return float("nan")
    return float(0.5 * np.abs(counts / total - masses).sum())


def summarize(stats: Mapping[str, np.ndarray], config) -> dict[str, float]:
    """Flat dict of finite float scalars (tags as keys) from the host copy of `measure`'s output."""
    s: Settings = settings(config)
    stats = {k: np.asarray(v) for k, v in stats.items()}
    step = int(stats["step"]) if "step" in stats else 0
    names = layers(stats)
    b2 = theory_b2(stats, s) if s.theory else None
    th = None
    if b2 is not None and s.delta_scale == "none" and step >= 1:
        th = theory_at(b2, step, float(s.delta_range), s.bins, float(s.tail))
    out: dict[str, float] = {}
    pooled = np.zeros(len(FIELD))
    pooled_hist = None
    for layer in names:
        v = stats[f"stats/{layer}"].astype(np.float64)
        for k, x in _moments(v).items():
            out[f"{k}/{layer}"] = x
        pooled += v
        hist = stats.get(f"delta_hist/{layer}")
        if hist is not None:
            pooled_hist = hist.astype(np.float64) + (0 if pooled_hist is None else pooled_hist)
            if th is not None:
                out[f"theory_tv/{layer}"] = tv_distance(hist, th["masses"])
    if names:
        for k, x in _moments(pooled).items():
            if not k.startswith("shape_"):
                out[f"monitor/{k}"] = x
        if th is not None and pooled_hist is not None:
            out["monitor/theory_tv"] = tv_distance(pooled_hist, th["masses"])
    if "learning_rate" in stats:
        out["monitor/learning_rate"] = float(stats["learning_rate"])
    if th is not None:
        out["theory/m_eff"] = th["m_eff"]
        out["theory/update_var"] = 1.0
        out["theory/update_var_abs"] = th["var_abs"]
        out["theory/shape_kurtosis"] = th["kurtosis"]
        out["theory/shape_bimodality"] = th["bimodality"]
        out["theory/shape_tail"] = th["tail"]
    return {k: float(x) for k, x in out.items() if np.isfinite(x)}
