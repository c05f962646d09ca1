"""Matrix products: ``matmul`` with NumPy's semantics, and ``tensordot``, the one product a
dense layer needs, done as a single matrix multiplication."""

from __future__ import annotations

import math
import numbers

from ..backend import array_module
from ..tensor import Function, Tensor, is_grad_enabled
from .common import as_tensor, check_broadcast, in_place, pair, same_device


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
        raise ValueError(f"matmul needs operands with at least one dimension, got shapes {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        raise ValueError(f"matmul: the last axis of a (shape {a.shape}) must match the "
                         f"{'second-to-last' if b.ndim > 1 else 'only'} axis of b (shape {b.shape})")
    a2 = a.reshape(1, a.shape[0]) if a.ndim == 1 else a
    b2 = b.reshape(b.shape[0], 1) if b.ndim == 1 else b
    try:
        out = MatMul.apply(a2, b2)
    except ValueError as exc:
        raise ValueError(f"matmul: batch shapes of {a.shape} and {b.shape} do not broadcast") from exc
    if a.ndim == 1:
        out = out.squeeze(-2)
    if b.ndim == 1:
        out = out.squeeze(-1)
    return out


class TensorDot(Function):
    """``tensordot(a, b, n) + bias``: a's last n axes contracted with b's first n, as one
    (M, K) @ (K, N) matrix product on reshaped views.

    Every projection of a dense or attention layer has this form, and for it this node is
    cheaper than the general ``Einsum``: no contraction plan, and a backward of two matrix
    products written out, d a = g @ b^T and d b = a^T @ g (each reshaped back). A bias on
    each output feature (shaped like b's last axes) gets the column sums of g; any other
    bias gets g itself, which the engine sums down to the bias' shape.
    """
    uses_inputs, uses_output = "others", False

    def forward(self, a, b, *bias, n):
        lead, tail = a.shape[:a.ndim - n], b.shape[n:]
        self.shapes = a.shape, b.shape, tail if bias and bias[0].shape == tail else None
        self.mkn = m, k, n_out = math.prod(lead), math.prod(b.shape[:n]), math.prod(tail)
        out = (a.reshape(m, k) @ b.reshape(k, n_out)).reshape(lead + tail)  # reshapes of views
        return in_place(out, (a, b), array_module(out).add, bias[0]) if bias else out

    def backward(self, g):
        a, b = self.inputs[:2]
        (m, k, n_out), (a_shape, b_shape, feature_bias) = self.mkn, self.shapes
        # The same lines serve both passes: on plain arrays normally, and on Tensors under
        # create_graph, where the reshapes, transposes, products and sums record themselves
        # and so can be differentiated again.
        if is_grad_enabled():
            g2, av, bv, wrap = g.reshape(m, n_out), a, b, _same
        else:
            g2, av, bv, wrap = g.data.reshape(m, n_out), a.data, b.data, Tensor._wrap
        ga = wrap((g2 @ bv.reshape(k, n_out).T).reshape(a_shape)) if a.requires_grad else None
        gb = wrap((av.reshape(m, k).T @ g2).reshape(b_shape)) if b.requires_grad else None
        if len(self.inputs) == 2:
            return ga, gb
        if feature_bias is None or not self.inputs[2].requires_grad:
            return ga, gb, g
        return ga, gb, wrap(g2.sum(axis=0).reshape(feature_bias))


def _same(t):
    return t


def tensordot(a, b, axes=2, bias=None):
    """``numpy.tensordot(a, b, axes)`` for an integer ``axes``, plus ``bias`` (broadcast to the
    result) in the same op: the last ``axes`` axes of ``a`` are summed against the first
    ``axes`` axes of ``b``. For other index patterns use ``einsum``.

    >>> tensordot(x, kernel, axes=1, bias=b)   # (B, T, F) x (F, U) -> (B, T, U): a dense layer
    """
    if type(axes) is not int and (isinstance(axes, bool) or not isinstance(axes, numbers.Integral)):
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
    return TensorDot.apply(a, b, *extra, n=n)
