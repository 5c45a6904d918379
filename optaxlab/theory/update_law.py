"""Closed-form law of Adam's normalized update ("On the Distributional Properties of Adaptive
Gradients", Sections 3-4).

The theory model (Theorem 1): no momentum, eps = 0, gradients g_1..g_m iid N(0, 1), and a
preconditioner by simple averaging, so the normalized update is

    Delta = g_m / sqrt((1/m) sum_{i<=m} g_i^2).

Then K = g_m^2 / sum_{i<=m} g_i^2 ~ Beta(1/2, (m-1)/2), Delta = sign(g_m) sqrt(m K), and on
|x| <= sqrt(m)

    f_m(x) = (1/sqrt(m)) Gamma(m/2) / (Gamma((m-1)/2) Gamma(1/2)) (1 - x^2/m)^((m-3)/2),
    P(|Delta| <= x) = I_{x^2/m}(1/2, (m-1)/2)        (regularized incomplete beta).

Integer m >= 2 is the theorem. The Beta law, and hence every function here, is defined for any real
m > 1; real m is the interpolation used with the effective sample size of an EMA
(`effective_sample_size`), e.g. by the monitor's theory overlay at step t with m = m_eff(t).
m = 1 is the limit: K = 1 and Delta = sign(g) = +-1 (Adam's first step); the cdf, bin
probabilities and moments handle it, the density there is a pair of atoms and is returned as 0.
Values m <= 1 + 1e-6 are treated as m = 1 (float32 round-off of m_eff(1)).

Two precisions, one formula. Every function is vectorized (broadcasts x against m) and is written
once against an array namespace:

- called with Python numbers or numpy arrays (host use: reports, plots, tests, experiments) it
  runs in float64 with numpy / `scipy.special` and returns numpy float64 (a numpy scalar for
  scalar inputs): accurate to ~1e-15 relative (the scalars are checked at 1e-12 against the
  closed forms);
- called with JAX arrays, or traced under `jax.jit` (the monitor's overlay), it runs in
  `jax.numpy` / `jax.scipy.special` in the input's dtype: float32 normally, float64 when x64 is
  enabled. In float32 the incomplete beta of `jax.scipy.special.betainc` loses accuracy for
  large m (error ~1e-4 at m = 2000), so for m > 200 the float32 cdf uses the Student-t
  representation below with a normal approximation of the t cdf (absolute error < 3e-6 for
  m >= 200).

Student-t representation: T = sqrt(m-1) g_m / sqrt(sum_{i<m} g_i^2) ~ t_{m-1} and
Delta = sqrt(m) T / sqrt(T^2 + m - 1), a monotone map.
"""

from __future__ import annotations

import functools
import math
from types import ModuleType

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
import numpy as np
import scipy.special as ssp

__all__ = [
    "abs_update_mean",
    "abs_update_variance",
    "effective_sample_size",
    "k_cdf",
    "k_distribution",
    "k_params",
    "k_pdf",
    "sample_update",
    "student_t_variance",
    "update_bin_probs",
    "update_cdf",
    "update_pdf",
    "update_variance",
]

_M_ONE_TOL = 1e-6  # m <= 1 + _M_ONE_TOL is treated as the m = 1 sign law.
_F32_NORMAL_SWITCH = 200.0  # float32 cdf: Student-t/normal approximation above this m.
_F64_NORMAL_SWITCH = 1e7


def _is_concrete(a) -> bool:
    return not isinstance(a, jax.core.Tracer)


def _on_host(*args) -> bool:
    """True when every argument is a Python number / sequence or a numpy value (no JAX array,
    concrete or traced): such calls are computed in float64 with numpy and scipy."""
    return not any(isinstance(a, (jax.Array, jax.core.Tracer)) for a in args)


def _host_result(x):
    """numpy float64 out: a numpy scalar for 0-d results."""
    x = np.asarray(x, np.float64)
    return x[()] if x.ndim == 0 else x


def _host_float(*args):
    return [np.asarray(a, np.float64) for a in args]


def _backend(*args) -> tuple[ModuleType, ModuleType]:
    """(array namespace, special-functions namespace) for these (already converted) arrays."""
    return (np, ssp) if all(isinstance(a, np.ndarray) for a in args) else (jnp, jsp)


