"""optaxlab.transforms: the gradient transformations optax 0.2.8 lacks.

Everything here is an ``optax.GradientTransformation`` with a ``NamedTuple`` state and composes
with optax's own transforms (``optax.chain``, ``masked``, ``MultiSteps``, ``inject_hyperparams``,
``jit``). Where optax has the piece (``scale_by_sign``, ``clip_by_global_norm``, ``clip``, ``ema``,
``trace``, ...) we use it, and our extensions delegate to it at optax's default behaviour, except
for bias corrections (below):

  moments     ema(init='first'), trace(dampening=), scale_by_adam(bias_correction=, init=),
              scale_by_rms, scale_by_radam (accurate float32 bias corrections),
              track_gaussian_vi -> MeanVar   ("In Search of Adam's Secret Sauce": GI/ZI,
                                              Prop. 1, Thm. 4.1)
  normalize   scale_by_mollified_sign (adaptive or fixed mollifier; Secret Sauce),
              scale_by_laprop ("On the Distributional Properties of Adaptive Gradients")
  clipping    clip_by_coordinate (CClip), scale_by_acclip ("Why Adam Beats SGD for Attention
              Models")

Bias corrections 1 - b^t are computed as -expm1(t log b), with log b in float64 when b is a
Python number: accurate in float32, where optax's ``1 - b**t`` is ~1e-5 off at b = 0.999 (and
RAdam's rectification ~1% off at its first rectified steps). This is why ``scale_by_adam``,
``scale_by_rms`` and ``scale_by_radam`` are optaxlab's own rather than optax's.

Tracker -> normalizer hand-off
------------------------------
The online Gaussian tracker and the variance-mollified normalizer are two transforms, so that
Adam with equal betas is *literally*::

    optax.chain(
        track_gaussian_vi(beta), scale_by_mollified_sign(), optax.scale_by_learning_rate(lr)
    )

The tracker's *update* is a ``MeanVar(mean, var)`` pair of parameter-shaped trees (bias-corrected
when ``debias=True``); the normalizer consumes that pair and returns a plain tree. Its *state*
``GaussianVIState(count, mean, nu)`` holds the raw recursion for logging (m_t and
v_t = s_t^2 + m_t^2; the variance s_t^2 is its property ``var``). We chose a structured
update over one fused transform because (1) the normalizer is reusable with any other estimator
that emits ``MeanVar`` (and in fixed-mollifier mode with any mean, e.g. ``ema`` for the Signum
ablation), (2) the state is the minimum (two buffers, no copy of the variance in the normalizer),
and (3) everything *around* the pair is an ordinary tree, so optax's transforms compose before
the tracker (e.g. ``clip_by_global_norm``) and after the normalizer (weight decay, learning rate),
and ``optax.masked`` / ``MultiSteps`` / ``inject_hyperparams`` wrap the pair (or the whole chain)
without knowing about it. The one rule: between the tracker and the normalizer only
``MeanVar``-aware code may run (the normalizer raises a ``ValueError`` otherwise), so wrap the
*pair*, not the tracker alone, in ``optax.masked``.

Reading moments out of an optimizer state (for logging)
-------------------------------------------------------
These state types carry a gradient mean and a second moment / variance, per parameter leaf:

  ``GaussianVIState(count, mean, nu)``      mean m_t and raw second moment v_t (not debiased);
                                            the variance s_t^2 = v_t - m_t^2 is ``.var``
  ``optax.ScaleByAdamState(count, mu, nu)`` mean m_t and raw second moment v_t (var = v - m^2
                                            only for b1 = b2); also rmsprop's bias-corrected
                                            ``optax.ScaleByRmsWithCountState(count, nu)`` (no mu)
  ``optax.EmaState(count, ema)``            a gradient mean (signum, ema_sign: mean of sign(g))
  ``ScaleByLaPropState(count, mu, nu)``     nu as Adam's; mu is a momentum of normalized grads
  ``ScaleByACClipState(mu, nu)``            mean mu and nu = EMA |g|^alpha (tau^alpha)

Find them with ``optax.tree_utils.tree_get_all_with_path(state, 'mean')`` (field name) or
``optax.tree.get(state, 'nu')``; e.g. in ``adam_equal_betas``'s state ``mean`` and ``nu`` are
unique, and the tracker's variance is ``.var`` of the ``GaussianVIState`` holding them.
"""

from optaxlab.transforms.clipping import ScaleByACClipState, clip_by_coordinate, scale_by_acclip
from optaxlab.transforms.moments import (
    DampenedTraceState,
    GaussianVIState,
    MeanVar,
    ema,
    scale_by_adam,
    scale_by_radam,
    scale_by_rms,
    trace,
    track_gaussian_vi,
)
from optaxlab.transforms.normalize import (
    ScaleByLaPropState,
    scale_by_laprop,
    scale_by_mollified_sign,
)

__all__ = [
    "DampenedTraceState",
    "GaussianVIState",
    "MeanVar",
    "ScaleByACClipState",
    "ScaleByLaPropState",
    "clip_by_coordinate",
    "ema",
    "scale_by_acclip",
    "scale_by_adam",
    "scale_by_laprop",
    "scale_by_mollified_sign",
    "scale_by_radam",
    "scale_by_rms",
    "trace",
    "track_gaussian_vi",
]
