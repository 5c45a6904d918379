"""Every optimizer the papers study, the ones the community benchmarks, and a name registry.

Each factory takes ``learning_rate`` (a float or an ``optax.Schedule``) and keywords, and returns
an ``optax.GradientTransformation``. The papers' optimizers are chains of ``optaxlab.transforms``
and optax transforms::

    optax.chain(<max_norm clip>, <coordinate_clip>, <coupled weight decay>,   # the raw gradient
                <direction>, add_decayed_weights(weight_decay, mask),         # decoupled decay
                scale_by_learning_rate(learning_rate))

and the others wrap optax / ``optax.contrib`` (adafactor, muon, schedule_free_adamw, ademamix,
adopt, prodigy, lamb, adabelief, lion, ...) behind the same three raw-gradient steps.

Common keywords (accepted by every optimizer unless its docstring says otherwise):

- ``weight_decay``: decoupled (AdamW-style) decay, added to the direction *before* the learning
  rate scaling, so the step is -lr (u + wd * p). A Python ``0`` with ``mask=None`` leaves the
  transform out, so e.g. ``adam`` has optax.adam's state. (Wrapped optax optimizers pass it to
  optax's own ``weight_decay``, with optax's semantics: see their docstrings.)
- ``coupled_weight_decay``: L2 regularization, torch's ``weight_decay`` in ``torch.optim.Adam``
  and ``SGD``: g <- g + wd * p before the direction (so Adam normalizes it too).
- ``mask``: which leaves are decayed (optax semantics: a tree of bools or a callable); the
  registry's name for optax's ``weight_decay_mask`` too.
- ``max_norm``: if not None, ``optax.clip_by_global_norm(max_norm)`` of the raw gradient first
  ("+ gradient clipping to norm 1" in "In Search of Adam's Secret Sauce").
- ``coordinate_clip``: if not None, ``clip(g, -c, c)`` per coordinate of the raw gradient, after
  ``max_norm`` (the clip-first "CClip" variants of Adam and Signum of "Why Adam Beats SGD for
  Attention Models"; ``sgd_cclip``'s ``clip`` is the clip *after* momentum).

Registry: a table of ``Optimizer`` rows (``entry(name)``: factory, defaults, config types,
validation rules, static keywords, the common keywords it takes, the monitor's theory mapping,
references), read by ``create(name, learning_rate, **hparams)``, ``check(name, learning_rate,
**hparams)``, ``names()``, ``hparams(name)``, ``hparam_types(name)``, ``static_hparams(name)``,
``theory_settings(name, hparams)``, ``get(name)``, and ``eval_params(opt_state, params)``
(schedule-free's evaluation point; the identity for every other optimizer). The papers'
optimizers are written as *directions* (the list of transforms between the raw-gradient steps
and the decoupled decay); the registry adds the five common keywords and ``-learning_rate`` to
each, once (``_full_factory``, the same code path for a registered one).

Your own optimizer: ``register(name, factory, *, hparams=None, theory=None, static=())`` (or
``@register(name)``), or a reference ``package.module:factory`` / ``path/to/file.py:factory``
anywhere a name is accepted (``resolve``); see docs/own_optimizer.md. ``untraceable(name,
hparams, traced)`` checks a factory once by abstract evaluation with traced hparams.

Validation: a bad value raises ``HparamError`` (a ``ValueError`` carrying ``field`` and
``value``) with one line that starts with the keyword and the value and says what is valid
("learning_rate=nan: must be a finite number > 0 or an optax schedule", "b2=1.5: must be in
[0, 1)"). The rules are the table's (``_RULES`` per keyword, ``_JOINT`` across keywords) and run
in one function, ``_validate``, from the factories (so ``create`` and ``get(name)(...)``) and
from ``check(name, learning_rate, **hparams)``, which validates without building anything.
Only concrete Python / numpy values are checked: JAX arrays (concrete or traced) and schedules
pass, so every factory works under
``optax.inject_hyperparams`` — inject every numeric hyperparameter except
``static_hparams(name)`` (loop counts and sizes): ``optax.inject_hyperparams(get(name),
static_args=static_hparams(name))(lr, **hparams)``. A callable ``mask`` must be static too.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import inspect
import os
import re
import sys
import types
import typing
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
import optax.contrib

from optaxlab import transforms as T
from optaxlab.transforms import _checks as C
from optaxlab.transforms._checks import HparamError, is_number

ScalarOrSchedule = float | jax.Array | optax.Schedule
Mask = Any

# ------------------------------------------------------------------------ validation rules

_p = functools.partial
_DECAY = C.check_decay
_NONNEG = C.check_nonnegative
_BOOL = C.check_bool

# optax.contrib.muon's Newton-Schulz presets (optax raises only when the optimizer is built)
_NS_PRESETS = ("standard", "dion")


def _check_ns_coeffs(name: str, value: Any) -> None:
    """muon's ``ns_coeffs``: a preset name, one triple (a, b, c) or a list of triples."""
    what = f"must be (a, b, c), a list of such triples, or a preset in {list(_NS_PRESETS)}"
    if isinstance(value, str):
        if value not in _NS_PRESETS:
            C.fail(name, value, what)
        return
    if isinstance(value, jax.Array):
        return
    triple = lambda t: (isinstance(t, (tuple, list)) and len(t) == 3
                        and all(C.is_host_number(x) or isinstance(x, jax.Array) for x in t))
    if not (triple(value) or (isinstance(value, (tuple, list)) and value
                              and all(triple(t) for t in value))):
        C.fail(name, value, what)


# keyword -> check(name, value); the same keyword means the same thing in every optimizer
_RULES: dict[str, Callable[[str, Any], None]] = {
    "learning_rate": C.check_learning_rate,
    "adam_learning_rate": _p(C.check_learning_rate, optional=True),
    **{k: _DECAY for k in ("b1", "b2", "beta", "momentum", "adam_b1", "adam_b2")},
    "b3": _p(_DECAY, schedule=True),
    "beta3": _p(_DECAY, optional=True),
    "dampening": _p(_DECAY, closed=True),
    **{k: _NONNEG for k in ("eps", "eps_root", "adam_eps_root", "variance", "c", "threshold",
                            "initial_accumulator_value", "weight_lr_power")},
    **{k: _p(_NONNEG, schedule=True) for k in ("weight_decay", "coupled_weight_decay",
                                               "adam_weight_decay")},
    "weight_decay_rate": _p(_NONNEG, optional=True, schedule=True),
    "max_norm": _p(C.check_positive, optional=True),
    "coordinate_clip": _p(C.check_positive, optional=True),
    "consistent_rms": _p(C.check_positive, optional=True),
    "clipping_threshold": _p(C.check_positive, optional=True),
    **{k: C.check_positive for k in ("clip", "alpha", "decay_rate", "estim_lr0",
                                     "estim_lr_coef")},
    **{k: _BOOL for k in ("nesterov", "bias_correction", "multiply_by_parameter_scale",
                          "factored", "safeguard_warmup", "adaptive", "use_clipping")},
    "init": _p(C.check_choice, choices=C.INITS),
    **{k: C.check_dtype for k in ("mu_dtype", "state_dtype", "dtype_momentum")},
    "ns_steps": _p(C.check_int, minimum=1),
    "min_dim_size_to_factor": _p(C.check_int, minimum=0),
    "decay_offset": _p(C.check_int, minimum=0),
    "warmup_steps": _p(C.check_int, minimum=0, optional=True),
    "preconditioning": _p(C.check_choice, choices=("frobenius", "spectral", "aol", "schatten")),
    "adam_params": C.check_regex,
    "ns_coeffs": _check_ns_coeffs,
}


def _check_warmup(learning_rate: Any, warmup_steps: Any) -> None:
    if warmup_steps is not None and callable(learning_rate):
        C.fail("warmup_steps", warmup_steps,
               "needs a number as learning_rate (a schedule brings its own warmup)")


# rules on several keywords at once, checked after each keyword's own rule, in every row that
# has all of them: (keywords) -> check(*values)
_JOINT: dict[tuple[str, ...], Callable[..., None]] = {
    ("init", "bias_correction"): C.check_init,
    ("nesterov", "dampening"): C.check_nesterov_dampening,
    ("learning_rate", "warmup_steps"): _check_warmup,
}


def _joint(keys) -> tuple[tuple[str, ...], ...]:
    """The cross-keyword rules (`_JOINT` keys) that apply to a row with keywords `keys`."""
    return tuple(k for k in _JOINT if set(k) <= set(keys))


def _validate(rules: dict[str, Any], joint: tuple[tuple[str, ...], ...],
              values: dict[str, Any]) -> None:
    """Every value of `values` checked by its rule (in order), then the cross-keyword rules
    whose keywords are all in `values`: the one place a value is validated."""
    for key, value in values.items():
        if rules.get(key) is not None:
            rules[key](key, value)
    for keys in joint:
        if all(k in values for k in keys):
            _JOINT[keys](*(values[k] for k in keys))


# keywords that must stay static under optax.inject_hyperparams (Python ints that set a loop
# count, a shape or a schedule's length; strings, bools and None are static anyway)
_STATIC = {"ns_steps", "min_dim_size_to_factor", "warmup_steps"}


def _check_betas(name: str, value: Any) -> None:
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        C.fail(name, value, "must be a pair (b1, b2) of numbers in [0, 1)")
    for v in value:
        if not isinstance(v, jax.Array):
            try:
                C.check_decay(name, v)
            except ValueError:
                C.fail(name, value, "must be a pair (b1, b2) of numbers in [0, 1)")


COMMON = ("weight_decay", "mask", "max_norm", "coupled_weight_decay", "coordinate_clip")
_COMMON_DEFAULTS = dict(weight_decay=0.0, mask=None, max_norm=None, coupled_weight_decay=0.0,
                        coordinate_clip=None)