def _check_m(m, name: str = "m") -> None:
    """Raises ValueError for concrete m < 1 (or nan); traced values are not checked."""
    if not _is_concrete(m):
        return
    arr = np.asarray(m, dtype=np.float64)
    if np.any(~(arr >= 1.0)):
        bad = arr[~(arr >= 1.0)].ravel()[0]
        raise ValueError(
            f"{name}={bad!r} is invalid: the sample size must be a real number >= 1 "
            "(integer m >= 2 is the theorem, real m > 1 its EMA interpolation, "
            "m = 1 the sign law)."
        )


def _as_float(*args):
    """Converts args to arrays of one common floating dtype: numpy float64 on the host path,
    else jax arrays (their dtype; the default float for integers)."""
    if all(isinstance(a, np.ndarray) for a in args):
        return [np.asarray(a, np.float64) for a in args]
    arrs = [jnp.asarray(a) for a in args]
    dtype = jnp.result_type(*arrs)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)  # the default float: float64 when x64 is enabled
    return [a.astype(dtype) for a in arrs]


def _log_gamma_ratio(m, xp, sp):
    """log Gamma(m/2) - log Gamma((m-1)/2), accurate in float32 and float64 for large m.

    With z = (m-1)/2: log Gamma(z + 1/2) - log Gamma(z) = log(z)/2 - 1/(8z) + 1/(192 z^3)
    - 1/(640 z^5) + 17/(14336 z^7) + O(z^-9), used for z > 20 (error < 4e-15, checked against
    mpmath); the gammaln difference below that (where it has no cancellation to speak of).
    """
    z = (m - 1.0) / 2.0
    z_safe = xp.maximum(z, 1e-30)
    exact = sp.gammaln(m / 2.0) - sp.gammaln(z_safe)
    z_big = xp.maximum(z, 20.0)
    series = (0.5 * xp.log(z_big) - 1.0 / (8.0 * z_big) + 1.0 / (192.0 * z_big**3)
              - 1.0 / (640.0 * z_big**5) + 17.0 / (14336.0 * z_big**7))
    return xp.where(z > 20.0, series, exact)


def _dispatch(impl, jitted, *args):
    """float64 numpy/scipy for host arguments, the jitted JAX version otherwise."""
    if _on_host(*args):
        with np.errstate(all="ignore"):  # both branches of every `where` are evaluated
            return _host_result(impl(*_host_float(*args)))
    return jitted(*args)


def update_pdf(x, m):
    """Density f_m(x) of the normalized update Delta under the theory model (Theorem 1).

    f_m(x) = (1/sqrt(m)) Gamma(m/2) / (Gamma((m-1)/2) sqrt(pi)) (1 - x^2/m)^((m-3)/2) on
    |x| <= sqrt(m), 0 outside. m = 2 is the arcsine law 1/(pi sqrt(2 - x^2)) (infinite at the
    endpoints), m = 3 the uniform law on [-sqrt 3, sqrt 3], m -> inf the standard normal.

    Args:
      x: evaluation points (any shape).
      m: sample size, real >= 1 (broadcast against x). At m = 1 the law is atoms at +-1 and the
        returned density is 0.

    Returns:
      The density, with the broadcast shape of x and m: numpy float64 for host inputs, a JAX
      array in the inputs' dtype otherwise.

    References:
      "On the Distributional Properties of Adaptive Gradients", Theorem 1.
    """
    _check_m(m)
    return _dispatch(_pdf, _pdf_jit, x, m)


def _pdf(x, m):
    xp, sp = _backend(x, m)
    x, m = _as_float(x, m)
    is_one = m <= 1.0 + _M_ONE_TOL
    m_safe = xp.where(is_one, 2.0, m)
    log_c = -0.5 * xp.log(m_safe) + _log_gamma_ratio(m_safe, xp, sp) - 0.5 * math.log(math.pi)
    r = x * x / m_safe  # in [0, 1] on the support
    inside = r < 1.0
    r_in = xp.where(inside, r, 0.0)
    dens_in = xp.exp(log_c + 0.5 * (m_safe - 3.0) * xp.log1p(-r_in))
    # Endpoints |x| = sqrt(m): +inf for m < 3, the constant for m = 3, 0 for m > 3.
    dens_end = xp.where(m_safe < 3.0, xp.inf, xp.where(m_safe == 3.0, xp.exp(log_c), 0.0))
    dens = xp.where(inside, dens_in, xp.where(r == 1.0, dens_end, 0.0))
    return xp.where(is_one, xp.zeros_like(dens), dens)


