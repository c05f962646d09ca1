"""Reductions. Their gradients spread the upstream gradient back over the reduced axes."""

from __future__ import annotations

from ..backend import array_module
from ..tensor import Function, Tensor
from .common import as_tensor, normalize_axes


def _kept_shape(shape, axes):
    """``shape`` with the reduced ``axes`` set to 1 (the keepdims shape)."""
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


class Sum(Function):
    """d sum(a) = broadcast(g) over the summed axes"""
    uses_inputs, uses_output = "none", False

    def forward(self, a, axes, keepdims):
        self.axes = axes
        return a.sum(axis=axes, keepdims=keepdims)

    def backward(self, g):
        shape = self.inputs[0].shape
        if g.ndim != len(shape):  # put the summed axes back as 1s (a scalar broadcasts as is)
            g = g.reshape(_kept_shape(shape, self.axes))
        return g.broadcast_to(shape)


class SumTo(Function):
    """Sum a broadcast array back down to ``shape``: the adjoint of ``broadcast_to``."""
    uses_inputs, uses_output = "none", False

    def forward(self, a, shape):
        lead = a.ndim - len(shape)  # the axes broadcasting created, and those it stretched
        axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape)
                                          if n == 1 and a.shape[lead + i] != 1)
        return a.sum(axis=axes, keepdims=True).reshape(shape)

    def backward(self, g):
        return g.broadcast_to(self.inputs[0].shape)


class MaxMin(Function):
    """d max(a) = g at the maximal entries (shared equally between ties), 0 elsewhere."""

    def forward(self, a, axes, keepdims, largest):
        xp = array_module(a)
        self.axes = axes
        out = (xp.max if largest else xp.min)(a, axis=axes, keepdims=True)
        kept = tuple(n for i, n in enumerate(a.shape) if i not in axes)
        return out if keepdims else out.reshape(kept)

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
    return MaxMin.apply(a, axes=normalize_axes(axis, a.ndim), keepdims=bool(keepdims),
                        largest=False)


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