_COMMON_TYPES = dict(weight_decay=float, mask=None, max_norm=float, coupled_weight_decay=float,
                     coordinate_clip=float)


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """One row of the registry: everything the trainer, sweeps, groups, the memory tool and the
    monitor know about an optimizer.

    Attributes:
      name: the registry name (a built-in's, a ``register``ed one, or a reference
        ``package.module:factory`` / ``path/to/file.py:factory``).
      factory: ``factory(learning_rate, **hparams) -> GradientTransformation``, validating.
      defaults: every keyword but ``learning_rate`` and its default (the common ones included).
      types: the Python type a config field of each keyword takes (None: not a config value).
      rules: keyword -> check(name, value); values are validated here and nowhere else.
      joint: the cross-keyword rules that apply (keys of ``_JOINT``, e.g. ('init',
        'bias_correction')), checked after the keywords' own rules.
      static: keywords that must stay static under ``optax.inject_hyperparams``.
      common: the common keywords the registry applies around the direction.
      theory: {watch field: hparam name or number} for the monitor's theory overlay (b1, b2,
        eps, bias_correction), or None: no theory for this optimizer.
      references: the papers, one line.
      builtin: shipped with optaxlab (a user's name may not clash with one).
    """

    name: str
    factory: Callable[..., optax.GradientTransformation]
    defaults: dict[str, Any]
    types: dict[str, type | None]
    rules: dict[str, Callable[[str, Any], None] | None]
    static: tuple[str, ...] = ()
    common: tuple[str, ...] = ()
    joint: tuple[tuple[str, ...], ...] = ()
    theory: dict[str, str | float] | None = None
    references: str = ""
    builtin: bool = True

    def check(self, hparams: dict[str, Any], learning_rate: Any = None, *,
              with_learning_rate: bool = False) -> dict[str, Any]:
        """Every value of `hparams` (and `learning_rate` if `with_learning_rate`) checked by the
        row's rules, building nothing; returns the hparams with the defaults filled in.
        Raises an ``HparamError`` naming the first bad keyword (or the unknown ones)."""
        _unknown(self, hparams)
        values = {**self.defaults, **hparams}
        lr = {"learning_rate": learning_rate} if with_learning_rate else {}
        _validate(self.rules, self.joint, {**lr, **values})
        return values

    def theory_settings(self, hparams: dict[str, Any]) -> dict[str, Any]:
        """The monitor's theory settings for these hparams ({} if there is no theory)."""
        if not self.theory:
            return {}
        hp = {**self.defaults, **hparams}
        out: dict[str, Any] = {}
        for field, source in self.theory.items():
            value = hp.get(source) if isinstance(source, str) else source
            if value is not None:
                out[field] = bool(value) if field == "bias_correction" else float(value)
        return out


_TABLE: dict[str, Optimizer] = {}


def _unknown(row: Optimizer, hparams: dict[str, Any]) -> None:
    """An ``HparamError`` (field None) listing the keywords of `hparams` that `row` lacks."""
    unknown = sorted(set(hparams) - set(row.defaults))
    if unknown:
        msg = (f"Unknown keyword(s) {unknown} for optimizer {row.name!r}; valid keywords: "
               f"{', '.join(row.defaults)}.")
        raise HparamError(None, unknown, msg, msg)


# Theory mappings of the built-ins (the monitor's overlay: Adam's update law, "Distributional
# Properties of Adaptive Gradients"). RMSprop is Adam with b1 = 0; Adam with equal betas has
# b1 = b2 = beta; LaProp, RAdam, AMSGrad: b2 only (the closed-form law, no pure-noise reference).
_ADAM_THEORY = {"b1": "b1", "b2": "b2", "eps": "eps", "bias_correction": "bias_correction"}
_THEORY: dict[str, dict[str, str | float]] = {
    "adam": _ADAM_THEORY,
    "adamw": _ADAM_THEORY,
    "rmsprop": {"b1": 0.0, "b2": "b2", "eps": "eps", "bias_correction": "bias_correction"},
    "adam_equal_betas": {"b1": "beta", "b2": "beta", "eps": "eps",
                         "bias_correction": "bias_correction"},
    **{k: {"b2": "b2", "bias_correction": "bias_correction"}
       for k in ("laprop", "radam", "amsgrad")},
}


