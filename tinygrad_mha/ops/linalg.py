"""Matrix multiplication with NumPy's ``matmul`` semantics (1-D operands, batch broadcasting)."""

from __future__ import annotations

from ..backend import array_module
from ..tensor import Function
from .common import pair


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
