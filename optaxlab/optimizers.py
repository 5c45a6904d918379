"""Every optimizer the seeds study, as an ``optax.chain`` of transforms, plus a name registry.

Each factory takes ``learning_rate`` (a float or an ``optax.Schedule``) and keywords, and returns
``optax.chain(<max_norm clip>, <direction>, add_decayed_weights(weight_decay, mask),
scale_by_learning_rate(learning_rate))``. Common keywords, accepted by every optimizer:

- ``weight_decay``: decoupled (AdamW-style) decay, added to the direction *before* the learning
  rate scaling, so the step is -lr (u + wd * p); ``mask`` selects the decayed leaves (optax
  semantics). A Python ``0`` leaves the transform out, so e.g. ``adam`` has optax.adam's state.
- ``max_norm``: if not None, ``optax.clip_by_global_norm(max_norm)`` of the raw gradient first
  (seed 004's "+ gradient clipping to norm 1").

Registry: ``create(name, learning_rate, **hparams)``, ``names()``, ``hparams(name)``.
All factories work under ``optax.inject_hyperparams`` (``mask`` is then a static argument when
it is a callable: ``inject_hyperparams(adamw, static_args='mask')``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import optax

from optaxlab import transforms as T
from optaxlab.transforms._checks import check_positive, is_number

ScalarOrSchedule = float | jax.Array | optax.Schedule
Mask = Any


def _chain(
    direction: list[optax.GradientTransformation],
    learning_rate: ScalarOrSchedule,
    weight_decay: ScalarOrSchedule,
    mask: Mask,
    max_norm: Any,
) -> optax.GradientTransformation:
    """[global clip] -> direction -> decoupled weight decay -> -learning_rate."""
    parts = []
    if max_norm is not None:
        check_positive("max_norm", max_norm)
        parts.append(optax.clip_by_global_norm(max_norm))
    parts += direction
    if not (is_number(weight_decay) and weight_decay == 0 and mask is None):
        parts.append(optax.add_decayed_weights(weight_decay, mask))
    parts.append(optax.scale_by_learning_rate(learning_rate))
    return optax.chain(*parts)


# --------------------------------------------------------------------------- SGD family


def sgd(
    learning_rate: ScalarOrSchedule,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask = None,
    max_norm: float | None = None,
) -> optax.GradientTransformation:
    """Plain SGD: u = g."""
    return _chain([], learning_rate, weight_decay, mask, max_norm)


def momentum(
    learning_rate: ScalarOrSchedule,
    momentum: float = 0.9,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask = None,
    max_norm: float | None = None,
) -> optax.GradientTransformation:
    """SGD with heavy-ball momentum, ``torch.optim.SGD`` semantics (b_1 = g_1, dampening)."""
    direction = [T.trace(momentum, nesterov=nesterov, dampening=dampening)]
    return _chain(direction, learning_rate, weight_decay, mask, max_norm)


def sgd_gclip(
    learning_rate: ScalarOrSchedule,
    momentum: float = 0.9,
    max_norm: float = 1.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask = None,
) -> optax.GradientTransformation:
    """Global-norm clip of the raw gradient, then momentum (torch: clip_grad_norm_ + SGD)."""
    direction = [T.trace(momentum, nesterov=nesterov, dampening=dampening)]
    return _chain(direction, learning_rate, weight_decay, mask, max_norm)


def sgd_cclip(
    learning_rate: ScalarOrSchedule,
    momentum: float = 0.9,
    clip: float = 1.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask = None,
    max_norm: float | None = None,
) -> optax.GradientTransformation:
    """Momentum, then a per-coordinate clip to [-clip, clip] (seed 004's SGD+Cclip)."""
    check_positive("clip", clip)
    direction = [
        T.trace(momentum, nesterov=nesterov, dampening=dampening),
        T.clip_by_coordinate(clip),
    ]
    return _chain(direction, learning_rate, weight_decay, mask, max_norm)


# --------------------------------------------------------------------------- sign family


def signsgd(
    learning_rate: ScalarOrSchedule,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask = None,
    max_norm: float | None = None,
) -> optax.GradientTransformation:
    """SignSGD: u = sign(g) (= optax.sign_sgd)."""
    return _chain([optax.scale_by_sign()], learning_rate, weight_decay, mask, max_norm)


def signum(
    learning_rate: ScalarOrSchedule,
    beta: float = 0.9,
    init: str = "zero",
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask = None,
    max_norm: float | None = None,
) -> optax.GradientTransformation:
    """Signum: u = sign(ema_beta(g)) (= optax.signum); ``init='first'`` is seed 004's GI."""
    direction = [T.ema(beta, debias=False, init=init), optax.scale_by_sign()]
    return _chain(direction, learning_rate, weight_decay, mask, max_norm)


def ema_sign(
    learning_rate: ScalarOrSchedule,
    beta: float = 0.9,
    init: str = "zero",
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask = None,
    max_norm: float | None = None,
) -> optax.GradientTransformation:
    """EMA of the sign ("momentum on SignSGD", seed 004): u = ema_beta(sign(g))."""
    direction = [optax.scale_by_sign(), T.ema(beta, debias=False, init=init)]
    return _chain(direction, learning_rate, weight_decay, mask, max_norm)


def signum_fixed_mollifier(
    learning_rate: ScalarOrSchedule,
    beta: float = 0.9,
    variance: float = 1e-8,
    init: str = "zero",
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask = None,
    max_norm: float | None = None,
) -> optax.GradientTransformation:
    """Signum with a fixed mollifier (seed 004 ablation): u = m / sqrt(m^2 + variance)."""
    direction = [
        T.ema(beta, debias=False, init=init),
        T.scale_by_mollified_sign(fixed_variance=variance),
    ]
    return _chain(direction, learning_rate, weight_decay, mask, max_norm)


# --------------------------------------------------------------------------- Adam family


def rmsprop(
    learning_rate: ScalarOrSchedule,
    b2: float = 0.999,
    eps: float = 1e-8,
    bias_correction: bool = True,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask = None,
    max_norm: float | None = None,
) -> optax.GradientTransformation:
    """RMSprop as seed 004 ran it: Adam with b1 = 0, u = g / (sqrt(v / (1 - b2^t)) + eps).

    One buffer (``optax.scale_by_rms``, no first moment). ``bias_correction=False`` gives
    ``torch.optim.RMSprop(alpha=b2, eps=eps)``: u = g / (sqrt(v) + eps).
    """
    direction = [
        optax.scale_by_rms(
            decay=b2, eps=eps, initial_scale=0.0, eps_in_sqrt=False,
            bias_correction=bias_correction,
        )
    ]
    return _chain(direction, learning_rate, weight_decay, mask, max_norm)


def adam(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    bias_correction: bool = True,
    init: str = "zero",
    nesterov: bool = False,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask = None,
    max_norm: float | None = None,
) -> optax.GradientTransformation:
    """Adam (= optax.adam / optax.adamw); ``bias_correction=False`` / ``init='first'`` are the
    seed-004 ablations (ZI-BC, GI-BC)."""
    direction = [
        T.scale_by_adam(
            b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov,
            bias_correction=bias_correction, init=init,
        )
    ]
    return _chain(direction, learning_rate, weight_decay, mask, max_norm)


def adamw(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    bias_correction: bool = True,
    init: str = "zero",
    nesterov: bool = False,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Mask = None,
    max_norm: float | None = None,
) -> optax.GradientTransformation:
    """AdamW: ``adam`` with optax.adamw's default ``weight_decay=1e-4``."""
    return adam(
        learning_rate, b1, b2, eps, eps_root, bias_correction, init, nesterov, mu_dtype,
        weight_decay, mask, max_norm,
    )


def adam_equal_betas(
    learning_rate: ScalarOrSchedule,
    beta: float = 0.95,
    eps: float = 0.0,
    bias_correction: bool = True,
    init: str = "zero",
    c: float = 1.0,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask = None,
    max_norm: float | None = None,
) -> optax.GradientTransformation:
    """Adam with b1 = b2 = beta as a variance-mollified sign (seed 004, Section 4):
    chain(track_gaussian_vi(beta), scale_by_mollified_sign(c, eps), lr).

    u = m / sqrt(m^2 + c s^2 + eps^2): with c = 1 and eps = 0 this is optax.adam(b1 = b2 = beta,
    eps = 0) when bias corrected, and m / sqrt(v) (seed 004 eq. 2) when not.
    """
    direction = [
        T.track_gaussian_vi(beta, debias=bias_correction, init=init),
        T.scale_by_mollified_sign(c=c, eps=eps),
    ]
    return _chain(direction, learning_rate, weight_decay, mask, max_norm)


def laprop(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-15,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask = None,
    max_norm: float | None = None,
) -> optax.GradientTransformation:
    """LaProp (seed 000 eq. 1-4): normalize by sqrt(n/c_n + eps), then momentum, then / c_m."""
    direction = [T.scale_by_laprop(b1, b2, eps)]
    return _chain(direction, learning_rate, weight_decay, mask, max_norm)


def acclip(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.99,
    alpha: float = 1.0,
    eps: float = 1e-5,
    weight_decay: ScalarOrSchedule = 1e-5,
    mask: Mask = None,
    max_norm: float | None = None,
) -> optax.GradientTransformation:
    """ACClip (seed 003) with the paper's defaults (b1 0.9, b2 0.99, alpha 1, eps 1e-5, wd 1e-5)."""
    direction = [T.scale_by_acclip(b1, b2, alpha, eps)]
    return _chain(direction, learning_rate, weight_decay, mask, max_norm)


# --------------------------------------------------------------------------- optax's own


def radam(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    threshold: float = 5.0,
    nesterov: bool = False,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask = None,
    max_norm: float | None = None,
) -> optax.GradientTransformation:
    """RAdam: ``optax.scale_by_radam``."""
    direction = [
        optax.scale_by_radam(b1, b2, eps, eps_root, threshold, nesterov=nesterov)
    ]
    return _chain(direction, learning_rate, weight_decay, mask, max_norm)


def amsgrad(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask = None,
    max_norm: float | None = None,
) -> optax.GradientTransformation:
    """AMSGrad: ``optax.scale_by_amsgrad``."""
    direction = [optax.scale_by_amsgrad(b1, b2, eps, eps_root)]
    return _chain(direction, learning_rate, weight_decay, mask, max_norm)


def adagrad(
    learning_rate: ScalarOrSchedule,
    initial_accumulator_value: float = 0.1,
    eps: float = 1e-7,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask = None,
    max_norm: float | None = None,
) -> optax.GradientTransformation:
    """Adagrad: ``optax.scale_by_rss``."""
    direction = [optax.scale_by_rss(initial_accumulator_value, eps)]
    return _chain(direction, learning_rate, weight_decay, mask, max_norm)


def lion(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.99,
    weight_decay: ScalarOrSchedule = 1e-3,
    mask: Mask = None,
    max_norm: float | None = None,
) -> optax.GradientTransformation:
    """Lion: ``optax.scale_by_lion`` (optax.lion's default ``weight_decay=1e-3``)."""
    direction = [optax.scale_by_lion(b1, b2)]
    return _chain(direction, learning_rate, weight_decay, mask, max_norm)


# --------------------------------------------------------------------------- registry

_REGISTRY: dict[str, Callable[..., optax.GradientTransformation]] = {
    f.__name__: f
    for f in (
        sgd, momentum, sgd_gclip, sgd_cclip,
        signsgd, signum, ema_sign, signum_fixed_mollifier,
        rmsprop, adam, adamw, adam_equal_betas, laprop, acclip,
        radam, amsgrad, adagrad, lion,
    )
}


def names() -> list[str]:
    """Every registered optimizer name."""
    return list(_REGISTRY)


def _factory(name: str) -> Callable[..., optax.GradientTransformation]:
    if name not in _REGISTRY:
        raise ValueError(f"Unknown optimizer {name!r}; valid names: {', '.join(names())}.")
    return _REGISTRY[name]


def hparams(name: str) -> dict[str, Any]:
    """The keywords of optimizer ``name`` (all but ``learning_rate``) and their defaults."""
    sig = inspect.signature(_factory(name))
    return {k: p.default for k, p in sig.parameters.items() if k != "learning_rate"}


def get(name: str) -> Callable[..., optax.GradientTransformation]:
    """The factory function registered as ``name`` (e.g. to wrap in inject_hyperparams)."""
    return _factory(name)


def create(
    name: str, learning_rate: ScalarOrSchedule, **kwargs: Any
) -> optax.GradientTransformation:
    """Build optimizer ``name`` with ``learning_rate`` (float or schedule) and keywords.

    ``optax.inject_hyperparams(create)(name, learning_rate=lr, **kw)`` works: it injects
    ``learning_rate`` (readable as ``state.hyperparams['learning_rate']``) and passes the other
    keywords, statically, as one dict named ``kwargs``, which is unpacked here. To inject other
    hyperparameters too, wrap the factory: ``inject_hyperparams(get(name))(lr, b1=...)``.
    """
    factory = _factory(name)
    if set(kwargs) == {"kwargs"} and isinstance(kwargs["kwargs"], dict):
        kwargs = kwargs["kwargs"]  # bound by optax.inject_hyperparams(create)
    valid = hparams(name)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(
            f"Unknown keyword(s) {unknown} for optimizer {name!r}; valid keywords: "
            f"{', '.join(valid)}."
        )
    return factory(learning_rate, **kwargs)
