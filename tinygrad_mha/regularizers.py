"""Weight penalties with Keras 3 names, defaults and formulas.

A regularizer maps a weight Tensor to a scalar Tensor that a layer adds to its ``losses``. It is
built from Tensor ops only, so the penalty's gradient reaches the weight through ``backward``.
Note that L2 is ``l2 * sum(x**2)``, with no factor 1/2 (Keras's convention).
"""

from __future__ import annotations

import math
import numbers

from ._registry import Registry
from .ops import where
from .tensor import Tensor

EPSILON = 1e-7  # Keras's backend.epsilon(): the smallest norm OrthogonalRegularizer divides by


def _check_factor(value, name: str) -> float:
    """A penalty factor: a finite, non-negative number (Keras's ``validate_float_arg``)."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or value < 0):
        raise ValueError(f"{name} must be a non-negative finite number, got {name}={value!r}")
    return float(value)


def _as_tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


def _zero_like(x: Tensor) -> Tensor:
    return Tensor._wrap(x.xp.zeros((), dtype=x.dtype))


class Regularizer:
    """Base class: ``reg(x) -> scalar Tensor``; configs round-trip through ``from_config``."""

    def __call__(self, x) -> Tensor:
        return _zero_like(_as_tensor(x))

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class L1(Regularizer):
    """l1 * sum(|x|): pushes weights to exactly zero (sparsity)."""

    def __init__(self, l1=0.01):
        self.l1 = _check_factor(0.01 if l1 is None else l1, "l1")

    def __call__(self, x) -> Tensor:
        x = _as_tensor(x)
        return abs(x).sum() * self.l1

    def get_config(self):
        return {"l1": self.l1}


class L2(Regularizer):
    """l2 * sum(x**2): weight decay through the loss."""

    def __init__(self, l2=0.01):
        self.l2 = _check_factor(0.01 if l2 is None else l2, "l2")

    def __call__(self, x) -> Tensor:
        x = _as_tensor(x)
        return (x * x).sum() * self.l2

    def get_config(self):
        return {"l2": self.l2}


class L1L2(Regularizer):
    """l1 * sum(|x|) + l2 * sum(x**2); a zero factor leaves its term out (defaults: both 0)."""

    def __init__(self, l1=0.0, l2=0.0):
        self.l1 = _check_factor(0.0 if l1 is None else l1, "l1")
        self.l2 = _check_factor(0.0 if l2 is None else l2, "l2")

    def __call__(self, x) -> Tensor:
        x = _as_tensor(x)
        total = _zero_like(x)
        if self.l1 != 0.0:
            total = total + abs(x).sum() * self.l1
        if self.l2 != 0.0:
            total = total + (x * x).sum() * self.l2
        return total

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}


def _l2_normalize(x: Tensor, axis: int) -> Tensor:
    """x / max(||x||, EPSILON) along ``axis`` (Keras's ``normalize``), with a finite gradient
    for all-zero vectors: their norm is replaced before the square root ever sees it."""
    squares = (x * x).sum(axis, keepdims=True)
    tiny = squares.data < EPSILON ** 2
    safe_norm = where(tiny, 1.0, squares).sqrt()
    return x / where(tiny, EPSILON, safe_norm)


class OrthogonalRegularizer(Regularizer):
    """Penalises rows (``mode="rows"``) or columns of a 2-D weight for not being orthogonal.

    Keras's formula is factor * 0.5 * sum(|cos(v_i, v_j)| for i != j) / (n * (n - 1) / 2): each
    pair is counted twice and halved again, so it is ``factor`` times the mean |cosine similarity|
    of the n vectors' distinct pairs (0 for orthogonal vectors, ``factor`` for parallel ones).
    """

    MODES = ("rows", "columns")

    def __init__(self, factor=0.01, mode="rows"):
        self.factor = _check_factor(factor, "factor")
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got mode={mode!r}")
        self.mode = mode

    def __call__(self, x) -> Tensor:
        x = _as_tensor(x)
        if x.ndim != 2:
            raise ValueError(f"OrthogonalRegularizer needs a rank-2 input, got shape {x.shape}")
        if self.mode == "rows":
            unit = _l2_normalize(x, axis=1)
            cosines = unit @ unit.T
        else:
            unit = _l2_normalize(x, axis=0)
            cosines = unit.T @ unit
        size = cosines.shape[0]
        if size < 2:  # no pairs to compare (Keras would divide 0 by 0 here)
            return _zero_like(x)
        off_diagonal = Tensor._wrap(1.0 - x.xp.eye(size, dtype=x.dtype))
        pairs = size * (size - 1) / 2.0
        return abs(cosines * off_diagonal).sum() * (self.factor * 0.5 / pairs)

    def get_config(self):
        return {"factor": self.factor, "mode": self.mode}


# ---------------------------------------------------------------- lookup
_REGISTRY = Registry("regularizer", Regularizer, {
    L1: ("l1",),
    L2: ("l2",),
    L1L2: ("l1_l2", "l1l2"),
    OrthogonalRegularizer: ("orthogonal_regularizer",),
})


def get(identifier):
    """None, a name ("l2", "L1L2", ...), a config dict, an instance or a callable -> a
    regularizer."""
    return _REGISTRY.get(identifier)


def serialize(regularizer) -> dict | None:
    """``{"class_name": ..., "config": ...}``, JSON-serialisable."""
    return _REGISTRY.serialize(regularizer)


def deserialize(config):
    """Rebuild a regularizer from ``serialize``'s dict (Keras's serialized form also works)."""
    return _REGISTRY.deserialize(config)


__all__ = ["Regularizer", "L1", "L2", "L1L2", "OrthogonalRegularizer", "get", "serialize",
           "deserialize"]
