"""Jitted Monte Carlo of an optimizer's normalized update on independent coordinates.

`simulate` applies an optimizer transform to n independent scalar coordinates for T steps, feeding
it a gradient stream drawn from a *process* ("On the Distributional Properties of Adaptive
Gradients", Sections 3 and 6), and returns per-step histograms and moments of the normalized update

    Delta_t = (theta_t - theta_{t-1}) / lr = update_t / lr

(the paper's definition, the monitor's too: for Adam, Delta has the sign opposite to the
gradient), computed on device inside one `jax.lax.scan`: nothing of size n x T is stored.

Transforms: `theory_model()` (the default: no momentum, eps = 0, preconditioner by simple averaging,
the paper's Theorem 1), `adam_model(b1, b2, eps, bias_correction)` (exact Adam / RMSprop with
b1 = 0), any `optax.GradientTransformation`, or the name of an `optaxlab.optimizers` entry
(resolved lazily, so `optaxlab.theory` imports nothing else of optaxlab at import time).

Processes are callables `process(key, t, params) -> grads` with t the 1-indexed step (a traced
int32) and params the current coordinates (shape (n,)): `gaussian(mean, std)` (either may be a
function of t), `cauchy`, `student_t`, `symmetric_stable` (Chambers-Mallows-Stuck), `pareto`
(symmetric Lomax), or any user callable (e.g. `lambda key, t, p: 2 * p` for f(x) = x^2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = [
    "GradientProcess",
    "SimulationResult",
    "adam_model",
    "cauchy",
    "gaussian",
    "histogram_edges",
    "make_simulator",
    "pareto",
    "resolve_transform",
    "sample_pareto",
    "sample_symmetric_stable",
    "simulate",
    "student_t",
    "symmetric_stable",
    "theory_model",
]

GradientProcess = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
ScalarFn = float | Callable[[jax.Array], jax.Array]


# --------------------------------------------------------------------------- transforms


class TheoryModelState(NamedTuple):
    count: jax.Array
    sum_sq: jax.Array


def theory_model() -> optax.GradientTransformation:
    """The theory model of "On the Distributional Properties of Adaptive Gradients":
    u_t = g_t / sqrt((1/t) sum_{i<=t} g_i^2) (no momentum, eps = 0).

    With iid N(0, 1) gradients u_t has the law `update_pdf(., m=t)`. 0/0 (all g_i = 0) gives 0.
    """

    def init_fn(params):
        return TheoryModelState(
            count=jnp.zeros([], jnp.int32), sum_sq=jax.tree.map(jnp.zeros_like, params)
        )

    def update_fn(updates, state, params=None):
        del params
        count = state.count + 1
        sum_sq = jax.tree.map(lambda s, g: s + g * g, state.sum_sq, updates)
        updates = jax.tree.map(
            lambda g, s: jnp.where(
                s > 0, g / jnp.sqrt(jnp.where(s > 0, s, 1.0) / count.astype(s.dtype)), 0.0
            ),
            updates,
            sum_sq,
        )
        return updates, TheoryModelState(count, sum_sq)

    return optax.GradientTransformation(init_fn, update_fn)


class AdamModelState(NamedTuple):
    count: jax.Array
    mu: Any
    nu: Any


def adam_model(
    b1: float = 0.9, b2: float = 0.999, eps: float = 0.0, bias_correction: bool = True
) -> optax.GradientTransformation:
    """Exact Adam direction u = (m/c1) / (sqrt(v/c2) + eps), m = ema_b1(g), v = ema_b2(g^2).

    c_i = 1 - b_i^t with `bias_correction` (computed as -expm1(t log b_i), log b_i in float64:
    accurate in float32, so the first step is exactly +-1), else 1. b1 = 0 is RMSprop (the
    convention of "In Search of Adam's Secret Sauce"). eps = 0 by default (the theory's setting;
    0/0 is returned as 0).
    """
    for name, b in (("b1", b1), ("b2", b2)):
        if not 0.0 <= b < 1.0:
            raise ValueError(f"{name}={b!r} is invalid: it must lie in [0, 1).")
    if eps < 0:
        raise ValueError(f"eps={eps!r} is invalid: it must be >= 0.")
    log_b1, log_b2 = (math.log(b) if b > 0 else -math.inf for b in (b1, b2))

    def init_fn(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return AdamModelState(jnp.zeros([], jnp.int32), zeros, zeros)

    def update_fn(updates, state, params=None):
        del params
        count = state.count + 1
        mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)
        nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, updates)
        t = count.astype(jnp.float32)
        c1 = -jnp.expm1(t * log_b1) if bias_correction else 1.0
        c2 = -jnp.expm1(t * log_b2) if bias_correction else 1.0

        def direction(m, v):
            den = jnp.sqrt(v / c2) + eps
            return jnp.where(den > 0, (m / c1) / jnp.where(den > 0, den, 1.0), 0.0)

        return jax.tree.map(direction, mu, nu), AdamModelState(count, mu, nu)

    return optax.GradientTransformation(init_fn, update_fn)


def resolve_transform(
    transform: str | optax.GradientTransformation,
    learning_rate: float = 1.0,
    hparams: dict[str, Any] | None = None,
) -> optax.GradientTransformation:
    """A transform from an object, 'theory', 'adam_model', or an `optaxlab.optimizers` name.

    Names are resolved lazily through `optaxlab.optimizers.create(name, learning_rate, **hparams)`.
    For 'theory' and 'adam_model' (hparams b1, b2, eps, bias_correction) the returned transform
    includes the scaling by -learning_rate, like the registry's optimizers.
    """
    hparams = dict(hparams or {})
    if isinstance(transform, optax.GradientTransformation):
        if hparams:
            raise ValueError(f"hparams {sorted(hparams)} given with a transform object; "
                             "pass them to its factory instead.")
        return transform
    if not isinstance(transform, str):
        raise ValueError(
            f"transform={transform!r} is invalid: pass an optax.GradientTransformation, "
            "'theory', 'adam_model' or an optaxlab.optimizers name."
        )
    if transform == "theory":
        if hparams:
            raise ValueError(f"the theory model takes no hparams, got {sorted(hparams)}.")
        return optax.chain(theory_model(), optax.scale_by_learning_rate(learning_rate))
    if transform == "adam_model":
        return optax.chain(adam_model(**hparams), optax.scale_by_learning_rate(learning_rate))
    from optaxlab import optimizers  # lazy: theory must not import optaxlab at import time

    return optimizers.create(transform, learning_rate, **hparams)


# --------------------------------------------------------------------------- processes


def _of_t(v: ScalarFn, t: jax.Array) -> jax.Array:
    return v(t) if callable(v) else jnp.asarray(v)


def gaussian(mean: ScalarFn = 0.0, std: ScalarFn = 1.0) -> GradientProcess:
    """g_t ~ N(mean(t), std(t)^2) iid over coordinates; mean/std are numbers or functions of t.

    Section 6 of "On the Distributional Properties of Adaptive Gradients": `gaussian(std=lambda t:
    t)`,
    `gaussian(std=lambda t: 1 / t)`,
    `gaussian(mean=-1.0)`, `gaussian(mean=lambda t: -t)`.
    """

    def process(key, t, params):
        tf = t.astype(params.dtype)
        z = jax.random.normal(key, params.shape, params.dtype)
        return _of_t(mean, tf) + _of_t(std, tf) * z

    return process


def cauchy(scale: float = 1.0, loc: float = 0.0) -> GradientProcess:
    """g_t ~ Cauchy(loc, scale) iid ("On the Distributional Properties of Adaptive Gradients",
    Section 6: the standard
    Cauchy)."""

    def process(key, t, params):
        del t
        return loc + scale * jax.random.cauchy(key, params.shape, params.dtype)

    return process


def student_t(df: float, scale: float = 1.0) -> GradientProcess:
    """g_t ~ scale * t_df iid (tail index df)."""
    if df <= 0:
        raise ValueError(f"df={df!r} is invalid: degrees of freedom must be > 0.")

    def process(key, t, params):
        del t
        return scale * jax.random.t(key, df, params.shape, params.dtype)

    return process


def sample_symmetric_stable(key, alpha, shape, dtype=jnp.float32, scale=1.0):
    """Symmetric alpha-stable samples, Chambers, Mallows & Stuck (1976), beta = 0, alpha in (0, 2].

    X = sin(alpha V) / cos(V)^(1/alpha) * (cos((1 - alpha) V) / W)^((1 - alpha)/alpha), with
    V ~ U(-pi/2, pi/2), W ~ Exp(1). alpha = 2 gives N(0, 2 scale^2), alpha = 1 Cauchy.
    """
    kv, kw = jax.random.split(key)
    # Open interval: cos(V) > 0 and W > 0 (the endpoints give inf/nan in floating point).
    half = jnp.asarray(jnp.pi / 2, dtype)
    edge = jnp.nextafter(half, jnp.asarray(0, dtype))
    v = jax.random.uniform(kv, shape, dtype, -edge, edge)
    w = jnp.maximum(jax.random.exponential(kw, shape, dtype), jnp.finfo(dtype).tiny)
    a = jnp.asarray(alpha, dtype)
    x = (
        jnp.sin(a * v)
        / jnp.cos(v) ** (1.0 / a)
        * (jnp.cos((1.0 - a) * v) / w) ** ((1.0 - a) / a)
    )
    return scale * x


def symmetric_stable(alpha: float, scale: float = 1.0) -> GradientProcess:
    """g_t symmetric alpha-stable iid (the heavy-tailed noise model of "Why Adam Beats SGD for
    Attention Models"),
    alpha in (0, 2]."""
    if not 0.0 < alpha <= 2.0:
        raise ValueError(f"alpha={alpha!r} is invalid: a stable index must lie in (0, 2].")

    def process(key, t, params):
        del t
        return sample_symmetric_stable(key, alpha, params.shape, params.dtype, scale)

    return process


def sample_pareto(key, alpha, shape, dtype=jnp.float32, scale=1.0):
    """Symmetric Pareto (Lomax) samples: sign * scale * (U^(-1/alpha) - 1), tail index alpha.

    P(|X| > x) = (1 + x/scale)^(-alpha): finite variance only for alpha > 2.
    """
    ku, ks = jax.random.split(key)
    u = jax.random.uniform(ku, shape, dtype, minval=jnp.finfo(dtype).tiny, maxval=1.0)
    sign = jax.random.rademacher(ks, shape, dtype)
    return sign * scale * jnp.expm1(-jnp.log(u) / alpha)


def pareto(alpha: float, scale: float = 1.0) -> GradientProcess:
    """g_t symmetric Pareto (Lomax) iid with tail index alpha (see `sample_pareto`)."""
    if alpha <= 0:
        raise ValueError(f"alpha={alpha!r} is invalid: a tail index must be > 0.")

    def process(key, t, params):
        del t
        return sample_pareto(key, alpha, params.shape, params.dtype, scale)

    return process


# --------------------------------------------------------------------------- simulator


class SimulationResult(NamedTuple):
    """Per-step summaries of Delta (leading axis: step t = 1..T).

    edges: (bins + 1,) histogram edges. counts: (T, bins) int32 counts of Delta in
    [edges[i], edges[i+1]); underflow/overflow/nonfinite: (T,) counts below edges[0], at or
    above edges[-1], and nan/inf. moments: dict of (T,) arrays -- Delta's mean, var, abs_mean,
    abs_var, skew, kurt (excess), min, max; the gradient's grad_mean, grad_var, grad_abs_mean;
    param_sq_mean (mean theta^2); with `spread_beta`: spread_mean, spread_median, step_pred_mean
    (mean 1/sqrt(1+gamma^2)), ema_abs_mean (mean |m_t|). samples: (len(keep_steps), n) Delta at
    keep_steps. steps: (T,) the step numbers.
    """

    edges: jax.Array
    counts: jax.Array
    underflow: jax.Array
    overflow: jax.Array
    nonfinite: jax.Array
    moments: dict[str, jax.Array]
    samples: jax.Array
    keep_steps: tuple[int, ...]
    steps: jax.Array


def histogram_edges(bins: int, value_range: tuple[float, float]) -> jax.Array:
    """`bins + 1` uniform edges on value_range (validated)."""
    lo, hi = value_range
    if not bins >= 1:
        raise ValueError(f"bins={bins!r} is invalid: it must be >= 1.")
    if not hi > lo:
        raise ValueError(f"value_range={value_range!r} is invalid: it needs lo < hi.")
    return jnp.linspace(lo, hi, bins + 1)


def _histogram(x, lo, hi, bins):
    """Counts in uniform bins by arithmetic binning + bincount (cheap on device)."""
    finite = jnp.isfinite(x)
    idx = jnp.floor((x - lo) * (bins / (hi - lo)))
    idx = jnp.clip(idx, -1, bins).astype(jnp.int32) + 1  # 0: under, bins+1: over
    idx = jnp.where(finite, idx, bins + 2)
    c = jnp.bincount(idx.ravel(), length=bins + 3)
    return c[1 : bins + 1], c[0], c[bins + 1], c[bins + 2]


def _moments(x):
    mean = jnp.mean(x)
    d = x - mean
    var = jnp.mean(d * d)
    sd = jnp.sqrt(var)
    skew = jnp.mean(d**3) / jnp.where(sd > 0, sd**3, jnp.nan)
    kurt = jnp.mean(d**4) / jnp.where(var > 0, var**2, jnp.nan) - 3.0
    a = jnp.abs(x)
    abs_mean = jnp.mean(a)
    return {
        "mean": mean,
        "var": var,
        "abs_mean": abs_mean,
        "abs_var": jnp.mean((a - abs_mean) ** 2),
        "skew": skew,
        "kurt": kurt,
        "min": jnp.min(x),
        "max": jnp.max(x),
    }


def simulate(*args, key: jax.Array | int = 0, **kwargs) -> SimulationResult:
    """Monte Carlo of the normalized update of `transform` on n independent coordinates.

    `simulate(transform, process, key=k, **kw)` is `make_simulator(transform, process, **kw)(k)`;
    see `make_simulator` for the arguments (n, steps, learning_rate, hparams, bins, value_range,
    keep_steps, spread_beta, params0, dtype). Build the simulator once with `make_simulator` to
    run several keys without recompiling.
    """
    return make_simulator(*args, **kwargs)(key)


def make_simulator(
    transform: str | optax.GradientTransformation = "theory",
    process: GradientProcess | None = None,
    *,
    n: int = 100_000,
    steps: int = 20,
    learning_rate: float = 1.0,
    hparams: dict[str, Any] | None = None,
    bins: int = 200,
    value_range: tuple[float, float] = (-5.0, 5.0),
    keep_steps: Sequence[int] = (),
    spread_beta: float | None = None,
    params0: jax.Array | None = None,
    dtype: Any = jnp.float32,
) -> Callable[[jax.Array | int], SimulationResult]:
    """Builds a jitted Monte Carlo of the normalized update: `key -> SimulationResult`.

    Args:
      transform: 'theory' (default), 'adam_model', an `optaxlab.optimizers` name, or any
        `optax.GradientTransformation` whose update is -learning_rate * direction.
      process: gradient process `(key, t, params) -> grads` (default `gaussian()` = N(0, 1)).
      n: number of independent coordinates.
      steps: number of steps T.
      learning_rate: the constant lr used to normalize, Delta = update / learning_rate (and
        passed to named transforms).
      hparams: keyword hyperparameters for a named transform.
      bins, value_range: the fixed histogram of Delta.
      keep_steps: 1-indexed steps at which all n values of Delta are returned (e.g. for KS tests).
      spread_beta: if set, also track bias-corrected EMAs m, v of g with this beta and report
        the spread gamma = sqrt(v - m^2)/|m| ("Gradient Spread as an Intuition for the Adam
        Optimizer") over
        coordinates.
      params0: initial coordinates (n,) (default zeros); they matter for param-dependent processes.
      dtype: float dtype of the simulation.

    Returns:
      A function of a PRNG key (or int seed) returning a `SimulationResult`; compiled on the
      first call, reused for later keys.
    """
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"n={n!r} is invalid: it must be a positive int.")
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps={steps!r} is invalid: it must be a positive int.")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate={learning_rate!r} is invalid: it must be > 0.")
    keep = tuple(int(s) for s in keep_steps)
    bad = [s for s in keep if not 1 <= s <= steps]
    if bad:
        raise ValueError(f"keep_steps {bad} are invalid: they must lie in [1, steps={steps}].")
    if spread_beta is not None and not 0.0 <= spread_beta < 1.0:
        raise ValueError(f"spread_beta={spread_beta!r} is invalid: it must lie in [0, 1).")
    edges = histogram_edges(bins, value_range)
    tx = resolve_transform(transform, learning_rate, hparams)
    process = gaussian() if process is None else process
    if params0 is None:
        params0 = jnp.zeros((n,), dtype)
    params0 = jnp.asarray(params0, dtype)
    if params0.shape != (n,):
        raise ValueError(f"params0 has shape {params0.shape}; expected ({n},).")
    lo, hi = float(value_range[0]), float(value_range[1])
    keep_arr = jnp.asarray(keep + (-1,), jnp.int32)  # last row: scratch for other steps

    def step(carry, t):
        params, opt_state, ema, buf, key = carry
        key, sub = jax.random.split(key)
        g = process(sub, t, params).astype(dtype)
        updates, opt_state = tx.update(g, opt_state, params)
        params = optax.apply_updates(params, updates)
        delta = updates / learning_rate
        counts, under, over, nonfinite = _histogram(delta, lo, hi, bins)
        out = {f"{k}": v for k, v in _moments(delta).items()}
        out["grad_mean"] = jnp.mean(g)
        out["grad_var"] = jnp.var(g)
        out["grad_abs_mean"] = jnp.mean(jnp.abs(g))
        out["param_sq_mean"] = jnp.mean(params * params)
        if spread_beta is not None:
            m, v = ema
            b = spread_beta
            m = b * m + (1 - b) * g
            v = b * v + (1 - b) * g * g
            c = 1.0 - b ** t.astype(dtype)
            mh, vh = m / c, v / c
            gamma = jnp.sqrt(jnp.maximum(vh - mh * mh, 0.0)) / jnp.abs(mh)
            out["spread_mean"] = jnp.mean(gamma)
            out["spread_median"] = jnp.median(gamma)
            out["step_pred_mean"] = jnp.mean(1.0 / jnp.sqrt(1.0 + gamma * gamma))
            out["ema_abs_mean"] = jnp.mean(jnp.abs(mh))
            ema = (m, v)
        if keep:
            row = jnp.argmax(jnp.concatenate([keep_arr[:-1] == t, jnp.array([True])]))
            buf = buf.at[row].set(delta)
        return (params, opt_state, ema, buf, key), (counts, under, over, nonfinite, out)

    @jax.jit
    def run(key, params0):
        opt_state = tx.init(params0)
        ema = (jnp.zeros_like(params0), jnp.zeros_like(params0))
        buf = jnp.zeros((len(keep) + 1, n) if keep else (0, n), dtype)
        carry = (params0, opt_state, ema, buf, key)
        ts = jnp.arange(1, steps + 1, dtype=jnp.int32)
        carry, ys = jax.lax.scan(step, carry, ts)
        return carry[3], ys

    def simulator(key: jax.Array | int) -> SimulationResult:
        if isinstance(key, int):
            key = jax.random.key(key)
        buf, (counts, under, over, nonfinite, moments) = run(key, params0)
        return SimulationResult(
            edges=edges,
            counts=counts,
            underflow=under,
            overflow=over,
            nonfinite=nonfinite,
            moments=moments,
            samples=buf[: len(keep)],
            keep_steps=keep,
            steps=jnp.arange(1, steps + 1),
        )

    return simulator
