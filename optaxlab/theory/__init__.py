"""optaxlab.theory: closed forms and Monte Carlo simulators of the papers (pure jax/numpy/scipy).

Imports nothing else of optaxlab at import time (DESIGN.md, direction of imports); optimizer names
are resolved lazily through `optaxlab.optimizers` inside the functions that take them.

- update_law: the law of Adam's normalized update under the theory model of "On the Distributional
  Properties of Adaptive Gradients"
  (pdf, cdf, bin probabilities, moments, the Beta law of K, EMA effective sample size); float64
  for host (Python / numpy) inputs, the inputs' dtype (float32) for JAX arrays and under jit.
- simulate: a jitted Monte Carlo of any optimizer's normalized update on iid coordinates, fed by a
  gradient process (Gaussian with time-varying mean/std, Cauchy, Student-t, stable, Pareto, ...).
- spread: the gradient spread gamma of "Gradient Spread as an Intuition for the Adam Optimizer" and
  the predicted step 1/sqrt(1 + gamma^2).
- heavy_tails: the noise norms, variance against sample size and tail-index estimators of
  "Why Adam Beats SGD for Attention Models".
- equal_betas: the sequence-operator view (App. E) and online Gaussian VI (Theorem 4.1) of
  "In Search of Adam's Secret Sauce".
- quadratic: the toy quadratics of "In Search of Adam's Secret Sauce" (App. D) and a vmapped
  optimizer runner.
- plots: matplotlib helpers for the pdf family and the variance curves (matplotlib loaded lazily).
"""

from optaxlab.theory.equal_betas import (
    adam_equal_betas_operator,
    damped_periodic,
    filter_sequence,
    vi_objective,
    vi_update,
)
from optaxlab.theory.heavy_tails import (
    hill_estimator,
    noise_norms,
    stable_tail_index,
    variance_vs_sample_size,
)
from optaxlab.theory.plots import plot_pdf_family, plot_variance_curves
from optaxlab.theory.quadratic import (
    ToyQuadratic,
    full_gradient,
    haar_orthogonal,
    quadratic_loss,
    run_quadratic,
    stochastic_gradient,
    toy_quadratic,
)
from optaxlab.theory.simulate import (
    SimulationResult,
    adam_model,
    cauchy,
    gaussian,
    make_simulator,
    pareto,
    resolve_transform,
    sample_pareto,
    sample_symmetric_stable,
    simulate,
    student_t,
    symmetric_stable,
    theory_model,
)
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
    "SimulationResult",
    "ToyQuadratic",
    "abs_update_mean",
    "abs_update_variance",
    "adam_direction",
    "adam_equal_betas_operator",
    "adam_model",
    "cauchy",
    "damped_periodic",
    "effective_sample_size",
    "filter_sequence",
    "full_gradient",
    "gaussian",
    "haar_orthogonal",
    "hill_estimator",
    "k_cdf",
    "k_distribution",
    "k_params",
    "k_pdf",
    "make_simulator",
    "noise_norms",
    "pareto",
    "plot_pdf_family",
    "plot_variance_curves",
    "predicted_step",
    "quadratic_loss",
    "resolve_transform",
    "run_quadratic",
    "sample_pareto",
    "sample_symmetric_stable",
    "sample_update",
    "simulate",
    "spread",
    "stable_tail_index",
    "stochastic_gradient",
    "student_t",
    "student_t_variance",
    "symmetric_stable",
    "theory_model",
    "toy_quadratic",
    "update_bin_probs",
    "update_cdf",
    "update_pdf",
    "update_variance",
    "variance_vs_sample_size",
    "vi_objective",
    "vi_update",
]
