"""optaxlab.theory: closed forms and Monte Carlo simulators of the papers (pure jax/numpy/scipy).

Imports nothing else of optaxlab at import time (DESIGN.md, direction of imports).

- update_law: the law of Adam's normalized update under seed 000's theory model (pdf, cdf, bin
  probabilities, moments, the Beta law of K, EMA effective sample size).
- spread: seed 002's gradient spread gamma and the predicted step 1/sqrt(1 + gamma^2).
"""

from optaxlab.theory.spread import adam_direction, predicted_step, spread
from optaxlab.theory.update_law import (
    abs_update_mean,
    abs_update_variance,
    effective_sample_size,
    k_cdf,
    k_distribution,
    k_params,
    k_pdf,
    sample_update,
    student_t_variance,
    update_bin_probs,
    update_cdf,
    update_pdf,
    update_variance,
)

__all__ = [
    "abs_update_mean",
    "abs_update_variance",
    "adam_direction",
    "effective_sample_size",
    "k_cdf",
    "k_distribution",
    "k_params",
    "k_pdf",
    "predicted_step",
    "sample_update",
    "spread",
    "student_t_variance",
    "update_bin_probs",
    "update_cdf",
    "update_pdf",
    "update_variance",
]