def _base_type(hint: Any) -> type | None:
    """The plain Python type of an annotation: float for ``float | None`` and for
    ``float | jax.Array | optax.Schedule`` (arrays and schedules are not config values), tuple
    for ``tuple[float, float]``; None if there is no single one (``Any``, ``tuple | str``)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        kinds = {_base_type(a) for a in typing.get_args(hint) if a is not type(None)} - {None}
        return kinds.pop() if len(kinds) == 1 else None
    if origin in (tuple, list):
        return origin
    if isinstance(hint, type) and hint not in (jax.Array, Any) and origin is None:
        return hint
    return None


def _types(fn) -> dict[str, type | None]:
    hints = typing.get_type_hints(inspect.unwrap(fn))
    return {k: _base_type(hints[k]) if k in hints else None
            for k in inspect.signature(fn).parameters if k != "learning_rate"}


def _references(doc: str) -> str:
    text = doc.split("References:", 1)[1] if "References:" in doc else ""
    return " ".join(text.split())


def _full_factory(fn, name: str, own: dict[str, Any], common: dict[str, Any],
                  rules: dict[str, Any], joint, whole: bool):
    """The full factory ``f(learning_rate, **own, **common)`` of `fn`, the one code path of the
    built-ins and of ``register``: binds the call with the defaults, validates every value once
    (`_validate`), builds `fn`'s transformation and puts the common steps around it. A
    *direction* ``fn(**own)`` (a transformation or a list of them) gets [raw-gradient steps] ->
    direction -> decoupled decay -> -learning_rate (`_chain`); a *whole* optimizer
    ``fn(learning_rate, **own)`` gets only the raw-gradient steps in front (`_wrap`; the
    coupled decay uses the optimizer's `mask` if it has one). Scalar state is float32."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD  # (inject_hyperparams binds by it)
    sig = inspect.Signature([inspect.Parameter("learning_rate", kind),
                             *(inspect.Parameter(k, kind, default=v)
                               for k, v in {**own, **common}.items())])

    def factory(*args, **kwargs):
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{name}(): {e}") from None
        bound.apply_defaults()
        v = bound.arguments
        _validate(rules, joint, v)
        mine = {k: v[k] for k in own}
        tx = fn(v["learning_rate"], **mine) if whole else fn(**mine)
        if isinstance(tx, optax.GradientTransformation):
            direction = [tx]
        elif not whole and isinstance(tx, (list, tuple)) and all(
                isinstance(t, optax.GradientTransformation) for t in tx):
            direction = list(tx)
        else:
            raise ValueError(f"{name}: the factory returned {type(tx).__name__}, not an "
                             "optax.GradientTransformation")
        if whole:
            return float32_scalars(_wrap(tx, v["max_norm"], v["coordinate_clip"],
                                         v["coupled_weight_decay"], v.get("mask")))
        return float32_scalars(_chain(direction, v["learning_rate"], v["weight_decay"],
                                      v["mask"], v["max_norm"], v["coordinate_clip"],
                                      v["coupled_weight_decay"]))

    functools.update_wrapper(factory, fn)
    factory.__name__ = factory.__qualname__ = name
    factory.__signature__ = sig  # type: ignore[attr-defined]
    return factory


_PRE = ("max_norm", "coupled_weight_decay", "coordinate_clip")


def _register(common: dict[str, Any] | None = None, **overrides: Callable[[str, Any], None]):
    """Registers a built-in under its name (a row of the table). A *direction* (a function
    without ``learning_rate`` returning a list of transforms) gets the common keywords from the
    registry, with the defaults `common` changes; a whole optimizer (first parameter
    ``learning_rate``: the wrapped optax ones) is registered as it is. Every call checks its
    arguments (`_RULES`, with per-optimizer `overrides`) before building the transformation."""

    def wrap(fn):
        params = inspect.signature(fn).parameters
        types_ = _types(fn)
        whole = "learning_rate" in params  # a wrapped optax optimizer: raw-gradient steps
        own = {k: p.default for k, p in params.items() if k != "learning_rate"}
        commons = ({k: _COMMON_DEFAULTS[k] for k in _PRE} if whole
                   else {**_COMMON_DEFAULTS, **(common or {})})
        keys = ["learning_rate", *own, *commons]
        rules = {k: overrides.get(k, _RULES.get(k)) for k in keys}
        joint = _joint(keys)
        factory = _full_factory(fn, fn.__name__, own, commons, rules, joint, whole)
        defaults = {**own, **commons}
        types_ = {**types_, **{k: _COMMON_TYPES[k] for k in commons}}
        _TABLE[fn.__name__] = Optimizer(
            name=fn.__name__, factory=factory, defaults=defaults, types=types_, rules=rules,
            static=tuple(k for k in defaults if k in _STATIC), joint=joint,
            common=tuple(k for k in COMMON if k in defaults), theory=_THEORY.get(fn.__name__),
            references=_references(fn.__doc__ or ""))
        return factory

    return wrap


# ------------------------------------------------------------------------ chains


def _is_zero(x: Any) -> bool:
    return is_number(x) and x == 0


def _pre(max_norm, coordinate_clip, coupled_weight_decay, mask) -> list:
    """The raw-gradient steps: global-norm clip, coordinate clip, coupled (L2) weight decay."""
    parts = []
    if max_norm is not None:
        parts.append(optax.clip_by_global_norm(max_norm))
    if coordinate_clip is not None:
        parts.append(T.clip_by_coordinate(coordinate_clip))
    if not _is_zero(coupled_weight_decay):
        parts.append(optax.add_decayed_weights(coupled_weight_decay, mask))
    return parts


def _chain(
    direction: list[optax.GradientTransformation],
    learning_rate: ScalarOrSchedule,
    weight_decay: ScalarOrSchedule,
    mask: Mask,
    max_norm: Any,
    coordinate_clip: Any = None,
    coupled_weight_decay: Any = 0.0,
) -> optax.GradientTransformation:
    """[raw-gradient steps] -> direction -> decoupled weight decay -> -learning_rate."""
    parts = _pre(max_norm, coordinate_clip, coupled_weight_decay, mask) + list(direction)
    if not (_is_zero(weight_decay) and mask is None):
        parts.append(optax.add_decayed_weights(weight_decay, mask))
    parts.append(optax.scale_by_learning_rate(learning_rate))
    return optax.chain(*parts)


def float32_scalars(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """`tx` with every scalar of its state in float32 and every state leaf keeping its dtype from
    step to step; updates in each gradient's dtype. optax's prodigy and schedule_free keep their
    scalars (the step-size estimate, the weight sum, b1) in the first parameter's dtype, so with
    bfloat16 parameters schedule-free's updates were 27% off the float32 computation. Parameter-
    sized buffers stay in the parameters' dtype (bfloat16 moments for bfloat16 parameters, as
    optax has them). For float32 parameters every cast is the identity."""

    def scalars_f32(tree):
        return jax.tree.map(lambda x: x.astype(jnp.float32) if hasattr(x, "dtype") and
                            x.ndim == 0 and jnp.issubdtype(x.dtype, jnp.floating) else x, tree)

    def init_fn(params):
        return scalars_f32(tx.init(params))

    def update_fn(updates, state, params=None, **extra):
        new, new_state = tx.update(updates, state, params, **extra)
        new = jax.tree.map(lambda u, g: u.astype(g.dtype), new, updates)
        new_state = jax.tree.map(lambda n, o: n.astype(o.dtype) if hasattr(n, "dtype") else n,
                                 new_state, state)
        return new, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _zero_gradient_safe(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """`tx`, except that an all-zero gradient gives zero updates and leaves the state as it was
    (optax's prodigy divides 0 by 0 there and returns NaN updates)."""

    def update_fn(updates, state, params=None, **extra):
        new, new_state = tx.update(updates, state, params, **extra)
        zero = jnp.all(jnp.stack([jnp.all(g == 0) for g in jax.tree.leaves(updates)]))
        new = jax.tree.map(lambda u: jnp.where(zero, jnp.zeros_like(u), u), new)
        keep = jax.tree.map(lambda n, o: jnp.where(zero, o, n) if hasattr(n, "dtype") else n,
                            new_state, state)
        return new, keep

    return optax.GradientTransformationExtraArgs(tx.init, update_fn)


def _wrap(tx: optax.GradientTransformation, max_norm, coordinate_clip, coupled_weight_decay,
          mask) -> optax.GradientTransformation:
    """An optax optimizer behind the raw-gradient steps (the optimizer itself if there are none)."""
    pre = _pre(max_norm, coordinate_clip, coupled_weight_decay, mask)
    return optax.chain(*pre, tx) if pre else tx


_COMMON_ARGS = """weight_decay: decoupled weight decay (-lr * wd * p), a number >= 0 or a schedule.
      coupled_weight_decay: L2 decay added to the gradient first (torch's ``weight_decay``).
      mask: which leaves are decayed (a tree of bools or a callable), optax semantics.
      max_norm: global-norm clip of the raw gradient first (None: off).
      coordinate_clip: per-coordinate clip of the raw gradient, after ``max_norm`` (None: off)."""


def _doc(fn):
    """Fills the common keywords' Args lines into a factory docstring."""
    fn.__doc__ = fn.__doc__.replace("{common}", _COMMON_ARGS)
    return fn


_RETURNS = "The corresponding ``optax.GradientTransformation``."

# --------------------------------------------------------------------------- SGD family


@_register()
@_doc
def sgd() -> list[optax.GradientTransformation]:
    r"""Plain SGD (= ``optax.sgd``; with ``coupled_weight_decay``, ``torch.optim.SGD``).

    .. math::
      \theta_t = \theta_{t-1} - \eta_t g_t

    Args:
      learning_rate: eta, a number > 0 or a schedule.
      {common}

    Returns:
      The corresponding ``optax.GradientTransformation``.

    References:
      Robbins & Monro, "A Stochastic Approximation Method", 1951.
    """
    return []


@_register()
@_doc
def momentum(
    momentum: float = 0.9,
    dampening: float = 0.0,
    nesterov: bool = False,
) -> list[optax.GradientTransformation]:
    r"""SGD with heavy-ball momentum, ``torch.optim.SGD`` semantics.

    .. math::
      b_1 = g_1, \quad b_t = \mu b_{t-1} + (1 - \tau) g_t, \quad
      \theta_t = \theta_{t-1} - \eta_t\, (b_t \text{ or } g_t + \mu b_t \text{ (nesterov)})

    Args:
      learning_rate: eta, a number > 0 or a schedule.
      momentum: mu in [0, 1).
      dampening: tau in [0, 1] (torch's; 0 is ``optax.sgd(momentum=mu)``).
      nesterov: Nesterov momentum (needs ``dampening=0``).
      {common}

    Returns:
      The corresponding ``optax.GradientTransformation``.

    References:
      Polyak, "Some methods of speeding up the convergence of iteration methods", 1964;
      Sutskever et al., "On the importance of initialization and momentum in deep learning",
      2013.
    """
    direction = [T.trace(momentum, nesterov=nesterov, dampening=dampening)]
    return direction


@_register(common=dict(max_norm=1.0))
@_doc
def sgd_gclip(
    momentum: float = 0.9,
    dampening: float = 0.0,
    nesterov: bool = False,
) -> list[optax.GradientTransformation]:
    r"""SGD+GClip: global-norm clip of the raw gradient, then momentum.

    .. math::
      \tilde g_t = \min(\tau / \|g_t\|, 1)\, g_t, \quad \text{then } \texttt{momentum}

    (torch: ``clip_grad_norm_`` then ``torch.optim.SGD``.)

    Args:
      learning_rate: eta, a number > 0 or a schedule.
      momentum: mu in [0, 1).
      max_norm: tau > 0.
      dampening: tau_d in [0, 1] (torch's).
      nesterov: Nesterov momentum.
      {common}

    Returns:
      The corresponding ``optax.GradientTransformation``.

    References:
      Pascanu et al., "On the difficulty of training recurrent neural networks", 2013;
      Zhang et al., "Why Adam Beats SGD for Attention Models", 2020 (GClip);
      Orvieto & Gower, "In Search of Adam's Secret Sauce", 2025 (SGD+Gclip).
    """
    direction = [T.trace(momentum, nesterov=nesterov, dampening=dampening)]
    return direction


@_register()
@_doc
def sgd_cclip(
    momentum: float = 0.9,
    clip: float = 1.0,
    dampening: float = 0.0,
    nesterov: bool = False,
) -> list[optax.GradientTransformation]:
    r"""SGD+CClip: momentum, then a per-coordinate clip of the momentum.

    .. math::
      u_t = \operatorname{clip}(b_t, -c, c), \quad b_t \text{ the momentum buffer}

    Args:
      learning_rate: eta, a number > 0 or a schedule.
      momentum: mu in [0, 1).
      clip: c > 0, applied *after* momentum (``coordinate_clip`` clips the raw gradient).
      dampening: torch's dampening in [0, 1].
      nesterov: Nesterov momentum.
      {common}

    Returns:
      The corresponding ``optax.GradientTransformation``.

    References:
      Zhang et al., "Why Adam Beats SGD for Attention Models", 2020 (CClip);
      Orvieto & Gower, "In Search of Adam's Secret Sauce", 2025 (SGD+Cclip, Table 1).
    """
    direction = [
        T.trace(momentum, nesterov=nesterov, dampening=dampening),
        T.clip_by_coordinate(clip),
    ]
    return direction


# --------------------------------------------------------------------------- sign family


@_register()
@_doc
def signsgd() -> list[optax.GradientTransformation]:
    r"""SignSGD (= ``optax.sign_sgd``).

    .. math::
      u_t = \operatorname{sign}(g_t)

    Args:
      learning_rate: eta, a number > 0 or a schedule.
      {common}

    Returns:
      The corresponding ``optax.GradientTransformation``.

    References:
      Bernstein et al., "signSGD: Compressed Optimisation for Non-Convex Problems", ICML 2018.
    """
    return [optax.scale_by_sign()]


@_register()
@_doc
def signum(
    beta: float = 0.9,
    init: str = "zero",
) -> list[optax.GradientTransformation]:
    r"""Signum: the sign of an EMA of the gradient (= ``optax.signum``).

    .. math::
      m_t = \beta m_{t-1} + (1-\beta) g_t, \quad u_t = \operatorname{sign}(m_t)

    Args:
      learning_rate: eta, a number > 0 or a schedule.
      beta: the EMA decay in [0, 1).
      init: 'zero' (ZI, m_0 = 0) or 'first' (GI, m_1 = g_1: "In Search of Adam's Secret Sauce",
        Table 3).
      {common}

    Returns:
      The corresponding ``optax.GradientTransformation``.

    References:
      Bernstein et al., "signSGD: Compressed Optimisation for Non-Convex Problems", ICML 2018;
      Orvieto & Gower, "In Search of Adam's Secret Sauce", 2025.
    """
    direction = [T.ema(beta, debias=False, init=init), optax.scale_by_sign()]
    return direction


@_register()
@_doc
def ema_sign(
    beta: float = 0.9,
    init: str = "zero",
) -> list[optax.GradientTransformation]:
    r"""EMA of the sign ("momentum on SignSGD").

    .. math::
      u_t = \beta u_{t-1} + (1-\beta) \operatorname{sign}(g_t)

    Args:
      learning_rate: eta, a number > 0 or a schedule.
      beta: the EMA decay in [0, 1).
      init: 'zero' or 'first'.
      {common}

    Returns:
      The corresponding ``optax.GradientTransformation``.

    References:
      Orvieto & Gower, "In Search of Adam's Secret Sauce", 2025 (EMASign).
    """
    direction = [optax.scale_by_sign(), T.ema(beta, debias=False, init=init)]
    return direction


@_register()
@_doc
def signum_fixed_mollifier(
    beta: float = 0.9,
    variance: float = 1e-8,
    init: str = "zero",
) -> list[optax.GradientTransformation]:
    r"""Signum with a fixed mollifier, the Table 2 ablation of "In Search of Adam's Secret Sauce".

    .. math::
      m_t = \beta m_{t-1} + (1-\beta) g_t, \quad u_t = m_t / \sqrt{m_t^2 + \sigma^2}

    Args:
      learning_rate: eta, a number > 0 or a schedule.
      beta: the EMA decay in [0, 1).
      variance: the fixed sigma^2 >= 0 (Adam uses the tracked variance instead).
      init: 'zero' (ZI) or 'first' (GI).
      {common}

    Returns:
      The corresponding ``optax.GradientTransformation``.

    References:
      Orvieto & Gower, "In Search of Adam's Secret Sauce", 2025 (Table 2, fixed mollifiers).
    """
    direction = [
        T.ema(beta, debias=False, init=init),
        T.scale_by_mollified_sign(fixed_variance=variance),
    ]
    return direction


# --------------------------------------------------------------------------- Adam family


@_register()
@_doc
def rmsprop(
    b2: float = 0.999,
    eps: float = 1e-8,
    bias_correction: bool = True,
) -> list[optax.GradientTransformation]:
    r"""RMSprop as "In Search of Adam's Secret Sauce" ran it: Adam with b1 = 0, in one buffer.

    .. math::
      v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \quad
      u_t = g_t / (\sqrt{v_t / (1 - \beta_2^t)} + \epsilon)

    = ``torch.optim.AdamW(betas=(0, b2))``. ``bias_correction=False`` gives the torch
    convention, ``torch.optim.RMSprop(alpha=b2, eps=eps)``: u = g / (sqrt(v) + eps).

    Args:
      learning_rate: eta, a number > 0 or a schedule.
      b2: the second-moment decay in [0, 1).
      eps: added outside the square root, >= 0.
      bias_correction: divide v by 1 - b2^t (accurate in float32).
      {common}

    Returns:
      The corresponding ``optax.GradientTransformation``.

    References:
      Tieleman & Hinton, "Lecture 6.5 - RMSprop", 2012;
      Orvieto & Gower, "In Search of Adam's Secret Sauce", 2025.
    """
    direction = [T.scale_by_rms(b2, eps, bias_correction=bias_correction)]
    return direction


@_register()
@_doc
def adam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    bias_correction: bool = True,
    init: str = "zero",
    nesterov: bool = False,
    mu_dtype: Any = None,
) -> list[optax.GradientTransformation]:
    r"""Adam / AdamW (= ``optax.adam`` / ``optax.adamw``, ``torch.optim.Adam(W)``).

    .. math::
      m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,
      \quad u_t = \frac{m_t / (1-\beta_1^t)}{\sqrt{v_t / (1-\beta_2^t) + \epsilon_{root}}
      + \epsilon}

    The bias corrections are computed accurately in float32 (``T.scale_by_adam``): equal to
    optax.adam to round-off where optax's are accurate, and closer to float64 (and torch) where
    they are not (~1e-5 relative at b2 = 0.999). The ablations of "In Search of Adam's Secret
    Sauce", Tables 2-3, by keyword: ``eps`` (Table 2, with ``max_norm=1``),
    ``bias_correction=False`` (ZI-BC), ``bias_correction=False, init='first'`` (GI-BC).
    ``coupled_weight_decay`` is ``torch.optim.Adam(weight_decay=...)`` (L2),
    ``weight_decay`` AdamW's decoupled decay; ``coordinate_clip`` the clip-first CClip variant.

    Args:
      learning_rate: eta, a number > 0 or a schedule.
      b1: first-moment decay in [0, 1).
      b2: second-moment decay in [0, 1).
      eps: added outside the square root, >= 0.
      eps_root: added inside the square root, >= 0.
      bias_correction: divide the moments by 1 - b^t.
      init: 'zero' (ZI) or 'first' (GI: m_1 = g_1, v_1 = g_1^2; needs bias_correction=False).
      nesterov: NAdam's Nesterov momentum.
      mu_dtype: dtype of the first moment (None: the gradient's).
      {common}

    Returns:
      The corresponding ``optax.GradientTransformation``.

    References:
      Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015;
      Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019;
      Orvieto & Gower, "In Search of Adam's Secret Sauce", 2025 (Tables 2-3, App. B.5).
    """
    direction = [
        T.scale_by_adam(
            b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov,
            bias_correction=bias_correction, init=init,
        )
    ]
    return direction


@_register(common=dict(weight_decay=1e-4))
@_doc
def adamw(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    bias_correction: bool = True,
    init: str = "zero",
    nesterov: bool = False,
    mu_dtype: Any = None,
) -> list[optax.GradientTransformation]:
    r"""AdamW: ``adam`` with optax.adamw's default ``weight_decay=1e-4``.

    .. math::
      \theta_t = \theta_{t-1} - \eta_t (u_t^{Adam} + \lambda \theta_{t-1})

    Args:
      learning_rate: eta, a number > 0 or a schedule.
      b1, b2, eps, eps_root, bias_correction, init, nesterov, mu_dtype: as ``adam``.
      {common}

    Returns:
      The corresponding ``optax.GradientTransformation``.

    References:
      Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    """
    return inspect.unwrap(adam)(b1, b2, eps, eps_root, bias_correction, init, nesterov,
                                mu_dtype)


@_register()
@_doc
def adam_equal_betas(
    beta: float = 0.95,
    eps: float = 0.0,
    bias_correction: bool = True,
    init: str = "zero",
    c: float = 1.0,
) -> list[optax.GradientTransformation]:
    r"""Adam with b1 = b2 = beta as a variance-mollified sign:
    ``chain(track_gaussian_vi(beta), scale_by_mollified_sign(c, eps), lr)``.

    .. math::
      u_t = \frac{\hat m_t}{\sqrt{\hat m_t^2 + c\, \hat s_t^2 + \epsilon^2}}, \quad
      s_t^2 = \beta s_{t-1}^2 + \beta (1-\beta)(g_t - m_{t-1})^2

    With c = 1 and eps = 0 this is ``optax.adam(b1=b2=beta, eps=0)`` when bias corrected, and
    m / sqrt(v) (eq. (2) of the paper) when not. The tracked mean and variance are readable
    from the state (``GaussianVIState``).

    Args:
      learning_rate: eta, a number > 0 or a schedule.
      beta: b1 = b2 in [0, 1).
      eps: the additive mollifier, >= 0.
      bias_correction: debias the tracked pair.
      init: 'zero' (ZI) or 'first' (GI).
      c: the variance's weight in the mollifier, >= 0.
      {common}

    Returns:
      The corresponding ``optax.GradientTransformation``.

    References:
      Orvieto & Gower, "In Search of Adam's Secret Sauce", 2025 (Section 4, Proposition 1,
      Theorem 4.1).
    """
    direction = [
        T.track_gaussian_vi(beta, debias=bias_correction, init=init),
        T.scale_by_mollified_sign(c=c, eps=eps),
    ]
    return direction


@_register()
@_doc
def laprop(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-15,
) -> list[optax.GradientTransformation]:
    r"""LaProp: normalize by the second moment, then momentum, then debias.

    .. math::
      n_t = \beta_2 n_{t-1} + (1-\beta_2) g_t^2, \quad
      m_t = \beta_1 m_{t-1} + (1-\beta_1) \frac{g_t}{\sqrt{n_t/c_n + \epsilon}}, \quad
      u_t = m_t / c_m

    Args:
      learning_rate: eta, a number > 0 or a schedule.
      b1: momentum decay in [0, 1).
      b2: second-moment decay in [0, 1).
      eps: inside the square root, >= 0.
      {common}

    Returns:
      The corresponding ``optax.GradientTransformation``.

    References:
      Ziyin, Wang & Ueda, "LaProp: Separating Momentum and Adaptivity in Adam", 2020;
      "On the Distributional Properties of Adaptive Gradients", eq. (1)-(4).
    """
    direction = [T.scale_by_laprop(b1, b2, eps)]
    return direction


@_register(common=dict(weight_decay=1e-5))
@_doc
def acclip(
    b1: float = 0.9,
    b2: float = 0.99,
    alpha: float = 1.0,
    eps: float = 1e-5,
) -> list[optax.GradientTransformation]:
    r"""ACClip with the paper's defaults (b1 0.9, b2 0.99, alpha 1, eps 1e-5, wd 1e-5).

    .. math::
      m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
      \tau_t^\alpha = \beta_2 \tau_{t-1}^\alpha + (1-\beta_2)|g_t|^\alpha, \quad
      u_t = \min(\tau_t / (|m_t| + \epsilon), 1)\, m_t

    Args:
      learning_rate: eta, a number > 0 or a schedule.
      b1: momentum decay in [0, 1).
      b2: threshold-moment decay in [0, 1).
      alpha: moment order > 0.
      eps: >= 0.
      {common}

    Returns:
      The corresponding ``optax.GradientTransformation``.

    References:
      Zhang et al., "Why Adam Beats SGD for Attention Models" ("Why are Adaptive Methods Good
      for Attention Models?"), NeurIPS 2020.
    """
    direction = [T.scale_by_acclip(b1, b2, alpha, eps)]
    return direction


# --------------------------------------------------------------------------- Adam variants


@_register()
@_doc
def radam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    threshold: float = 5.0,
    nesterov: bool = False,
) -> list[optax.GradientTransformation]:
    r"""RAdam (= ``optax.radam``, with accurate float32 bias corrections and rho_t).

    .. math::
      \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1-\beta_2^t}, \quad
      u_t = r_t \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon} \text{ if } \rho_t \ge
      \text{threshold, else } \hat m_t

    (``T.scale_by_radam``: at the defaults, step 6 of a unit gradient gives -0.0258211, the
    float64 value, where optax's float32 gives -0.0255228.)

    Args:
      learning_rate: eta, a number > 0 or a schedule.
      b1: first-moment decay in [0, 1).
      b2: second-moment decay in [0, 1).
      eps: outside the square root, >= 0.
      eps_root: inside the square root, >= 0.
      threshold: rectify when rho_t >= threshold.
      nesterov: Nesterov momentum.
      {common}

    Returns:
      The corresponding ``optax.GradientTransformation``.

    References:
      Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020.
    """
    direction = [T.scale_by_radam(b1, b2, eps, eps_root, threshold, nesterov=nesterov)]
    return direction


@_register()
@_doc
def amsgrad(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
) -> list[optax.GradientTransformation]:
    r"""AMSGrad as optax defines it (``optax.scale_by_amsgrad``).

    .. math::
      \hat v^{max}_t = \max(\hat v^{max}_{t-1}, \hat v_t), \quad
      u_t = \hat m_t / (\sqrt{\hat v^{max}_t + \epsilon_{root}} + \epsilon)

    optax takes the maximum of the *bias-corrected* second moment; torch
    (``Adam(amsgrad=True)``) takes it of the raw one and bias-corrects after, so the two differ
    early in training.

    Args:
      learning_rate: eta, a number > 0 or a schedule.
      b1: first-moment decay in [0, 1).
      b2: second-moment decay in [0, 1).
      eps: outside the square root, >= 0.
      eps_root: inside the square root, >= 0.
      {common}

    Returns:
      The corresponding ``optax.GradientTransformation``.

    References:
      Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond", ICLR 2018.
    """
    direction = [optax.scale_by_amsgrad(b1, b2, eps, eps_root)]
    return direction


@_register()
@_doc
def adagrad(
    initial_accumulator_value: float = 0.1,
    eps: float = 1e-7,
) -> list[optax.GradientTransformation]:
    r"""Adagrad (= ``optax.adagrad``, ``optax.scale_by_rss``).

    .. math::
      G_t = G_{t-1} + g_t^2, \quad u_t = g_t / \sqrt{G_t + \epsilon}

    Args:
      learning_rate: eta, a number > 0 or a schedule.
      initial_accumulator_value: G_0 >= 0.
      eps: >= 0.
      {common}

    Returns:
      The corresponding ``optax.GradientTransformation``.

    References:
      Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and Stochastic
      Optimization", JMLR 2011.
    """
    direction = [optax.scale_by_rss(initial_accumulator_value, eps)]
    return direction


@_register(common=dict(weight_decay=1e-3))
@_doc
def lion(
    b1: float = 0.9,
    b2: float = 0.99,
) -> list[optax.GradientTransformation]:
    r"""Lion (= ``optax.lion``, its default ``weight_decay=1e-3``).

    .. math::
      u_t = \operatorname{sign}(\beta_1 m_{t-1} + (1-\beta_1) g_t), \quad
      m_t = \beta_2 m_{t-1} + (1-\beta_2) g_t

    Args:
      learning_rate: eta, a number > 0 or a schedule.
      b1: interpolation of the update direction, in [0, 1).
      b2: momentum decay, in [0, 1).
      {common}

    Returns:
      The corresponding ``optax.GradientTransformation``.

    References:
      Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023.
    """
    direction = [optax.scale_by_lion(b1, b2)]
    return direction


@_register(common=dict(weight_decay=1e-4))
@_doc
def nadamw(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
) -> list[optax.GradientTransformation]:
    r"""NAdamW (= ``optax.nadamw``): AdamW with Nesterov momentum.

    .. math::
      u_t = \frac{\beta_1 m_t / (1-\beta_1^{t+1}) + (1-\beta_1) g_t / (1-\beta_1^t)}
      {\sqrt{v_t / (1-\beta_2^t) + \epsilon_{root}} + \epsilon} + \lambda \theta_{t-1}

    Same as ``adamw(nesterov=True)``: the bias corrections are accurate in float32 (equal to
    optax.nadamw to round-off where optax's are accurate).

    Args:
      learning_rate: eta, a number > 0 or a schedule.
      b1: first-moment decay in [0, 1).
      b2: second-moment decay in [0, 1).
      eps: outside the square root, >= 0.
      eps_root: inside the square root, >= 0.
      mu_dtype: dtype of the first moment.
      {common}

    Returns:
      The corresponding ``optax.GradientTransformation``.

    References:
      Dozat, "Incorporating Nesterov Momentum into Adam", ICLR workshop 2016;
      Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    """
    direction = [T.scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=True)]
    return direction


