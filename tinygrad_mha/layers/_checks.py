"""Argument checks shared by the building-block layers; each message names the argument and
the value received, as Keras does."""

from __future__ import annotations

import numbers

import numpy as np


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type. A TypeError, as Python expects; also a ValueError, which
    is what these checks raised first (and what Keras raises), so older ``except`` clauses hold."""


def positive_int(value, name: str, layer: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{layer}: {name} must be a positive integer, got {name}={value!r}")
    return int(value)


def boolean(value, name: str, layer: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{layer}: {name} must be a bool, got {name}={value!r}")
    return bool(value)


def non_negative_float(value, name: str, layer: str) -> float:
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value)
            or value < 0):
        raise ValueError(f"{layer}: {name} must be a non-negative finite number, "
                         f"got {name}={value!r}")
    return float(value)
