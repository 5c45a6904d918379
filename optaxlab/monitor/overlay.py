"""Host side: raw per-layer sums -> readable scalars, the theory distances and shape diagnostics.

`summarize(stats)` turns a `Stats` (on the host) into a flat dict of floats, in float64. The
papers: "On the Distributional Properties of Adaptive Gradients" (the update's law f_m, its
Corollaries 1-2, the Section 6 shapes), "Gradient Spread as an Intuition for the Adam Optimizer"
(spread), "In Search of Adam's Secret Sauce" (the VI tracker's SNR). Per layer (tag
`<metric>/<layer>`):

  update_var        Var[Delta]             (theory model: 1 at every step, Corollary 1)
  update_var_abs    Var[|Delta|]           (theory: Corollary 2 at m_eff(t), 0.19 at m=2 -> 0.36)
  update_mean_abs   mean |Delta|           (the gradient-spread paper's measured step size)
  update_mean       mean Delta
  update_param_rms  rms(theta_t - theta_{t-1}) / rms(theta_{t-1})
  grad_norm         ||g|| of the layer
  spread            mean over coordinates of gamma = sqrt(v - m^2)/|m| (coordinates with
                    m = 0 are left out), where the optimizer state has (mu, nu) or (mean, var)
  spread_geo        geometric mean exp(mean log gamma) over the same coordinates: a typical spread
                    that the heavy 1/|m| tail of gamma near m = 0 does not dominate (the plain
                    mean is noisy from step to step)
  spread_step       mean of 1/sqrt(1 + gamma^2) = |m|/sqrt(v): the step the spread predicts
                    (0 where v = 0; over all coordinates, as update_mean_abs)
  snr               mean of |mean|/sqrt(var), for the Gaussian VI tracker's state
  theory_tv         total variation distance between the observed Delta histogram (normalized,
                    under/overflow bins included) and the theory's bin masses under f_{m_eff(t)}:
                    0 = identical, 1 = disjoint; ~0.01 is sampling noise for 1e5 coordinates.
                    f_m has no momentum: for b1 > 0 this stays large (~0.6 for b1 = 0.9) however
                    the gradients behave; read noise_tv instead.
  noise_tv          total variation distance to the pure-noise reference: the same optimizer
                    (b1, b2, eps, bias correction) at the same step on iid N(0, 1) gradients
                    (`optaxlab.monitor.noise`). Small (~0.02-0.05 for 1e4-1e5 coordinates):
                    the layer's update looks like what noise alone gives; large: a consistent
                    gradient signal shapes it (e.g. 0.3-0.6 on a quadratic's descent).
  shape_skew        third standardized moment of Delta. 0 for the theory (symmetric). |skew| of
                    a few tenths or more means the gradient has a non-zero mean in this layer
                    (Sec. 6.2). Its sign is the sign of the mean gradient: the bulk of
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
`monitor/learning_rate` is the lr Delta was normalized by.
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import numpy as np

from optaxlab import theory
from optaxlab.monitor import noise
from optaxlab.monitor.stats import FIELD
from optaxlab.monitor.watch import Stats

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
    "noise_tv",
    "shape_skew",
    "shape_kurtosis",
    "shape_bimodality",
    "shape_tail",
)


@functools.lru_cache(maxsize=1)
def _cpu():
    return jax.devices("cpu")[0]


_BLOCK = 64  # theory predictions are computed for 64 consecutive steps at a time


@jax.jit
def _theory_block(edges, b2, t, tail):
    m = theory.effective_sample_size(b2, t)  # (K,)
    probs = theory.update_bin_probs(edges[None, :], m)  # (K, bins)
    under = theory.update_cdf(edges[0], m)
    tail_mass = 1.0 - (theory.update_cdf(tail, m) - theory.update_cdf(-tail, m))
    return m, probs, under, theory.abs_update_variance(m), tail_mass


@functools.lru_cache(maxsize=64)
def _theory_steps(b2: float, first: int, r: float, bins: int, tail: float):
    edges = np.linspace(-r, r, bins + 1).astype(np.float32)
    t = np.arange(first, first + _BLOCK, dtype=np.float32)
    with jax.default_device(_cpu()):
        m, probs, under, var_abs, tail_mass = jax.device_get(
            _theory_block(edges, np.float32(b2), t, np.float32(tail))
        )
    probs = np.asarray(probs, np.float64)
    under = np.asarray(under, np.float64)[:, None]
    over = 1.0 - under - probs.sum(axis=1, keepdims=True)
    masses = np.clip(np.concatenate([under, probs, over], axis=1), 0.0, None)
    masses /= masses.sum(axis=1, keepdims=True)
    return np.asarray(m, np.float64), masses, np.asarray(var_abs), np.asarray(tail_mass)


def theory_at(b2: float, t: int, r: float, bins: int, tail: float) -> dict[str, object]:
    r"""The closed-form law's prediction at step t for EMA decay b2 (computed on the CPU, cached).

    With :math:`m = m_\mathrm{eff}(t) = (1 - b_2^t)(1 + b_2) / ((1 - b_2)(1 + b_2^t))` the
    normalized update has density
    :math:`f_m(x) \propto (1 - x^2/m)^{(m-3)/2}` on :math:`|x| \le \sqrt{m}`. Computed for a
    block of 64 steps in one call and cached, so the per-step host cost is a lookup.

    Args:
      b2: the second-moment EMA decay (1: simple averaging, m = t).
      t: the step (>= 1).
      r, bins: the histogram, `bins` equal bins of [-r, r) plus underflow and overflow.
      tail: the |Delta| threshold of the tail mass.

    Returns:
      {'m_eff', 'masses' (the bins + 2 masses of f_m), 'var_abs' (Var[|Delta|]), 'kurtosis'
      (3m/(m+2), from the Beta(1/2, (m-1)/2) law of Delta^2/m), 'bimodality' ((m+2)/(3m)),
      'tail' (P(|Delta| > tail))}.

    References:
      Zhang & Liu, On the Distributional Properties of Adaptive Gradients (2021), Theorem 1,
      Corollary 2 and eq. 9-12 (m_eff of an EMA).
    """
    t = max(int(t), 1)
    first = (t - 1) // _BLOCK * _BLOCK + 1
    m, masses, var_abs, tail_mass = _theory_steps(
        float(b2), first, float(r), int(bins), float(tail)
    )
    i = t - first
    kurt = 3.0 * m[i] / (m[i] + 2.0)
    return dict(
        m_eff=float(m[i]),
        masses=masses[i],
        var_abs=float(var_abs[i]),
        kurtosis=float(kurt),
        bimodality=float(1.0 / kurt),
        tail=float(tail_mass[i]),
    )


def _derive(v: np.ndarray) -> dict[str, np.ndarray]:
    """Derived scalars from raw sums v[..., FIELD] (float64), vectorized over layers.

    Undefined values (no coordinates, zero variance, no moment state) come out as NaN.
    """
    f = lambda k: v[..., FIELD[k]]
    with np.errstate(divide="ignore", invalid="ignore"):
        n = f("n") - f("d_nan")
        n = np.where(n > 0, n, np.nan)
        mean, m2 = f("d_sum") / n, f("d_sum2") / n
        m3, m4, mabs = f("d_sum3") / n, f("d_sum4") / n, f("d_sumabs") / n
        var = np.maximum(m2 - mean * mean, 0.0)
        pos_var = np.where(var > 0, var, np.nan)
        c3 = m3 - 3 * mean * m2 + 2 * mean**3
        c4 = m4 - 4 * mean * m3 + 6 * mean**2 * m2 - 3 * mean**4
        skew = c3 / pos_var**1.5
        kurt = np.maximum(c4, 0.0) / pos_var**2
        ratio = lambda a, b: f(a) / np.where(f(b) > 0, f(b), np.nan)
        return dict(
            update_var=var,
            update_var_abs=np.maximum(m2 - mabs * mabs, 0.0),
            update_mean_abs=mabs,
            update_mean=mean,
            update_param_rms=np.sqrt(ratio("u_sum2", "p_sum2")),
            grad_norm=np.sqrt(np.maximum(f("g_sum2"), 0.0)),
            spread=ratio("spread_sum", "spread_n"),
            spread_geo=np.exp(ratio("spread_logsum", "spread_n")),
            spread_step=ratio("step_sum", "step_n"),
            snr=ratio("snr_sum", "snr_n"),
            shape_skew=skew,
            shape_kurtosis=kurt,
            shape_bimodality=(skew * skew + 1.0) / np.where(kurt > 0, kurt, np.nan),
            shape_tail=f("d_tail") / n,
        )


def tv_distance(counts: np.ndarray, masses: np.ndarray) -> float:
    r"""Total variation distance :math:`\frac{1}{2} \sum_i |c_i / \sum_j c_j - q_i|`.

    Args:
      counts: histogram counts :math:`c` (any bins, under/overflow included).
      masses: the reference's masses :math:`q` over the same bins (summing to 1).

    Returns:
      The distance in [0, 1] (0 identical, 1 disjoint); NaN for an empty histogram.
    """
    counts = np.asarray(counts, np.float64)
    total = counts.sum()
    if total <= 0:
        return float("nan")
    return float(0.5 * np.abs(counts / total - masses).sum())


def _tv_rows(h: np.ndarray, masses: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        p = h / h.sum(axis=1, keepdims=True)
    return 0.5 * np.abs(p - masses).sum(axis=1)


def references(stats: Stats) -> dict[str, object]:
    """The two theory references at the step of `stats`.

    Args:
      stats: a host copy of a `Stats` (its hparams b1, b2, eps are the settings' or those read
        from an inject_hyperparams state).

    Returns:
      {'f_m': `theory_at(b2, step, ...)` or None (no b2, theory off, delta_scale='rms'),
      'noise': `noise_reference(b1, b2, step, ...)` masses or None (b1 or b2 unknown, b2 = 1,
      no histograms)}.
    """
    s = stats.settings
    step = int(np.asarray(stats.step))
    out: dict[str, object] = {"f_m": None, "noise": None}
    if not s.theory or s.delta_scale != "none" or step < 1:
        return out
    b1, b2, eps = stats.hparam("b1"), stats.hparam("b2"), stats.hparam("eps")
    if b2 is not None and 0.0 <= b2 <= 1.0:
        out["f_m"] = theory_at(b2, step, s.delta_range, s.bins, s.tail)
    if s.histograms and noise.supported(b1, b2):
        out["noise"] = noise.noise_reference(b1, b2, step, s.bins, s.delta_range, eps or 0.0,
                                             s.bias_correction)
    return out


def summarize(stats: Stats) -> dict[str, float]:
    r"""The scalars of one monitored update, derived in float64 from the raw per-layer sums.

    Per layer, e.g. :math:`\mathrm{Var}[\Delta] = \overline{\Delta^2} - \bar\Delta^2`,
    :math:`\mathrm{Var}[|\Delta|] = \overline{\Delta^2} - \overline{|\Delta|}^2`, the
    standardized third and fourth moments, the mean spread, and the total variation distances
    of the Delta histogram to f_{m_eff(t)} and to the pure-noise reference (see the module
    docstring for every tag).

    Args:
      stats: a host copy of a `Stats` (`jax.device_get(latest(opt_state))`).

    Returns:
      {tag: float} of the finite values: '<metric>/<layer>', pooled 'monitor/<metric>' and
      'theory/<metric>'.

    References:
      Zhang & Liu, On the Distributional Properties of Adaptive Gradients (2021), Corollaries
      1-2 and Section 6; Eigen, Gradient Spread as an Intuition for the Adam Optimizer (2025).
    """
    s = stats.settings
    names = stats.names
    ref = references(stats)
    th = ref["f_m"]
    out: dict[str, float] = {}  # per-layer scalars (filtered as arrays)
    rest: dict[str, float] = {}  # pooled and theory scalars
    if names:
        v = np.asarray(stats.layers, np.float64)
        both = _derive(np.concatenate([v, v.sum(axis=0, keepdims=True)]))  # last row: pooled
        per_layer = {k: x[:-1] for k, x in both.items()}  # (min/max columns unused)
        total = {k: x[-1] for k, x in both.items()}
        h = np.asarray(stats.hist, np.float64)[:, 0] if s.histograms else None
        for key, masses in (("theory_tv", th and th["masses"]), ("noise_tv", ref["noise"])):
            if masses is not None and h is not None:
                per_layer[key] = _tv_rows(h, masses)
                total[key] = tv_distance(h.sum(axis=0), masses)
        cols = np.stack(list(per_layer.values())).ravel()  # [metric, layer], flattened
        ok = np.isfinite(cols)
        tags = itertools.compress(_tags(tuple(per_layer), tuple(names)), ok.tolist())
        out.update(zip(tags, cols[ok].tolist(), strict=True))
        for k, x in total.items():
            if not k.startswith("shape_"):
                rest[f"monitor/{k}"] = float(x)
    lr = stats.hparam("learning_rate")
    if lr is not None:
        rest["monitor/learning_rate"] = lr
    if th is not None:
        rest["theory/m_eff"] = th["m_eff"]
        rest["theory/update_var"] = 1.0
        rest["theory/update_var_abs"] = th["var_abs"]
        rest["theory/shape_kurtosis"] = th["kurtosis"]
        rest["theory/shape_bimodality"] = th["bimodality"]
        rest["theory/shape_tail"] = th["tail"]
    out.update((k, x) for k, x in rest.items() if math.isfinite(x))
    return out


@functools.lru_cache(maxsize=64)
def _tags(metrics: tuple[str, ...], names: tuple[str, ...]) -> tuple[str, ...]:
    """'<metric>/<layer>' for every metric and layer, metric-major."""
    return tuple(f"{k}/{n}" for k in metrics for n in names)