@_register()
@_doc
def adabelief(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
    nesterov: bool = False,
) -> list[optax.GradientTransformation]:
    r"""AdaBelief (= ``optax.adabelief``): Adam normalized by the EMA of (g - m)^2.

    .. math::
      m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
      s_t = \beta_2 s_{t-1} + (1-\beta_2)(g_t - m_t)^2 + \epsilon_{root}, \quad
      u_t = \hat m_t / (\sqrt{\hat s_t} + \epsilon)

    How it relates to the VI tracker of "In Search of Adam's Secret Sauce" (``adam_equal_betas``):
    the tracker's variance is s^2_t = b s^2_{t-1} + b(1-b)(g_t - m_{t-1})^2, and since
    g_t - m_t = b (g_t - m_{t-1}) for an EMA with decay b, that is
    s^2_t = b s^2_{t-1} + ((1-b)/b)(g_t - m_t)^2. So with b1 = b2 = b (zero init,
    eps_root = 0) AdaBelief's s_t is exactly b times the tracked variance: the same online
    variance estimate, up to a constant. The directions differ: AdaBelief divides by the
    standard deviation alone, m^ / (sqrt(b) s^), an unbounded signal-to-noise ratio, while Adam
    with equal betas divides by sqrt(m^2 + s^2), a variance-mollified sign bounded by 1.

    Args:
      learning_rate: eta, a number > 0 or a schedule.
      b1: first-moment decay in [0, 1).
      b2: decay of the "belief" EMA of (g - m)^2, in [0, 1).
      eps: outside the square root, >= 0.
      eps_root: added to s at every step, >= 0.
      nesterov: Nesterov momentum.
      {common}

    Returns:
      The corresponding ``optax.GradientTransformation``.

    References:
      Zhuang et al., "AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed
      Gradients", NeurIPS 2020.
    """
    direction = [optax.scale_by_belief(b1, b2, eps, eps_root, nesterov=nesterov)]
    return direction