_pdf_jit = jax.jit(_pdf)


def _abs_cdf(y, m, xp, sp):
    """P(|Delta| <= y) for y >= 0, m > 1 (continuous part)."""
    dtype = xp.result_type(y, m)
    m_safe = xp.maximum(m, 1.0 + 2 * _M_ONE_TOL)
    r = xp.clip(y * y / m_safe, 0.0, 1.0)
    exact = sp.betainc(xp.asarray(0.5, dtype), (m_safe - 1.0) / 2.0, r)
    # Student-t route: t = y sqrt((m-1)/(m - y^2)), P(|T| <= t) with a normal approximation
    # of the t_nu cdf: z = t (1 - 1/(4 nu)) / sqrt(1 + t^2/(2 nu)).
    nu = m_safe - 1.0
    denom = xp.maximum(m_safe - y * y, 1e-30)
    t = y * xp.sqrt(nu / denom)
    z = t * (1.0 - 1.0 / (4.0 * nu)) / xp.sqrt(1.0 + t * t / (2.0 * nu))
    approx = xp.where(r >= 1.0, 1.0, 2.0 * sp.ndtr(z) - 1.0)
    switch = _F64_NORMAL_SWITCH if dtype == np.float64 else _F32_NORMAL_SWITCH
    return xp.where(m_safe > switch, approx, exact)


def _cdf(x, m, strict: bool):
    """P(Delta <= x) (strict=False) or P(Delta < x) (strict=True); differ only at m = 1."""
    xp, sp = _backend(x, m)
    x, m = _as_float(x, m)
    x, m = xp.broadcast_arrays(x, m)
    y = xp.abs(x)
    cont = 0.5 + 0.5 * xp.sign(x) * _abs_cdf(y, m, xp, sp)
    # m = 1: atoms of mass 1/2 at -1 and +1.
    if strict:
        atom = xp.where(x <= -1.0, 0.0, xp.where(x <= 1.0, 0.5, 1.0))
    else:
        atom = xp.where(x < -1.0, 0.0, xp.where(x < 1.0, 0.5, 1.0))
    return xp.where(m <= 1.0 + _M_ONE_TOL, atom.astype(cont.dtype), cont)


_cdf_jit = jax.jit(_cdf, static_argnames="strict")


def update_cdf(x, m):
    """Cdf P(Delta <= x) of the normalized update under the theory model.

    Closed form through the regularized incomplete beta function:
    P(|Delta| <= y) = I_{y^2/m}(1/2, (m-1)/2) for 0 <= y <= sqrt(m), then symmetrized:
    P(Delta <= x) = 1/2 + sign(x) P(|Delta| <= |x|) / 2. Real m >= 1 (m = 1: atoms at +-1).

    Args:
      x: evaluation points (any shape).
      m: sample size, real >= 1 (broadcast against x).

    Returns:
      The cdf, numpy float64 for host inputs, a JAX array in the inputs' dtype otherwise.

    References:
      "On the Distributional Properties of Adaptive Gradients", Theorem 1.
    """
    _check_m(m)
    return _dispatch(functools.partial(_cdf, strict=False),
                     functools.partial(_cdf_jit, strict=False), x, m)


def update_bin_probs(edges, m):
    """Probability mass of each bin [edges[i], edges[i+1]) under the update law f_m.

    Args:
      edges: increasing bin edges, shape (..., n_bins + 1) (last axis are the edges).
      m: sample size (real >= 1), broadcast against edges[..., 0]; e.g. a traced m_eff(t).

    Returns:
      Array (..., n_bins) of bin masses (numpy float64 for host inputs). The mass outside
      [edges[0], edges[-1]) is 1 - sum. Bins are left-closed, matching floor-based binning
      (matters only for m = 1's atoms at +-1).
    """
    _check_m(m)
    if np.ndim(edges) < 1 or np.shape(edges)[-1] < 2:
        raise ValueError(
            f"edges must have at least 2 entries on the last axis, got shape {np.shape(edges)}"
        )
    return _dispatch(_bin_probs, _bin_probs_jit, edges, m)


