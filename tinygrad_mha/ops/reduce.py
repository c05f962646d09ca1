"""Reductions. Their gradients spread the upstream gradient back over the reduced axes."""

from __future__ import annotations

import functools

from ..backend import array_module
from ..tensor import Function, Tensor, is_grad_enabled
from .common import as_tensor, normalize_axes
from .shape import BroadcastTo, Reshape


def _kept_shape(shape, axes):
    """``shape`` with the reduced ``axes`` set to 1 (the keepdims shape)."""
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


class Sum(Function):
    """d sum(a) = broadcast(g) over the summed axes"""
    uses_inputs, uses_output = "none", False

    def forward(self, a, axes, keepdims):
        self.axes = axes
        # the method, and axis=None for a full sum: NumPy takes a third longer over all axes named
        return a.sum(axis=None if len(axes) == a.ndim else axes, keepdims=keepdims)

    def backward(self, g):
        shape = self.inputs[0].shape
        # The internal ops directly: the shapes are right by construction, and the public
        # functions' checks took most of this backward's time. A scalar broadcasts as it is.
        if not is_grad_enabled():  # the same views, without graph nodes (nothing records them)
            data = g.data
            if data.ndim and data.ndim != len(shape):
                data = data.reshape(_kept_shape(shape, self.axes))
            return Tensor._wrap(data if data.shape == shape else array_module(data).broadcast_to(data, shape))
        if g.ndim and g.ndim != len(shape):
            g = Reshape.apply(g, shape=_kept_shape(shape, self.axes))
        return g if g.shape == shape else BroadcastTo.apply(g, shape=shape)


class SumTo(Function):
    """Sum a broadcast array back down to ``shape``: the adjoint of ``broadcast_to``."""
    uses_inputs, uses_output = "none", False

    def forward(self, a, shape):
        return sum_to_array(a, shape)

    def backward(self, g):
        return g.broadcast_to(self.inputs[0].shape)


def sum_to_array(a, shape: tuple):
    """The arithmetic of ``SumTo`` on a backend array."""
    axes = _broadcast_axes(a.shape, shape)
    return (a.sum(axis=axes, keepdims=True) if axes else a).reshape(shape)


@functools.lru_cache(maxsize=1024)
def _broadcast_axes(big: tuple, shape: tuple) -> tuple:
    """The axes of ``big`` that broadcasting ``shape`` up to it created or stretched (cached:
    the engine asks for every bias gradient of every step)."""
    lead = len(big) - len(shape)
    return tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and big[lead + i] != 1)


class MaxMin(Function):
    """d max(a) = g at the maximal entries (shared equally between ties), 0 elsewhere."""

    def forward(self, a, axes, keepdims, largest):
        xp = array_module(a)
        self.axes = axes
        out = (xp.max if largest else xp.min)(a, axis=axes, keepdims=True)
        return out if keepdims else out.reshape(tuple(n for i, n in enumerate(a.shape) if i not in axes))

    def backward(self, g):
        a = self.inputs[0]
        shape = _kept_shape(a.shape, self.axes)
        xp = a.xp
        out = self.output.data.reshape(shape)
        # a NaN is the max (NumPy's max propagates it), so it takes the gradient, as in PyTorch
        hit = (a.data == out) | (xp.isnan(a.data) & xp.isnan(out))
        share = hit / xp.sum(hit, axis=self.axes, keepdims=True)
        return g.reshape(shape) * Tensor._wrap(share.astype(a.dtype))


def _check_reducible(a: Tensor, axes, op: str):
    if a.size == 0 and op in ("max", "min"):
        raise ValueError(f"{op} of an empty tensor of shape {a.shape} has no identity")


def sum(a, axis=None, keepdims=False):  # noqa: A001
    a = as_tensor(a)
    return Sum.apply(a, axes=normalize_axes(axis, a.ndim), keepdims=bool(keepdims))


def sum_to(a, shape):
    """Sum ``a`` down to ``shape`` (which ``shape`` must broadcast up to ``a.shape``)."""
    a = as_tensor(a)
    return SumTo.apply(a, shape=tuple(shape))


def max(a, axis=None, keepdims=False):  # noqa: A001
    a = as_tensor(a)
    _check_reducible(a, axis, "max")
    return MaxMin.apply(a, axes=normalize_axes(axis, a.ndim), keepdims=bool(keepdims), largest=True)


def min(a, axis=None, keepdims=False):  # noqa: A001
    a = as_tensor(a)
    _check_reducible(a, axis, "min")
    return MaxMin.apply(a, axes=normalize_axes(axis, a.ndim), keepdims=bool(keepdims), largest=False)


def mean(a, axis=None, keepdims=False):
    a = as_tensor(a)
    axes = normalize_axes(axis, a.ndim)
    count = 1
    for i in axes:
        count *= a.shape[i]
    return sum(a, axes, keepdims) / count


def var(a, axis=None, keepdims=False, ddof=0):
    """Population variance by default (``ddof=0``), as NumPy."""
    a = as_tensor(a)
    axes = normalize_axes(axis, a.ndim)
    count = 1
    for i in axes:
        count *= a.shape[i]
    centered = a - mean(a, axes, keepdims=True)
    return sum(centered * centered, axes, keepdims) / (count - ddof)