@_register(alpha=_p(_NONNEG, schedule=True))
@_doc
def ademamix(
    b1: float = 0.9,
    b2: float = 0.999,
    b3: ScalarOrSchedule = 0.9999,
    alpha: ScalarOrSchedule = 5.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
) -> list[optax.GradientTransformation]:
    r"""AdEMAMix (= ``optax.contrib.ademamix``): Adam plus a slow, undebiased EMA.

    .. math::
      m^{(1)}_t = \beta_1 m^{(1)}_{t-1} + (1-\beta_1) g_t, \quad
      m^{(2)}_t = \beta_3 m^{(2)}_{t-1} + (1-\beta_3) g_t, \quad
      u_t = \frac{\hat m^{(1)}_t + \alpha\, m^{(2)}_t}{\sqrt{\hat v_t + \epsilon_{root}} + \epsilon}

    Args:
      learning_rate: eta, a number > 0 or a schedule.
      b1: fast EMA decay in [0, 1).
      b2: second-moment decay in [0, 1).
      b3: slow EMA decay in [0, 1), or a schedule (the paper warms it up).
      alpha: weight of the slow EMA, >= 0, or a schedule.
      eps: outside the square root, >= 0.
      eps_root: inside the square root, >= 0.
      mu_dtype: dtype of the first moments.
      {common}

    Returns:
      The corresponding ``optax.GradientTransformation``.

    References:
      Pagliardini, Ablin & Grangier, "The AdEMAMix Optimizer: Better, Faster, Older", 2024.
    """
    direction = [optax.contrib.scale_by_ademamix(b1, b2, b3, alpha, eps, eps_root, mu_dtype)]
    return direction


@_register()
@_doc
def adopt(
    b1: float = 0.9,
    b2: float = 0.9999,
    eps: float = 1e-6,
    mu_dtype: Any = None,
    nesterov: bool = False,
    use_clipping: bool = True,
) -> list[optax.GradientTransformation]:
    r"""ADOPT (= ``optax.contrib.adopt``): normalize by the *previous* second moment.

    .. math::
      m_t = \beta_1 m_{t-1} + (1-\beta_1)\,
      \operatorname{clip}\!\left(\frac{g_t}{\max(\sqrt{v_{t-1}}, \epsilon)}, t^{1/4}\right),
      \quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \quad u_t = m_t

    (v_0 = g_0^2 and no update at the first step; the clip, optax's default
    ``clip_value_fn = t^0.25``, is on with ``use_clipping``.)

    Args:
      learning_rate: eta, a number > 0 or a schedule.
      b1: momentum decay in [0, 1).
      b2: second-moment decay in [0, 1).
      eps: floor of the denominator, >= 0.
      mu_dtype: dtype of the momentum.
      nesterov: Nesterov momentum.
      use_clipping: clip the normalized gradient to +-t^(1/4).
      {common}

    Returns:
      The corresponding ``optax.GradientTransformation``.

    References:
      Taniguchi et al., "ADOPT: Modified Adam Can Converge with Any beta2 with the Optimal
      Rate", NeurIPS 2024.
    """
    direction = [optax.contrib.scale_by_adopt(
        b1=b1, b2=b2, eps=eps, mu_dtype=mu_dtype, nesterov=nesterov, use_clipping=use_clipping
    )]
    return direction