def _bin_probs(edges, m):
    xp, _ = _backend(edges, m)
    edges, m = _as_float(edges, m)
    cdf = _cdf(edges, xp.expand_dims(m, -1), strict=True)
    return xp.diff(cdf, axis=-1)


_bin_probs_jit = jax.jit(_bin_probs)


def update_variance(m):
    """Var[Delta] = 1 for every m >= 1 (Corollary 1): E[G] = E[m K] = 1.

    Args:
      m: sample size, real >= 1.

    Returns:
      Ones of m's shape (numpy float64 for host inputs).

    References:
      "On the Distributional Properties of Adaptive Gradients", Corollary 1.
    """
    _check_m(m)
    if _on_host(m):
        return _host_result(np.ones_like(np.asarray(m, np.float64)))
    (m,) = _as_float(m)
    return jnp.ones_like(m)


def abs_update_mean(m):
    """E|Delta| = 2 sqrt(m) Gamma(m/2) / ((m-1) sqrt(pi) Gamma((m-1)/2)).

    -> sqrt(2/pi) as m -> inf; 1 at m = 1.

    Args:
      m: sample size, real >= 1.

    Returns:
      E|Delta| (numpy float64 for host inputs).
    """
    _check_m(m)
    return _dispatch(_abs_mean, _abs_mean_jit, m)


def _abs_mean(m):
    xp, sp = _backend(m)
    (m,) = _as_float(m)
    is_one = m <= 1.0 + _M_ONE_TOL
    m_safe = xp.where(is_one, 2.0, m)
    log_mean = (
        math.log(2.0)
        + 0.5 * xp.log(m_safe)
        + _log_gamma_ratio(m_safe, xp, sp)
        - xp.log(m_safe - 1.0)
        - 0.5 * math.log(math.pi)
    )
    return xp.where(is_one, 1.0, xp.exp(log_mean))


_abs_mean_jit = jax.jit(_abs_mean)


def abs_update_variance(m):
    """Var[|Delta|] = 1 - 4 m Gamma(m/2)^2 / ((m-1)^2 pi Gamma((m-1)/2)^2) (Corollary 2).

    1 - 8/pi^2 = 0.1894 at m = 2, 0.25 at m = 3, increasing to 1 - 2/pi = 0.3634 as m -> inf;
    0 at m = 1 (|Delta| = 1).

    Args:
      m: sample size, real >= 1.

    Returns:
      Var[|Delta|] (numpy float64 for host inputs).

    References:
      "On the Distributional Properties of Adaptive Gradients", Corollary 2.
    """
    return 1.0 - abs_update_mean(m) ** 2


def student_t_variance(m):
    """Variance m/(m-2) of Student-t with m dof (eq. 34): the ratio g / sqrt(chi2_m / m) with a
    denominator *independent* of g. Infinite for m <= 2.

    Args:
      m: degrees of freedom, real >= 1.

    Returns:
      m / (m - 2), or inf (numpy float64 for host inputs).

    References:
      "On the Distributional Properties of Adaptive Gradients", eq. (34).
    """
    _check_m(m)
    return _dispatch(_t_var, _t_var_jit, m)


def _t_var(m):
    xp, _ = _backend(m)
    (m,) = _as_float(m)
    return xp.where(m > 2.0, m / xp.maximum(m - 2.0, 1e-30), xp.inf)


_t_var_jit = jax.jit(_t_var)


def k_params(m):
    """Parameters (a, b) = (1/2, (m-1)/2) of the Beta law of K = g_m^2 / sum_{i<=m} g_i^2."""
    _check_m(m)
    if _on_host(m):
        (m,) = _host_float(m)
        return _host_result(np.full_like(m, 0.5)), _host_result((m - 1.0) / 2.0)
    (m,) = _as_float(m)
    return jnp.full_like(m, 0.5), (m - 1.0) / 2.0


def k_pdf(k, m):
    """Density of K ~ Beta(1/2, (m-1)/2) on (0, 1), real m > 1."""
    _check_m(m)
    return _dispatch(_k_pdf, _k_pdf_jit, k, m)


