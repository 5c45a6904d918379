"""Argument checks shared by the transforms and the optimizer registry.

Only *concrete host values* are checked: Python numbers and numpy scalars / arrays. JAX arrays
(what ``optax.inject_hyperparams`` passes, concrete at ``init`` and traced inside ``update``) and
callables (schedules) pass through, so every factory keeps working under ``inject_hyperparams``,
``jit`` and ``vmap``. A failed check raises ``ValueError`` with one line that starts with the
keyword and the value and says what is valid, e.g. ``"b2=1.5: must be in [0, 1)"``: an
``HparamError``, which carries the keyword and the value as well.

Each rule's text lives here only: the optimizer registry's table (``optaxlab.optimizers``) maps
every keyword to one of these functions, and the public transforms call the same functions.
"""

from __future__ import annotations

import math
import re
from typing import Any

import jax
import numpy as np

INITS = ("zero", "first")


def is_number(x: Any) -> bool:
    """True for a concrete Python number (not a bool, an array or a schedule)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def is_host_number(x: Any) -> bool:
    """True for a Python number or a numpy real scalar / 0-d array (not a bool)."""
    if is_number(x):
        return True
    if isinstance(x, (np.generic, np.ndarray)) and np.ndim(x) == 0:
        return np.issubdtype(np.asarray(x).dtype, np.integer) or np.issubdtype(
            np.asarray(x).dtype, np.floating
        )
    return False


def _skip(x: Any) -> bool:
    """Values that cannot be checked on the host: JAX arrays (concrete or traced)."""
    return isinstance(x, jax.Array) or isinstance(x, jax.core.Tracer)


def fmt(x: Any) -> str:
    """repr of a value as a user typed it (numpy scalars shown as Python numbers)."""
    if isinstance(x, (np.generic, np.ndarray)) and np.ndim(x) == 0:
        return repr(np.asarray(x).item())
    return repr(x)


class HparamError(ValueError):
    """A bad hyperparameter, as a ``ValueError`` whose text is one line.

    Attributes:
      field: the keyword the error is about (e.g. 'b2'); 'name' for an optimizer name that is
        not registered; None when it is about several keywords (unknown ones).
      value: the bad value (the list of unknown keywords when `field` is None).
      reason: what is valid, the text after "<field>=<value>: " (the whole line when the line
        does not start with "<field>=<value>").
    """

    def __init__(self, field: str | None, value: Any, reason: str, message: str | None = None):
        self.field, self.value, self.reason = field, value, reason
        super().__init__(message if message is not None else f"{field}={fmt(value)}: {reason}")


def fail(name: str, value: Any, what: str) -> None:
    """Raise the one-line ``HparamError`` "<name>=<value>: <what>"."""
    raise HparamError(name, value, what)


def _real(name: str, value: Any, what: str) -> float | None:
    """The value as a float, None if it cannot be checked here; fails on non-numbers."""
    if _skip(value):
        return None
    if not is_host_number(value):
        fail(name, value, what)
    return float(np.asarray(value))


def check_learning_rate(name: str, value: Any, optional: bool = False) -> None:
    """A learning rate: a finite number > 0, or a schedule (callable); None if `optional`."""
    if (optional and value is None) or callable(value):
        return
    what = "must be a finite number > 0 or an optax schedule" + (" (or None)" if optional else "")
    x = _real(name, value, what)
    if x is not None and not (math.isfinite(x) and x > 0):
        fail(name, value, what)


def check_decay(
    name: str, value: Any, *, optional: bool = False, schedule: bool = False,
    closed: bool = False, positive: bool = False,
) -> None:
    """A decay rate in [0, 1) ((0, 1) if `positive`, [0, 1] if `closed`); None if `optional`,
    a schedule if `schedule`."""
    if (optional and value is None) or (schedule and callable(value)):
        return
    lo = "(0" if positive else "[0"
    hi = "1]" if closed else "1)"
    what = f"must be in {lo}, {hi}"
    if optional:
        what += " or None"
    if schedule:
        what += " or an optax schedule"
    x = _real(name, value, what)
    if x is None:
        return
    ok = (x > 0 if positive else x >= 0) and (x <= 1 if closed else x < 1)
    if not ok:
        fail(name, value, what)


def check_nonnegative(
    name: str, value: Any, *, optional: bool = False, schedule: bool = False
) -> None:
    """A finite number >= 0 (an epsilon, a weight decay); None if `optional`, a schedule if
    `schedule`."""
    if (optional and value is None) or (schedule and callable(value)):
        return
    what = "must be a finite number >= 0"
    if optional:
        what += " or None"
    if schedule:
        what += " or an optax schedule"
    x = _real(name, value, what)
    if x is not None and not (math.isfinite(x) and x >= 0):
        fail(name, value, what)


def check_positive(
    name: str, value: Any, *, optional: bool = False, schedule: bool = False
) -> None:
    """A finite number > 0 (a clipping threshold, an exponent); None if `optional`."""
    if (optional and value is None) or (schedule and callable(value)):
        return
    what = "must be a finite number > 0"
    if optional:
        what += " or None"
    if schedule:
        what += " or an optax schedule"
    x = _real(name, value, what)
    if x is not None and not (math.isfinite(x) and x > 0):
        fail(name, value, what)


def check_finite(name: str, value: Any) -> None:
    """Any finite real number."""
    x = _real(name, value, "must be a finite number")
    if x is not None and not math.isfinite(x):
        fail(name, value, "must be a finite number")


def check_int(name: str, value: Any, minimum: int, *, optional: bool = False) -> None:
    """An integer >= `minimum` (a loop count or a size: static, never injected)."""
    if optional and value is None:
        return
    what = f"must be an integer >= {minimum}" + (" or None" if optional else "")
    if _skip(value):
        return
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < minimum:
        fail(name, value, what)


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, (bool, np.bool_)):
        fail(name, value, "must be True or False")


def check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        fail(name, value, f"must be one of {list(choices)}")


def check_dtype(name: str, value: Any) -> None:
    """None or something `jnp.dtype` understands ('float32', 'bfloat16', jnp.float32)."""
    if value is None:
        return
    try:
        jax.numpy.dtype(value)
    except TypeError:
        fail(name, value, "must be None or a dtype name such as 'float32' or 'bfloat16'")


def check_regex(name: str, value: Any) -> None:
    """None or a string that compiles as a regular expression."""
    if value is None:
        return
    if not isinstance(value, str):
        fail(name, value, "must be None or a regular expression string")
    try:
        re.compile(value)
    except re.error as e:
        fail(name, value, f"must be None or a valid regular expression ({e})")


def check_init(init: Any, debias: bool) -> None:
    """`init` is 'zero' or 'first'; gradient init is already unbiased, so it excludes debiasing."""
    if init not in INITS:
        fail("init", init, f"must be one of {list(INITS)}")
    if init == "first" and debias:
        fail("init", init, "gradient initialization is unbiased from the first step; "
             "use it with bias correction / debias off.")


def check_nesterov_dampening(nesterov: Any, dampening: Any) -> None:
    """torch's rule: Nesterov momentum needs ``dampening=0`` (an injected array can't be
    checked)."""
    if is_number(dampening) and dampening != 0 and nesterov:
        fail("dampening", dampening, "must be 0 with nesterov=True (torch semantics)")
