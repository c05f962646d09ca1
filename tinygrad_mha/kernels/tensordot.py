"""Kernel for ``tensordot`` with a bias (reference: ``ops.linalg.tensordot``, an einsum
plus a bias add): one graph node that is one matrix product on reshaped views.

Every projection of a dense or attention layer has this form. The node skips the einsum
parsing, adds the bias in place, sums a per-feature bias gradient itself (one column sum
instead of the engine's broadcast reduction: the one place a gradient is reduced outside the
engine), and when nothing records, its backward multiplies plain arrays. What it buys
(``benchmarks/bench_kernels.py``, forward plus backward of a query projection, one thread):
the reference takes 3.7x its time at the small MultiHeadAttention size, 5.5x at the medium
and 6.3x at the large one.
"""

from __future__ import annotations

import math

from ..backend import array_module
from ..tensor import Function, Tensor, is_grad_enabled
from . import register
from .contraction import in_place


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


@register("tensordot")
def tensordot(a, b, *bias, n):
    """``ops.tensordot`` after its argument checks, as one ``TensorDot`` node."""
    return TensorDot.apply(a, b, *bias, n=n)