@_register()
@_doc
def lamb(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask = None,
) -> optax.GradientTransformation:
    r"""LAMB (= ``optax.lamb``): Adam's direction plus weight decay, rescaled per leaf.

    .. math::
      r_t = u^{Adam}_t + \lambda \theta_{t-1}, \quad
      \theta_t = \theta_{t-1} - \eta_t \frac{\|\theta_{t-1}\|}{\|r_t\|} r_t

    ``weight_decay`` is optax.lamb's (inside the trust ratio), not appended after it.

    Args:
      learning_rate: eta, a number > 0 or a schedule.
      b1: first-moment decay in [0, 1).
      b2: second-moment decay in [0, 1).
      eps: outside the square root, >= 0.
      eps_root: inside the square root, >= 0.
      {common}

    Returns:
      The corresponding ``optax.GradientTransformation``.

    References:
      You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes",
      ICLR 2020.
    """
    tx = optax.lamb(learning_rate, b1, b2, eps, eps_root, weight_decay, mask)
    return tx


@_register(
    betas=_check_betas,
    weight_decay=_NONNEG,
)
def prodigy(
    learning_rate: ScalarOrSchedule,
    betas: tuple[float, float] = (0.9, 0.999),
    beta3: float | None = None,
    eps: float = 1e-8,
    estim_lr0: float = 1e-6,
    estim_lr_coef: float = 1.0,
    weight_decay: float = 0.0,
    safeguard_warmup: bool = False,
) -> optax.GradientTransformation:
    r"""Prodigy (= ``optax.contrib.prodigy``): AdamW with an estimated learning-rate scale d_t.

    .. math::
      u_t = \eta_t\, d_t\, \frac{m_t}{\sqrt{v_t} + d_t \epsilon}, \quad
      d_t \text{ grown from } d_0 \text{ by the ratio of two running inner products}

    (m, v are EMAs of d g and d^2 g^2; ``learning_rate`` multiplies the estimate, 1 is the
    paper's choice.) No ``mask``: optax's prodigy decays every leaf.

    Args:
      learning_rate: a multiplier of the estimated step, a number > 0 or a schedule.
      betas: (b1, b2), each in [0, 1).
      beta3: decay of the inner-product EMAs in [0, 1) (None: sqrt(b2)).
      eps: >= 0.
      estim_lr0: the initial estimate d_0 > 0.
      estim_lr_coef: a multiplier of the estimate, > 0.
      weight_decay: optax's (coupled to d_t), >= 0.
      safeguard_warmup: the paper's safeguard for warmup schedules.
      max_norm: global-norm clip of the raw gradient first (None: off).
      coupled_weight_decay: L2 decay added to the gradient first.
      coordinate_clip: per-coordinate clip of the raw gradient (None: off).

    Returns:
      The corresponding ``optax.GradientTransformation``.

    References:
      Mishchenko & Defazio, "Prodigy: An Expeditiously Adaptive Parameter-Free Learner", ICML
      2024.
    """
    base = optax.contrib.prodigy(
        learning_rate, tuple(betas), beta3, eps, estim_lr0, estim_lr_coef, weight_decay,
        safeguard_warmup,
    )

    def init_fn(params):
        # optax's state holds the parameters themselves as params0: the same buffers, so a step
        # that donates both the parameters and the state fails ("donate the same buffer
        # twice"). A copy, as optax's schedule_free does for its z.
        state = base.init(params)
        return state._replace(params0=jax.tree.map(lambda t: t.copy(), state.params0))

    return _zero_gradient_safe(optax.GradientTransformationExtraArgs(init_fn, base.update))


@_register(momentum=_p(_DECAY, optional=True))
def adafactor(
    learning_rate: ScalarOrSchedule,
    min_dim_size_to_factor: int = 128,
    decay_rate: float = 0.8,
    decay_offset: int = 0,
    multiply_by_parameter_scale: bool = True,
    clipping_threshold: float | None = 1.0,
    momentum: float | None = None,
    dtype_momentum: str = "float32",
    weight_decay_rate: float | None = None,
    eps: float = 1e-30,
    factored: bool = True,
    mask: Mask = None,
) -> optax.GradientTransformation:
    r"""Adafactor (= ``optax.adafactor``): factored second moments, relative step sizes.

    .. math::
      \hat\beta_{2,t} = 1 - t^{-c}, \quad
      V_t \approx R_t C_t / (1^\top R_t) \text{ (row / column EMAs of } g^2 + \epsilon),
      \quad U_t = G_t / \sqrt{V_t}

    then U is clipped to RMS ``clipping_threshold``, scaled by lr (and by max(RMS(theta), 1e-3)
    with ``multiply_by_parameter_scale``), optionally averaged with ``momentum``. Leaves smaller
    than ``min_dim_size_to_factor`` in their two largest dimensions keep a full second moment.
    optax's weight decay keyword is kept: ``weight_decay_rate`` is added *after* the learning
    rate (theta -= lr u + wd theta), not multiplied by it; ``mask`` is optax's
    ``weight_decay_mask``. No ``weight_decay`` keyword, to keep that difference visible.

    Args:
      learning_rate: eta, a number > 0 or a schedule.
      min_dim_size_to_factor: factor only dimensions at least this large (static).
      decay_rate: c > 0 in beta_2(t) = 1 - t^(-c).
      decay_offset: step offset of that schedule, an integer >= 0.
      multiply_by_parameter_scale: scale by the parameters' RMS.
      clipping_threshold: RMS clip of the update, > 0 (None: off).
      momentum: EMA decay of the update in [0, 1) (None: off).
      dtype_momentum: dtype of the momentum buffer.
      weight_decay_rate: optax's decay, >= 0 (None: off).
      eps: regularizer of the squared gradient, >= 0.
      factored: factor the second moment.
      mask: optax's ``weight_decay_mask``.
      max_norm: global-norm clip of the raw gradient first (None: off).
      coupled_weight_decay: L2 decay added to the gradient first.
      coordinate_clip: per-coordinate clip of the raw gradient (None: off).

    Returns:
      The corresponding ``optax.GradientTransformation``.

    References:
      Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost", ICML
      2018.
    """
    tx = optax.adafactor(
        learning_rate, min_dim_size_to_factor, decay_rate, decay_offset,
        multiply_by_parameter_scale, clipping_threshold, momentum, dtype_momentum,
        weight_decay_rate, eps, factored, weight_decay_mask=mask,
    )
    return tx


MUON_ADAM_PARAMS = r"embed|head"


def muon_labels(params: Any, adam_params: str | None = MUON_ADAM_PARAMS) -> Any:
    """'muon' or 'adam' per leaf of `params`, as ``muon`` partitions them: matrices (ndim 2)
    whose name (``keystr(path, simple=True, separator='/')``, e.g. "blocks/0/mlp/up/kernel")
    does not match `adam_params` (``re.search``) get Muon, everything else Adam."""
    pattern = re.compile(adam_params) if adam_params else None

    def label(path, x):
        name = jax.tree_util.keystr(path, simple=True, separator="/")
        if getattr(x, "ndim", None) != 2 or (pattern is not None and pattern.search(name)):
            return "adam"
        return "muon"

    return jax.tree_util.tree_map_with_path(label, params)


@_register()
def muon(
    learning_rate: ScalarOrSchedule,
    ns_coeffs: tuple[float, float, float] | str = (3.4445, -4.775, 2.0315),
    ns_steps: int = 5,
    beta: float = 0.95,
    eps: float = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask = None,
    mu_dtype: Any = None,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: str = "frobenius",
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
    adam_eps_root: float = 0.0,
    adam_weight_decay: ScalarOrSchedule = 0.0,
    adam_learning_rate: ScalarOrSchedule | None = None,
    consistent_rms: float | None = None,
    adam_params: str | None = MUON_ADAM_PARAMS,
) -> optax.GradientTransformation:
    r"""Muon (= ``optax.contrib.muon``): orthogonalized momentum for matrices, Adam for the rest.

    .. math::
      B_t = \beta B_{t-1} + G_t, \quad
      O_t = \operatorname{NewtonSchulz}_k(G_t + \beta B_t \text{ (nesterov) or } B_t)
      \approx U V^\top, \quad
      \Theta_t = \Theta_{t-1} - \eta_t (\sqrt{\max(1, n_{out}/n_{in})}\, O_t + \lambda
      \Theta_{t-1})

    for the Muon leaves; every other leaf is updated by AdamW (``adam_*`` keywords, optax's
    fallback). Which leaves are Muon's: 2-D leaves whose name (``keystr(path, simple=True,
    separator='/')``) does not match the regular expression ``adam_params`` (``re.search``).
    The default ``"embed|head"`` sends the embedding and the output head to Adam, the usual
    convention (Muon is meant for hidden matrices); ``adam_params=None`` is optax's own rule
    (every 2-D leaf is Muon's). A string, so a config can set it; see ``muon_labels``.

    Args:
      learning_rate: eta, a number > 0 or a schedule.
      ns_coeffs: Newton-Schulz coefficients (a, b, c), or an optax preset name.
      ns_steps: Newton-Schulz iterations, an integer >= 1 (static).
      beta: momentum decay in [0, 1).
      eps: added to the Frobenius norm before Newton-Schulz, and Adam's eps, >= 0.
      weight_decay: decoupled decay of the Muon leaves (optax's), >= 0.
      mask: optax's ``weight_decay_mask`` (Muon leaves).
      mu_dtype: dtype of the momentum.
      nesterov: Nesterov momentum.
      adaptive: scale by the dual norm of the update.
      preconditioning: 'frobenius', 'spectral', 'aol' or 'schatten'.
      adam_b1, adam_b2, adam_eps_root, adam_weight_decay: the Adam fallback's hparams.
      adam_learning_rate: the Adam fallback's learning rate (None: ``learning_rate``).
      consistent_rms: scale to a shape-independent RMS (None: width scaling).
      adam_params: regular expression of the leaf names that use Adam (None: only non-2-D).
      max_norm: global-norm clip of the raw gradient first (None: off).
      coupled_weight_decay: L2 decay added to the gradient first.
      coordinate_clip: per-coordinate clip of the raw gradient (None: off).

    Returns:
      The corresponding ``optax.GradientTransformation`` (an ``optax.partition`` of 'muon'
      and 'adam').

    References:
      Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024;
      Liu et al., "Muon is Scalable for LLM Training", 2025.
    """
    if adam_params is None:
        dims = None
    else:
        def dims(params):  # None: the leaf goes to Adam (optax's convention)
            labels = muon_labels(params, adam_params)
            return jax.tree.map(
                lambda lab: optax.contrib.MuonDimensionNumbers() if lab == "muon" else None,
                labels,
            )

    tx = optax.contrib.muon(
        learning_rate, ns_coeffs, ns_steps, beta, eps, weight_decay, mask, mu_dtype,
        nesterov=nesterov, adaptive=adaptive, preconditioning=preconditioning,
        adam_b1=adam_b1, adam_b2=adam_b2, adam_eps_root=adam_eps_root,
        adam_weight_decay=adam_weight_decay, adam_learning_rate=adam_learning_rate,
        muon_weight_dimension_numbers=dims, consistent_rms=consistent_rms,
    )
    return tx


