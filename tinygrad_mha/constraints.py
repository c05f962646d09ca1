"""Weight constraints with Keras 3 names, defaults and formulas.

A constraint maps a weight's backend array (NumPy or CuPy) to a projected array of the same
shape and dtype. Optimizers apply it after every update; it is never part of the graph, so it
works on plain arrays rather than Tensors.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ._registry import Registry
from .backend import array_module, is_cupy_array
from .tensor import Tensor

EPSILON = 1e-7  # Keras's backend.epsilon(), added to norms before dividing by them


def _array(w):
    """The backend array to constrain (a Tensor's data; lists become NumPy arrays)."""
    if isinstance(w, Tensor):
        return w.data
    return w if isinstance(w, np.ndarray) or is_cupy_array(w) else np.asarray(w)


def _norms(w, axis):
    """The L2 norm of each slice along ``axis`` (int or list of ints), kept broadcastable."""
    xp = array_module(w)
    axis = tuple(axis) if isinstance(axis, (list, tuple)) else axis
    return xp.sqrt(xp.sum(w * w, axis=axis, keepdims=True))


def _check_axis(axis):
    if isinstance(axis, (list, tuple)):
        if not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in axis):
            raise TypeError(f"axis must be an int or a list of ints, got axis={axis!r}")
        return [int(a) for a in axis]
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis must be an int or a list of ints, got axis={axis!r}")
    return int(axis)


def _check_bound(value, name: str):
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value)
            or value < 0):
        raise ValueError(f"{name} must be a non-negative number, got {name}={value!r}")
    return value


class Constraint:
    """Base class: ``constraint(array) -> array`` (the identity here)."""

    def __call__(self, w):
        return _array(w)

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class MaxNorm(Constraint):
    """Rescale each slice along ``axis`` whose L2 norm exceeds ``max_value`` down to it.

    w * clip(norm, 0, max_value) / (EPSILON + norm); for a Dense-style kernel (in, out),
    axis=0 constrains the incoming weights of each unit.
    """

    def __init__(self, max_value=2, axis=0):
        self.max_value = _check_bound(max_value, "max_value")
        self.axis = _check_axis(axis)

    def __call__(self, w):
        w = _array(w)
        xp = array_module(w)
        norms = _norms(w, self.axis)
        desired = xp.clip(norms, 0, self.max_value)
        return (w * (desired / (EPSILON + norms))).astype(w.dtype, copy=False)

    def get_config(self):
        return {"max_value": self.max_value, "axis": self.axis}


class MinMaxNorm(Constraint):
    """Move each slice's L2 norm into [min_value, max_value], a fraction ``rate`` of the way.

    The target norm is rate * clip(norm, min, max) + (1 - rate) * norm; rate=1 enforces strictly.
    """

    def __init__(self, min_value=0.0, max_value=1.0, rate=1.0, axis=0):
        self.min_value = _check_bound(min_value, "min_value")
        self.max_value = _check_bound(max_value, "max_value")
        if self.min_value > self.max_value:
            raise ValueError(f"min_value must not exceed max_value, got min_value={min_value!r}, "
                             f"max_value={max_value!r}")
        self.rate = _check_bound(rate, "rate")
        self.axis = _check_axis(axis)

    def __call__(self, w):
        w = _array(w)
        xp = array_module(w)
        norms = _norms(w, self.axis)
        clipped = xp.clip(norms, self.min_value, self.max_value)
        desired = self.rate * clipped + (1 - self.rate) * norms
        return (w * (desired / (EPSILON + norms))).astype(w.dtype, copy=False)

    def get_config(self):
        return {"min_value": self.min_value, "max_value": self.max_value, "rate": self.rate,
                "axis": self.axis}


class NonNeg(Constraint):
    """Replace negative weights by zero."""

    def __call__(self, w):
        w = _array(w)
        return array_module(w).maximum(w, 0).astype(w.dtype, copy=False)


class UnitNorm(Constraint):
    """Scale each slice along ``axis`` to unit L2 norm: w / (EPSILON + norm)."""

    def __init__(self, axis=0):
        self.axis = _check_axis(axis)

    def __call__(self, w):
        w = _array(w)
        return (w / (EPSILON + _norms(w, self.axis))).astype(w.dtype, copy=False)

    def get_config(self):
        return {"axis": self.axis}


# ---------------------------------------------------------------- lookup
_REGISTRY = Registry("constraint", Constraint, {
    MaxNorm: ("max_norm",),
    MinMaxNorm: ("min_max_norm",),
    NonNeg: ("non_neg",),
    UnitNorm: ("unit_norm",),
})


def get(identifier):
    """None, a name ("max_norm", "NonNeg", ...), a config dict, an instance or a callable
    ``fn(array) -> array`` -> a constraint (or None)."""
    return _REGISTRY.get(identifier)


def serialize(constraint) -> dict | None:
    """``{"class_name": ..., "config": ...}``, JSON-serialisable."""
    return _REGISTRY.serialize(constraint)


def deserialize(config):
    """Rebuild a constraint from ``serialize``'s dict (Keras's serialized form also works)."""
    return _REGISTRY.deserialize(config)


__all__ = ["Constraint", "MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm", "get", "serialize",
           "deserialize"]
