"""Argument checks shared by the transforms (Python values only; traced values pass through)."""

from __future__ import annotations

from typing import Any

INITS = ("zero", "first")


def is_number(x: Any) -> bool:
    """True for a concrete Python number (not a bool, an array or a schedule)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_decay(name: str, value: Any) -> None:
    """A decay rate must lie in [0, 1] when it is a concrete number."""
    if is_number(value) and not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}={value!r} is invalid: a decay rate must lie in [0, 1].")


def check_nonnegative(name: str, value: Any) -> None:
    """A threshold / epsilon must be >= 0 when it is a concrete number."""
    if is_number(value) and value < 0:
        raise ValueError(f"{name}={value!r} is invalid: it must be >= 0.")


def check_positive(name: str, value: Any) -> None:
    """A clipping threshold / exponent must be > 0 when it is a concrete number."""
    if is_number(value) and value <= 0:
        raise ValueError(f"{name}={value!r} is invalid: it must be > 0.")


def check_init(init: Any, debias: bool) -> None:
    """`init` is 'zero' or 'first'; gradient init is already unbiased, so it excludes debiasing."""
    if init not in INITS:
        raise ValueError(f"init={init!r} is invalid: valid values are {list(INITS)}.")
    if init == "first" and debias:
        raise ValueError(
            "init='first' (gradient initialization) is unbiased from the first step: "
            "use it with bias correction / debias off."
        )
