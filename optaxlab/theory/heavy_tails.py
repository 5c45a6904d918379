"""Heavy-tail diagnostics of gradient noise ("Why Adam Beats SGD for Attention Models").

- `noise_norms`: samples of ||g_batch - g_full|| from per-example gradients (Fig. 1/4/7):
  concentrated for Gaussian-like noise, heavy-tailed for attention models.
- `variance_vs_sample_size`: the running empirical variance of a sample against the sample size;
  it settles for finite-variance noise and keeps jumping when the variance is infinite (Fig. 1(f)).
- Tail-index estimators: `hill_estimator` (Hill, 1975, "A simple general approach to inference
  about the tail of a distribution", Ann. Statist. 3(5)) for Pareto-type tails, and
  `stable_tail_index` (Mohammadi, Mohammadpour & Ogata, 2015, "On estimating the tail index and
  the spectral measure of multivariate alpha-stable distributions", Metrika 78), the estimator
  Simsekli et al. (2019) used and the paper (App. H, Fig. 7) applied to noise norms.

These are host-side diagnostics on numpy arrays (jax arrays are accepted).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "hill_estimator",
    "noise_norms",
    "stable_tail_index",
    "variance_vs_sample_size",
]


def noise_norms(
    per_example_grads, batch_size: int, num_batches: int, seed: int = 0, full_grad=None
) -> np.ndarray:
    """Samples of the gradient-noise norm ||g_batch - g_full||.

    Args:
      per_example_grads: (N, d) array, one flattened gradient per example.
      batch_size: examples per mini-batch (drawn without replacement within a batch).
      num_batches: number of mini-batches (samples of the norm) to draw.
      seed: numpy seed of the batch draws.
      full_grad: (d,) the full gradient; default the mean over all N examples (the paper
        estimates it on a large batch).

    Returns:
      (num_batches,) noise norms.
    """
    g = np.asarray(per_example_grads, np.float64)
    if g.ndim != 2:
        raise ValueError(f"per_example_grads must be (N, d); got shape {g.shape}.")
    n = g.shape[0]
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size={batch_size!r} is invalid: it must lie in [1, N={n}].")
    if num_batches < 1:
        raise ValueError(f"num_batches={num_batches!r} is invalid: it must be >= 1.")
    full = g.mean(0) if full_grad is None else np.asarray(full_grad, np.float64)
    rng = np.random.default_rng(seed)
    out = np.empty(num_batches)
    for i in range(num_batches):
        idx = rng.choice(n, size=batch_size, replace=False)
        out[i] = np.linalg.norm(g[idx].mean(0) - full)
    return out


def variance_vs_sample_size(x, sizes=None) -> tuple[np.ndarray, np.ndarray]:
    """Empirical variance of the first k samples, for k in `sizes` (default: 50 log-spaced).

    Returns (sizes, variances). Under finite variance the curve settles; under infinite variance
    (tail index < 2) it keeps growing in jumps (Fig. 1(c, f) of the paper).
    """
    x = np.asarray(x, np.float64).ravel()
    if x.size < 2:
        raise ValueError(f"need at least 2 samples, got {x.size}.")
    if sizes is None:
        sizes = np.unique(np.geomspace(2, x.size, 50).astype(int))
    sizes = np.asarray(sizes, int)
    if np.any(sizes < 2) or np.any(sizes > x.size):
        raise ValueError(
            f"sizes must lie in [2, {x.size}], got min {sizes.min()} max {sizes.max()}."
        )
    c1 = np.cumsum(x)
    c2 = np.cumsum(x * x)
    k = sizes.astype(np.float64)
    mean = c1[sizes - 1] / k
    var = (c2[sizes - 1] - k * mean**2) / (k - 1)
    return sizes, var


def hill_estimator(x, k: int | None = None) -> float:
    """Hill (1975) estimate of the tail index alpha of |x| from its k largest values.

    1/alpha_hat = (1/k) sum_{i<=k} log(X_(i) / X_(k+1)), X_(1) >= X_(2) >= ... the order statistics
    of |x|. Consistent for Pareto-type tails P(|X| > x) ~ C x^(-alpha) as k -> inf, k/N -> 0.
    Default k = floor(sqrt(N)).
    """
    a = np.sort(np.abs(np.asarray(x, np.float64).ravel()))[::-1]
    n = a.size
    if k is None:
        k = int(np.sqrt(n))
    if not 1 <= k < n:
        raise ValueError(f"k={k!r} is invalid: it must lie in [1, N-1={n - 1}].")
    if a[k] <= 0:
        raise ValueError("the (k+1)-th largest |x| is 0: too many zeros for a tail estimate.")
    return float(1.0 / np.mean(np.log(a[:k] / a[k])))


def stable_tail_index(x, k1: int | None = None) -> float:
    """Tail index of a symmetric alpha-stable sample (Mohammadi et al. 2015; Simsekli et al. 2019).

    Split the N = K1 K2 samples into K2 blocks of K1, summing each: Y_i = sum_j X_{(i-1)K1+j}.
    Then 1/alpha_hat = (1/log K1) ((1/K2) sum_i log|Y_i| - (1/N) sum_j log|X_j|), since a sum of
    K1 iid stable variables is K1^(1/alpha) times one of them. Default K1 = floor(sqrt(N)).
    Returns alpha_hat (values above 2 indicate Gaussian-like, light tails).
    """
    x = np.asarray(x, np.float64).ravel()
    n = x.size
    if k1 is None:
        k1 = int(np.sqrt(n))
    if not 2 <= k1 <= n // 2:
        raise ValueError(f"k1={k1!r} is invalid: it must lie in [2, N/2={n // 2}].")
    if not np.all(np.isfinite(x)):
        raise ValueError("x has non-finite values; the estimator needs finite samples.")
    k2 = n // k1
    x = x[: k1 * k2]
    y = x.reshape(k2, k1).sum(1)
    tiny = np.finfo(np.float64).tiny  # exact zeros (float round-off of a continuous law)

    def mean_log_abs(a):
        return np.mean(np.log(np.maximum(np.abs(a), tiny)))

    inv_alpha = (mean_log_abs(y) - mean_log_abs(x)) / np.log(k1)
    return float(1.0 / inv_alpha)
