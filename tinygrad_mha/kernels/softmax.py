"""Kernel for ``softmax`` (reference: ``ops.nn.Softmax``): in-place forward and gradient.

The reference forward makes four temporaries the size of its input, and its backward,
y * (g - sum(g * y)) as four Tensor ops, four more. Here the forward shifts, exponentiates and
normalises one array in place (with ``overwrite_x``, the input's own memory: the fused
attention node lends it its scores), and the gradient is one op, ``SoftmaxGrad``, that forms
sum(g * y) as one einsum and writes the rest in place (into g's memory when the caller owns
it). What it buys (``benchmarks/bench_kernels.py``, forward plus backward of a softmax over
the attention scores, one thread): the reference takes 1.1x its time at the small
MultiHeadAttention size, 1.2x at the medium and 1.04x at the large one; inside the fused
attention node it also saves a scores-sized array at the peak.
"""

from __future__ import annotations

import functools

from ..backend import array_module
from ..ops.nn import Softmax
from ..tensor import Function
from . import register


class FastSoftmax(Softmax):
    """``ops.nn.Softmax`` on ``softmax_array``; its gradient is one ``SoftmaxGrad`` node."""

    def forward(self, x, axes, mask, overwrite_x=False):
        self.axes = axes
        return softmax_array(x, axes, mask, overwrite_x)

    def backward(self, g):
        return SoftmaxGrad.apply(g, self.output, axes=self.axes)


def softmax_array(x, axes: tuple, mask=None, overwrite_x=False):
    """The masked, stable softmax of ``ops.nn.Softmax.forward`` in one array (x's own with
    ``overwrite_x``, for a caller that never reads x again)."""
    xp = array_module(x)
    if x.size == 0:
        return xp.zeros_like(x)
    overwrite_x = overwrite_x and getattr(x.flags, "writeable", True)
    if mask is None:
        if overwrite_x:
            e = x
            e -= x.max(axis=axes, keepdims=True)
        else:
            e = x - x.max(axis=axes, keepdims=True)
    else:
        if overwrite_x:
            e = x
            xp.copyto(e, x.dtype.type(-xp.inf), where=xp.logical_not(mask))
        else:
            e = xp.where(mask, x, x.dtype.type(-xp.inf))
        shift = e.max(axis=axes, keepdims=True)
        # (only -inf, "nothing kept", is replaced: a NaN logit must make its row NaN)
        e -= xp.where(shift == -xp.inf, x.dtype.type(0), shift)
    xp.exp(e, out=e)
    total = e.sum(axis=axes, keepdims=True)
    e /= total if mask is None else xp.where(total == 0, x.dtype.type(1), total)
    return e


def _row_dot(a, b, axes):
    """sum(a * b) over ``axes`` (keepdims), without the (a * b) temporary: one einsum."""
    subscripts, kept_shape = _row_dot_plan(a.shape, axes)
    return array_module(a).einsum(subscripts, a, b).reshape(kept_shape)


@functools.lru_cache(maxsize=256)
def _row_dot_plan(shape: tuple, axes: tuple):
    letters = "abcdefghijklmnopqrstuvwxyz"[:len(shape)]
    kept = "".join(c for i, c in enumerate(letters) if i not in axes)
    return f"{letters},{letters}->{kept}", tuple(1 if i in axes else n for i, n in enumerate(shape))


def softmax_grad_array(g, y, axes: tuple, overwrite_g=False):
    """y * (g - sum(g * y)) on backend arrays; with ``overwrite_g``, in g's memory."""
    if overwrite_g:
        g -= _row_dot(g, y, axes)
    else:
        g = g - _row_dot(g, y, axes)
    g *= y
    return g


class SoftmaxGrad(Function):
    """z = y * (g - sum(g * y)) as one op. Its own gradient (second derivatives), upstream u:
    dg = y * (u - sum(u * y))  (z is linear in g: the same formula)
    dy = u * (g - sum(g * y)) - g * sum(u * y)
    """
    uses_output = False

    def forward(self, g, y, axes):
        self.axes = axes
        return softmax_grad_array(g, y, axes)

    def backward(self, u):
        g, y = self.inputs
        gg = SoftmaxGrad.apply(u, y, axes=self.axes) if g.requires_grad else None
        gy = None
        if y.requires_grad:
            gy = (u * (g - (g * y).sum(self.axes, keepdims=True))
                  - g * (u * y).sum(self.axes, keepdims=True))
        return gg, gy


@register("softmax")
def softmax(x, axes, mask, overwrite_x=False):
    """``ops.nn.softmax`` after its argument checks, as one ``FastSoftmax`` node."""
    return FastSoftmax.apply(x, axes=axes, mask=mask, overwrite_x=overwrite_x)