@_register(b1=_p(_DECAY, positive=True))
@_doc
def schedule_free_adamw(
    learning_rate: ScalarOrSchedule,
    warmup_steps: int | None = None,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    weight_lr_power: float = 2.0,
    state_dtype: Any = None,
    mask: Mask = None,
) -> optax.GradientTransformation:
    r"""Schedule-free AdamW (= ``optax.contrib.schedule_free_adamw``).

    .. math::
      y_t = (1-\beta_1) z_t + \beta_1 x_t, \quad
      z_{t+1} = z_t - \eta_t\, (\text{RMSprop}(\nabla f(y_t)) + \lambda y_t), \quad
      x_{t+1} = (1 - c_{t+1}) x_t + c_{t+1} z_{t+1}

    with c_{t+1} = eta_max^p / sum of eta_max^p so far (p = ``weight_lr_power``). The
    parameters the optimizer sees and updates are y; **evaluate at x**:
    ``eval_params(opt_state, params)`` (optax's ``schedule_free_eval_params``, found anywhere in
    the state). Use a constant learning rate after warmup (no decay): the averaging replaces the
    schedule. Built as optax's alias is, from ``optax.contrib.schedule_free`` around
    chain(scale_by_rms, add_decayed_weights(weight_decay, mask), scale_by_learning_rate), so
    that ``mask`` works.

    Args:
      learning_rate: eta, a number > 0 or a schedule (warmup, no decay).
      warmup_steps: if given, a linear warmup of that many steps to ``learning_rate`` (a
        number), as optax's alias (static).
      b1: interpolation weight in (0, 1).
      b2: second-moment decay in [0, 1).
      eps: outside the square root, >= 0.
      weight_lr_power: p >= 0.
      state_dtype: dtype of z (None: float32 whatever the parameters' dtype: with bfloat16
        parameters a bfloat16 z put the updates ~50% off the float32 computation).
      {common}

    Returns:
      The corresponding ``optax.GradientTransformationExtraArgs``.

    References:
      Defazio et al., "The Road Less Scheduled", NeurIPS 2024.
    """
    if warmup_steps is not None:  # (a schedule with warmup_steps is refused: _check_warmup)
        learning_rate = optax.warmup_constant_schedule(0.0, learning_rate, warmup_steps)
    base = optax.chain(
        optax.scale_by_rms(decay=b2, eps=eps, eps_in_sqrt=False, bias_correction=True),
        optax.add_decayed_weights(weight_decay, mask),
        optax.scale_by_learning_rate(learning_rate),
    )
    tx = optax.contrib.schedule_free(
        base, learning_rate, b1=b1, weight_lr_power=weight_lr_power,
        state_dtype=jnp.float32 if state_dtype is None else state_dtype,
    )
    return tx


# --------------------------------------------------------------------------- registry


def names() -> list[str]:
    """Every registered optimizer name (built-ins first)."""
    return list(_TABLE)


def entry(name: str) -> Optimizer:
    """The table row of optimizer ``name``; a reference ``package.module:factory`` or
    ``path/to/file.py:factory`` is imported and registered on first use. Unknown names raise a
    one-line ValueError listing the valid ones."""
    if name in _TABLE:
        return _TABLE[name]
    if isinstance(name, str) and ":" in name:
        return _TABLE[resolve(name)]
    raise ValueError(f"Unknown optimizer {name!r}; valid names: {', '.join(names())} (or a "
                     "reference package.module:factory or path/to/file.py:factory).")


def _factory(name: str) -> Callable[..., optax.GradientTransformation]:
    return entry(name).factory


def hparams(name: str) -> dict[str, Any]:
    """The keywords of optimizer ``name`` (all but ``learning_rate``) and their defaults."""
    return dict(entry(name).defaults)


def hparam_types(name: str) -> dict[str, type | None]:
    """The Python type a config field needs for each keyword of ``name`` (from the factory's
    annotations: ``float`` for ``float | None``; None where several types are valid, e.g. a
    number or a schedule, or a mask)."""
    return dict(entry(name).types)


def static_hparams(name: str) -> tuple[str, ...]:
    """Keywords of ``name`` that must stay static under ``optax.inject_hyperparams`` (integer
    loop counts, sizes and schedule lengths): pass them as ``static_args``."""
    return entry(name).static


def theory_settings(name: str, hparams: dict[str, Any]) -> dict[str, Any]:
    """The monitor's theory settings (b1, b2, eps, bias_correction) of optimizer ``name`` with
    ``hparams`` (defaults filled in): {} when the entry declares no theory mapping."""
    return entry(name).theory_settings(hparams)


def theory_hparams(name: str) -> set[str]:
    """The hparams the monitor's theory overlay of ``name`` reads (constants of a group)."""
    theory = entry(name).theory or {}
    return {v for v in theory.values() if isinstance(v, str)}


# ------------------------------------------------------------------ user optimizers


def _generic_rule(default: Any) -> Callable[[str, Any], None] | None:
    """A user hparam the common rules do not know: a float default must stay a finite number,
    an int default an integer, a bool a bool."""
    if isinstance(default, bool):
        return _BOOL
    if isinstance(default, int):
        return _p(C.check_int, minimum=-(2**62))
    if isinstance(default, float):
        def finite(name: str, value: Any) -> None:
            if is_number(value) and not float(value) == float(value) or (
                    is_number(value) and abs(float(value)) == float("inf")):
                C.fail(name, value, "must be a finite number")
            if not (is_number(value) or isinstance(value, jax.Array) or callable(value)):
                C.fail(name, value, "must be a number")
        return finite
    return None


def register(name: str, factory: Callable[..., optax.GradientTransformation] | None = None, *,
             hparams: dict[str, Any] | None = None, theory: dict[str, str | float] | None = None,
             static: tuple[str, ...] | list[str] = (), references: str = ""):
    """Adds an optimizer of one's own to the registry (or, without ``factory``, a decorator).

    ``factory`` builds the optimizer's *direction* from its own hparams, e.g.
    ``def my_sign(beta=0.9): return optax.chain(optax.ema(beta), optax.scale_by_sign())``; the
    registry adds the common keywords (``weight_decay, mask, max_norm, coupled_weight_decay,
    coordinate_clip``) and ``-learning_rate`` around it, exactly as for the built-ins. A factory
    whose first parameter is ``learning_rate`` is a whole optimizer (it scales by the learning
    rate itself); the registry then adds only the raw-gradient steps (``max_norm``,
    ``coordinate_clip``, ``coupled_weight_decay``).

    The traced-hparam contract (vectorized sweeps): every numeric hparam not in ``static`` may
    arrive as a JAX array, traced, so the factory must not use it in a Python ``if`` or as a
    loop count or a shape; declare those ``static``. A sweep checks each factory once by
    abstract evaluation and runs a factory that breaks the contract solo, with a note.

    Args:
      name: the registry name; a built-in's name is an error. Registering a name again replaces
        the earlier entry (re-importing a file is harmless).
      factory: ``factory(**hparams) -> GradientTransformation`` (or ``factory(learning_rate,
        **hparams)``); every hparam needs a default.
      hparams: defaults that replace the signature's ({keyword: default}).
      theory: the monitor's theory mapping {'b1' | 'b2' | 'eps' | 'bias_correction': hparam
        name or number}, e.g. ``{'b1': 'beta', 'b2': 'beta'}``; None: no theory overlay.
      static: hparams that must stay Python values (loop counts, sizes, flags used in ``if``).
      references: the papers, for ``entry(name).references``.

    Returns:
      The validating factory ``f(learning_rate, **hparams)`` (as the decorator: it replaces the
      decorated function, so ``f`` is usable directly).
    """
    if factory is None:
        return lambda fn: register(name, fn, hparams=hparams, theory=theory, static=static,
                                   references=references)
    if not isinstance(name, str) or not name:
        raise ValueError(f"register: name={name!r} must be a non-empty string")
    if name in _TABLE and _TABLE[name].builtin:
        raise ValueError(f"register: name={name!r} is a built-in optimizer; choose another name")
    if not callable(factory):
        raise ValueError(f"register({name!r}): factory={factory!r} is not callable")
    sig = inspect.signature(factory)
    params = list(sig.parameters.values())
    whole = bool(params) and params[0].name == "learning_rate"
    own = {p.name: p.default for p in params[1 if whole else 0:]
           if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    unknown = sorted(set(hparams or {}) - set(own))
    if unknown:
        raise ValueError(f"register({name!r}): hparams {unknown} are not keywords of the "
                         f"factory; its keywords: {', '.join(own) or '-'}")
    own.update(hparams or {})
    missing = [k for k, v in own.items() if v is inspect.Parameter.empty]
    if missing:
        raise ValueError(f"register({name!r}): hparam {missing[0]!r} has no default; give one "
                         "in the signature or in hparams={...}")
    clash = sorted(set(own) & {*COMMON, "learning_rate"}) if not whole else sorted(
        set(own) & {"max_norm", "coordinate_clip", "coupled_weight_decay"})
    if clash:
        raise ValueError(f"register({name!r}): hparam {clash[0]!r} is a common keyword the "
                         "registry applies; remove it from the factory")
    bad_static = sorted(set(static) - set(own))
    if bad_static:
        raise ValueError(f"register({name!r}): static={bad_static} are not hparams of the "
                         f"factory; its hparams: {', '.join(own) or '-'}")
    for field, source in (theory or {}).items():
        if field not in ("b1", "b2", "eps", "bias_correction"):
            raise ValueError(f"register({name!r}): theory field {field!r}; valid: b1, b2, eps, "
                             "bias_correction")
        if isinstance(source, str) and source not in own:
            raise ValueError(f"register({name!r}): theory {field}={source!r} is not an hparam; "
                             f"its hparams: {', '.join(own) or '-'}")
    common = ("max_norm", "coordinate_clip", "coupled_weight_decay", "mask") if whole else COMMON
    hints = typing.get_type_hints(factory) if hasattr(factory, "__annotations__") else {}
    kinds = {k: (_base_type(hints[k]) if k in hints else
                 (type(v) if isinstance(v, (bool, int, float, str)) else None))
             for k, v in own.items()}
    rules = {k: _RULES.get(k, _generic_rule(v)) for k, v in own.items()}
    rules["learning_rate"] = _RULES["learning_rate"]
    rules.update({k: _RULES.get(k) for k in common})
    joint = _joint(rules)

    common_defaults = {k: _COMMON_DEFAULTS[k] for k in common}
    build = _full_factory(factory, name, own, common_defaults, rules, joint, whole)
    defaults = {**own, **common_defaults}
    row = Optimizer(name=name, factory=build, defaults=defaults,
                    types={**kinds, **{k: _COMMON_TYPES[k] for k in common}}, rules=rules,
                    static=tuple(static), common=common, joint=joint,
                    theory=dict(theory) if theory else None,
                    references=references, builtin=False)
    try:
        tx = build(1e-3)
    except Exception as e:  # noqa: BLE001 - any failure with the defaults is the user's
        raise ValueError(f"register({name!r}): the factory fails with its defaults: "
                         f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                         ) from e
    del tx
    _TABLE[name] = row
    build._optaxlab_name = name  # type: ignore[attr-defined]
    return build


def _load_file(path: str):
    full = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(full):
        raise ValueError(f"optimizer {path!r}: file not found ({full})")
    module_name = "optaxlab_user_" + "".join(c if c.isalnum() else "_" for c in full)
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, full)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - one line naming the file
        del sys.modules[module_name]
        raise ValueError(f"optimizer {path!r}: importing it failed: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}") from e
    return module


