"""Matrix products: ``matmul`` with NumPy's semantics, and ``tensordot``, the one product a
dense layer needs, stated as an einsum (its kernel is ``kernels/tensordot.py``)."""

from __future__ import annotations

import numbers
import string

from ..backend import array_module
from ..kernels import kernel_for
from ..tensor import Function
from .common import as_tensor, check_broadcast, pair, same_device
from .einsum import einsum


class MatMul(Function):
    """d(a @ b) = g @ b^T da + a^T @ g db  (batch broadcasting is undone by the engine)"""
    uses_inputs, uses_output = "others", False

    def forward(self, a, b):
        return array_module(a).matmul(a, b)

    def backward(self, g):
        a, b = self.inputs
        ga = g @ b.swapaxes(-1, -2) if a.requires_grad else None
        gb = a.swapaxes(-1, -2) @ g if b.requires_grad else None
        return ga, gb


def matmul(a, b):
    """``a @ b``. 1-D operands are promoted to matrices and the added axis removed again."""
    a, b = pair(a, b, "matmul")
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul needs operands with at least one dimension, got shapes "
                         f"{a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        which = "second-to-last" if b.ndim > 1 else "only"
        raise ValueError(f"matmul: the last axis of a (shape {a.shape}) must match the "
                         f"{which} axis of b (shape {b.shape})")
    a2 = a.reshape(1, a.shape[0]) if a.ndim == 1 else a
    b2 = b.reshape(b.shape[0], 1) if b.ndim == 1 else b
    try:
        out = MatMul.apply(a2, b2)
    except ValueError as exc:
        raise ValueError(f"matmul: batch shapes of {a.shape} and {b.shape} do not "
                         "broadcast") from exc
    if a.ndim == 1:
        out = out.squeeze(-2)
    if b.ndim == 1:
        out = out.squeeze(-1)
    return out


def tensordot(a, b, axes=2, bias=None):
    """``numpy.tensordot(a, b, axes)`` for an integer ``axes``, plus ``bias`` (broadcast to the
    result) in the same op: the last ``axes`` axes of ``a`` are summed against the first
    ``axes`` axes of ``b``. For other index patterns use ``einsum``.

    >>> tensordot(x, kernel, axes=1, bias=b)   # (B, T, F) x (F, U) -> (B, T, U): a dense layer
    """
    if isinstance(axes, bool) or not isinstance(axes, numbers.Integral):
        raise TypeError(f"tensordot: axes must be an int (the number of axes to contract), got "
                        f"axes={axes!r}; for pairs of axis lists use einsum")
    a, b = pair(a, b, "tensordot")
    n, sa, sb = int(axes), a.shape, b.shape
    if not 0 <= n <= min(len(sa), len(sb)):
        raise ValueError(f"tensordot: axes={n} must be between 0 and the smaller rank of the "
                         f"operands, got shapes {sa} and {sb}")
    if sa[len(sa) - n:] != sb[:n]:
        raise ValueError(f"tensordot: the last {n} axes of a (shape {sa}) must equal the "
                         f"first {n} axes of b (shape {sb})")
    extra = ()
    if bias is not None:
        bias = as_tensor(bias, a)
        same_device(a, bias, op="tensordot")
        check_broadcast(bias.shape, sa[:len(sa) - n] + sb[n:], "tensordot: bias")
        extra = (bias,)
    kernel = kernel_for("tensordot")
    if kernel is not None:
        return kernel(a, b, *extra, n=n)
    letters = iter(string.ascii_letters)
    lead, summed, tail = ("".join(next(letters) for _ in range(k))
                          for k in (len(sa) - n, n, len(sb) - n))
    out = einsum(f"{lead}{summed},{summed}{tail}->{lead}{tail}", a, b)
    return out if bias is None else out + bias