def _k_pdf(k, m):
    xp, sp = _backend(k, m)
    k, m = _as_float(k, m)
    a, b = 0.5, (m - 1.0) / 2.0
    log_beta = sp.gammaln(a) + sp.gammaln(b) - sp.gammaln(a + b)
    inside = (k > 0.0) & (k < 1.0)
    k_in = xp.where(inside, k, 0.5)
    logp = (a - 1.0) * xp.log(k_in) + (b - 1.0) * xp.log1p(-k_in) - log_beta
    return xp.where(inside, xp.exp(logp), 0.0)


_k_pdf_jit = jax.jit(_k_pdf)


def k_cdf(k, m):
    """Cdf of K ~ Beta(1/2, (m-1)/2), real m > 1: I_k(1/2, (m-1)/2)."""
    _check_m(m)
    return _dispatch(_k_cdf, _k_cdf_jit, k, m)


def _k_cdf(k, m):
    xp, sp = _backend(k, m)
    k, m = _as_float(k, m)
    return sp.betainc(xp.asarray(0.5, k.dtype), (m - 1.0) / 2.0, xp.clip(k, 0.0, 1.0))


_k_cdf_jit = jax.jit(_k_cdf)


def k_distribution(m):
    """The Beta(1/2, (m-1)/2) law of K as a frozen `scipy.stats` distribution (host-side use:
    quantiles, sampling, plots). Needs concrete m > 1."""
    from scipy import stats

    _check_m(m)
    m = float(m)
    if m <= 1.0:
        raise ValueError(f"m={m}: the Beta law of K needs m > 1.")
    return stats.beta(0.5, (m - 1.0) / 2.0)


def sample_update(key, m, shape=(), dtype=jnp.float32):
    """Exact samples of Delta ~ f_m via Delta = sign * sqrt(m K), K ~ Beta(1/2, (m-1)/2); m > 1."""
    _check_m(m)
    m = jnp.asarray(m, dtype)
    k_key, s_key = jax.random.split(key)
    k = jax.random.beta(k_key, jnp.asarray(0.5, dtype), (m - 1.0) / 2.0, shape, dtype)
    sign = jax.random.rademacher(s_key, shape, dtype)
    return sign * jnp.sqrt(m * k)


def effective_sample_size(beta, t):
    """Effective sample size of a bias-corrected EMA of t iid samples (eq. 9-12).

    The weights w_i = (1-b) b^(t-i) / (1-b^t) give m_eff = 1 / sum w_i^2
    = (1 - b^t)(1 + b) / ((1 - b)(1 + b^t)): 1 at t = 1, -> (1+b)/(1-b) ~ 2/(1-b) as t -> inf,
    t for b = 1 (plain average), 1 for b = 0.

    Args:
      beta: EMA decay in [0, 1] (e.g. Adam's b2). Traced values allowed.
      t: step count >= 1 (int or float, traced allowed).

    Returns:
      m_eff, numpy float64 for host inputs (1 - b^t as -expm1(t log b)), a JAX array in the
      inputs' dtype otherwise (the monitor's jitted overlay).

    References:
      "On the Distributional Properties of Adaptive Gradients", eq. (9)-(12).
    """
    if _is_concrete(beta):
        b_arr = np.asarray(beta, dtype=np.float64)
        if np.any(~((b_arr >= 0.0) & (b_arr <= 1.0))):
            raise ValueError(f"beta={beta!r}: an EMA decay must be in [0, 1].")
    if _is_concrete(t):
        t_arr = np.asarray(t, dtype=np.float64)
        if np.any(~(t_arr >= 1.0)):
            raise ValueError(f"t={t!r}: the step count must be >= 1.")
    return _dispatch(_ess, _ess_jit, beta, t)


def _ess(beta, t):
    xp, _ = _backend(beta, t)
    beta, t = _as_float(beta, t)
    b_safe = xp.where(beta >= 1.0, 0.5, beta)
    log_b = xp.log(xp.maximum(b_safe, 1e-300 if xp is np else 1e-30))
    bt = xp.where(b_safe <= 0.0, 0.0, xp.exp(t * log_b))
    # 1 - b^t via expm1 for accuracy when b is close to 1.
    one_minus_bt = xp.where(b_safe <= 0.0, 1.0, -xp.expm1(t * log_b))
    ess = one_minus_bt * (1.0 + b_safe) / ((1.0 - b_safe) * (1.0 + bt))
    return xp.where(beta >= 1.0, t, ess)


_ess_jit = jax.jit(_ess)