def canonical(ref: str) -> str:
    """A reference with its file made absolute (``a.py:f`` -> ``/abs/a.py:f``), so every process
    (group members, SLURM tasks, resume) imports the same file; other names unchanged."""
    if not isinstance(ref, str) or ":" not in ref:
        return ref
    where, _, attr = ref.rpartition(":")
    if where.endswith(".py") or os.sep in where:
        return f"{os.path.abspath(os.path.expanduser(where))}:{attr}"
    return ref


def resolve(ref: str) -> str:
    """Imports ``package.module:factory`` or ``path/to/file.py:factory`` and registers the
    factory under ``ref`` (unless it is registered already); returns ``ref``. One-line
    ValueErrors: file missing, module missing, attribute missing, not a factory of a
    ``GradientTransformation``, bad hparam."""
    if ref in _TABLE:
        return ref
    where, _, attr = ref.rpartition(":")
    if not where or not attr:
        raise ValueError(f"optimizer {ref!r}: a reference looks like package.module:factory "
                         "or path/to/file.py:factory")
    if where.endswith(".py") or os.sep in where:
        module = _load_file(where)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise ValueError(f"optimizer {ref!r}: cannot import module {where!r} ({e})") from e
    if not hasattr(module, attr):
        public = [k for k, v in vars(module).items() if callable(v) and not k.startswith("_")]
        raise ValueError(f"optimizer {ref!r}: {where} has no attribute {attr!r}; its callables: "
                         f"{', '.join(public) or '-'}")
    fn = getattr(module, attr)
    registered = getattr(fn, "_optaxlab_name", None)
    if registered in _TABLE:  # decorated with @register(name): the same row under ref too
        _TABLE[ref] = dataclasses.replace(_TABLE[registered], name=ref)
        return ref
    if not callable(fn):
        raise ValueError(f"optimizer {ref!r}: {attr} is {type(fn).__name__}, not a factory of "
                         "an optax.GradientTransformation")
    register(ref, fn, static=getattr(fn, "static_hparams", ()),
             theory=getattr(fn, "theory", None))
    return ref


def untraceable(name: str, hparams: dict[str, Any], traced: list[str]) -> str | None:
    """None if optimizer ``name`` can be built and stepped with the hparams ``traced`` given as
    traced JAX arrays (checked once by abstract evaluation, ``jax.eval_shape``: nothing runs),
    else a one-line note naming the first hparam that cannot be traced. Built-ins are
    traceable by construction (their tests run them under ``inject_hyperparams``)."""
    row = entry(name)
    keys = tuple(k for k in traced if k in hparams)
    if row.builtin or not keys:
        return None
    key = (name, keys, repr(sorted((k, v) for k, v in hparams.items() if k not in keys)))
    if key not in _TRACE_CHECKS:
        _TRACE_CHECKS[key] = _untraceable(row.factory, name, hparams, list(keys))
    return _TRACE_CHECKS[key]


_TRACE_CHECKS: dict[tuple, str | None] = {}


def _untraceable(factory, name: str, hparams: dict[str, Any], keys: list[str]) -> str | None:
    import jax.numpy as jnp

    params = {"w": jnp.zeros((4, 4)), "b": jnp.zeros((4,))}

    def run(keys, values):
        kw = {**hparams, **dict(zip(keys, values, strict=True))}
        tx = factory(1e-3, **kw)
        state = tx.init(params)
        return tx.update(params, state, params)[0]

    def fails(keys) -> str | None:
        values = [jnp.asarray(hparams[k], jnp.float32 if isinstance(hparams[k], float)
                              else None) for k in keys]
        try:
            jax.eval_shape(functools.partial(run, keys), values)
        except Exception as e:  # noqa: BLE001 - the reason goes into the note
            return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e) else ''}"
        return None

    if fails(keys) is None:
        return None
    for key in keys:
        why = fails([key])
        if why is not None:
            return (f"optimizer {name!r} cannot take hparam {key!r} traced ({why[:160]}); "
                    f"declare it static or avoid Python control flow on it")
    return f"optimizer {name!r} cannot take its hparams {keys} traced together"


_UNSET: Any = object()


def check(name: str, learning_rate: Any = _UNSET, **hparams: Any) -> dict[str, Any]:
    """Validates optimizer ``name``'s hparams (and ``learning_rate`` if given) by the registry
    table's rules, exactly as ``create`` does, but builds nothing.

    The rules are the row's (``entry(name).rules``: one per keyword, then the cross-keyword
    ones, ``entry(name).joint``); ``create`` and the factories run the same ``_validate``, so
    ``check`` fails exactly when they would fail validation, with the same one-line message.

    Args:
      name: a registered name or a reference ``package.module:factory`` /
        ``path/to/file.py:factory`` (imported and registered on first use).
      learning_rate: the (peak) learning rate or a schedule; left out: not checked.
      **hparams: the optimizer's keywords.

    Returns:
      Every hparam of ``name`` (not ``learning_rate``): its defaults updated by ``hparams``.

    Raises:
      HparamError: (a ``ValueError``) with ``field`` the bad keyword and ``value`` its value;
        ``field='name'`` for an unknown name or a reference that cannot be imported;
        ``field=None`` for unknown keywords (``value``: their sorted list).
    """
    try:
        row = entry(name)
    except ValueError as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
        raise HparamError("name", name, msg, msg) from None
    return row.check(hparams, learning_rate, with_learning_rate=learning_rate is not _UNSET)


def get(name: str) -> Callable[..., optax.GradientTransformation]:
    """The factory function registered as ``name`` (e.g. to wrap in inject_hyperparams)."""
    return _factory(name)


def create(
    name: str, learning_rate: ScalarOrSchedule, **kwargs: Any
) -> optax.GradientTransformation:
    """Build optimizer ``name`` with ``learning_rate`` (float or schedule) and keywords.

    Bad values raise a one-line ``ValueError`` (see the module docstring); an unknown name or
    keyword one listing the valid ones.

    ``optax.inject_hyperparams(create)(name, learning_rate=lr, **kw)`` works: it injects
    ``learning_rate`` (readable as ``state.hyperparams['learning_rate']``) and passes the other
    keywords, statically, as one dict named ``kwargs``, which is unpacked here. To inject other
    hyperparameters too, wrap the factory:
    ``inject_hyperparams(get(name), static_args=static_hparams(name))(lr, b1=...)``.
    """
    row = entry(name)
    if set(kwargs) == {"kwargs"} and isinstance(kwargs["kwargs"], dict):
        kwargs = kwargs["kwargs"]  # bound by optax.inject_hyperparams(create)
    _unknown(row, kwargs)
    return row.factory(learning_rate, **kwargs)  # validates (`_validate`), then builds


def eval_params(opt_state: optax.OptState, params: optax.Params) -> optax.Params:
    """The parameters to evaluate the model at: schedule-free's x (``optax.contrib.
    schedule_free_eval_params``) when the state holds a ``ScheduleFreeState`` (looked up
    anywhere: inside chains, ``inject_hyperparams``, ``MultiSteps``, wrappers), else `params`
    itself. Call it on the host or inside jit; it allocates only for schedule-free."""
    found = [
        s for s in jax.tree.leaves(
            opt_state, is_leaf=lambda x: isinstance(x, optax.contrib.ScheduleFreeState)
        )
        if isinstance(s, optax.contrib.ScheduleFreeState)
    ]
    if not found:
        return params
    if len(found) > 1:
        raise ValueError(
            f"opt_state holds {len(found)} schedule-free states; eval_params needs exactly one."
        )
    return optax.contrib.schedule_free_eval_params(found[0], params)
