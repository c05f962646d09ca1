"""Elementwise arithmetic and activations. Each ``backward`` states its derivative in one line.

Broadcasting is NumPy's; the engine sums each gradient back to its input's shape, so the
formulas below read as if both operands had the same shape.
"""

from __future__ import annotations

import numpy as np

from ..backend import array_module, to_device
from ..tensor import Function, Tensor
from .common import apply_binary, as_tensor, pair


class Add(Function):
    """d(a+b) = da + db"""
    uses_inputs, uses_output = "none", False

    def forward(self, a, b):
        return a + b

    def backward(self, g):
        return g, g


class Sub(Function):
    """d(a-b) = da - db"""
    uses_inputs, uses_output = "none", False

    def forward(self, a, b):
        return a - b

    def backward(self, g):
        return g, -g


class Mul(Function):
    """d(ab) = b da + a db"""
    uses_inputs, uses_output = "others", False

    def forward(self, a, b):
        return a * b

    def backward(self, g):
        a, b = self.inputs
        return (g * b if a.requires_grad else None), (g * a if b.requires_grad else None)


class Div(Function):
    """d(a/b) = da/b - a db/b^2"""
    uses_output = False

    def forward(self, a, b):
        return a / b

    def backward(self, g):
        a, b = self.inputs
        ga = g / b if a.requires_grad else None
        gb = -g * a / (b * b) if b.requires_grad else None
        return ga, gb


class Pow(Function):
    """d(a^b) = b a^(b-1) da + a^b log(a) db  (taken as 0 where b = 0, resp. a^b = 0)"""

    def forward(self, a, b):
        return a ** b

    def backward(self, g):
        a, b = self.inputs
        ga = gb = None
        if a.requires_grad:  # b = 0: 0, also at a = 0 (where a^(b-1) = inf): use a^1 there
            ga = g * b * a ** where(b.data == 0, 1.0, b - 1)
        if b.requires_grad:  # a = 0, b >= 0: a^b is 0 or 1 near b; log(1) avoids 0 * -inf
            gb = g * self.output * where((a.data == 0) & (b.data >= 0), 1.0, a).log()
        return ga, gb


class Neg(Function):
    """d(-a) = -da"""
    uses_inputs, uses_output = "none", False

    def forward(self, a):
        return -a

    def backward(self, g):
        return -g


class Abs(Function):
    """d|a| = sign(a) da  (0 at a = 0, as NumPy's sign and PyTorch)"""
    uses_output = False

    def forward(self, a):
        return array_module(a).abs(a)

    def backward(self, g):
        a = self.inputs[0].data
        return g * Tensor._wrap(array_module(a).sign(a))


class Exp(Function):
    """d exp(a) = exp(a) da"""
    uses_inputs, uses_output = "none", True

    def forward(self, a):
        return array_module(a).exp(a)

    def backward(self, g):
        return g * self.output


class Log(Function):
    """d log(a) = da / a"""
    uses_output = False

    def forward(self, a):
        return array_module(a).log(a)

    def backward(self, g):
        return g / self.inputs[0]


class Sqrt(Function):
    """d sqrt(a) = da / (2 sqrt(a))"""
    uses_inputs, uses_output = "none", True

    def forward(self, a):
        return array_module(a).sqrt(a)

    def backward(self, g):
        return g / (2 * self.output)


class Tanh(Function):
    """d tanh(a) = (1 - tanh(a)^2) da"""
    uses_inputs, uses_output = "none", True

    def forward(self, a):
        return array_module(a).tanh(a)

    def backward(self, g):
        y = self.output
        return g * (1 - y * y)


class Sigmoid(Function):
    """d s(a) = s(a) (1 - s(a)) da"""
    uses_inputs, uses_output = "none", True

    def forward(self, a):
        xp = array_module(a)
        # exp(-log(1 + exp(-a))) never overflows and keeps relative precision at both tails.
        # (logaddexp flags a NaN input as "invalid"; a NaN in is a NaN out, as in NumPy, silently)
        with np.errstate(invalid="ignore"):
            return xp.exp(-xp.logaddexp(a.dtype.type(0), -a))

    def backward(self, g):
        y = self.output
        return g * (y * (1 - y))


class Relu(Function):
    """d relu(a) = [a > 0] da"""
    uses_output = False

    def forward(self, a):
        return array_module(a).maximum(a, a.dtype.type(0))

    def backward(self, g):
        a = self.inputs[0].data
        return g * Tensor._wrap((a > 0).astype(a.dtype))


class Where(Function):
    """d where(c, a, b) = where(c, da, 0) + where(c, 0, db); the condition is constant."""
    uses_inputs, uses_output = "none", False

    def forward(self, a, b, cond):
        self.cond = cond
        return array_module(a).where(cond, a, b)

    def backward(self, g):
        zero = Tensor._wrap(g.xp.zeros((), dtype=g.dtype))
        a, b = self.inputs
        ga = where(self.cond, g, zero) if a.requires_grad else None
        gb = where(self.cond, zero, g) if b.requires_grad else None
        return ga, gb


class Cast(Function):
    """A dtype change; the gradient is cast back to the input's dtype."""
    uses_inputs, uses_output = "none", False

    def forward(self, a, dtype):
        return a.astype(dtype)

    def backward(self, g):
        return g.astype(self.inputs[0].dtype)


class ToDevice(Function):
    """A device move; the gradient moves back."""
    uses_inputs, uses_output = "none", False

    def forward(self, a, device):
        return to_device(a, device)

    def backward(self, g):
        return g.to(self.inputs[0].device)


# ---------------------------------------------------------------- functional forms
def add(a, b):
    return apply_binary(Add, a, b, "add")


def sub(a, b):
    return apply_binary(Sub, a, b, "sub")


def mul(a, b):
    return apply_binary(Mul, a, b, "mul")


def div(a, b):
    return apply_binary(Div, a, b, "div")


def pow(a, b):  # noqa: A001 - mirrors the operator's name
    return apply_binary(Pow, a, b, "pow")


def neg(a):
    return Neg.apply(as_tensor(a))


def abs(a):  # noqa: A001
    return Abs.apply(as_tensor(a))


def exp(a):
    return Exp.apply(as_tensor(a))


def log(a):
    return Log.apply(as_tensor(a))


def sqrt(a):
    return Sqrt.apply(as_tensor(a))


def tanh(a):
    return Tanh.apply(as_tensor(a))


def sigmoid(a):
    return Sigmoid.apply(as_tensor(a))


def relu(a):
    return Relu.apply(as_tensor(a))


def where(cond, a, b):
    """Elementwise ``a if cond else b`` with NumPy broadcasting; ``cond`` is not differentiated."""
    a, b = pair(a, b, "where")
    cond = cond.data if isinstance(cond, Tensor) else a.xp.asarray(cond)
    if cond.dtype.kind not in "biuf":
        raise TypeError(f"where: cond must be a boolean (or numeric) array, got dtype {cond.dtype}")
    if cond.dtype != bool:
        cond = cond != 0
    try:
        np.broadcast_shapes(cond.shape, a.shape, b.shape)
    except ValueError:
        raise ValueError(f"where: cond of shape {cond.shape}, a of shape {a.shape} and b of shape "
                         f"{b.shape} do not broadcast together") from None
    return Where.apply(a, b, cond=cond)


def compare(op: str, a, b) -> Tensor:
    """A comparison: a boolean Tensor outside the graph (comparisons have no gradient)."""
    a, b = pair(a, b, op)
    fn = {"lt": a.xp.less, "le": a.xp.less_equal, "gt": a.xp.greater, "ge": a.xp.greater_equal,
          "eq": a.xp.equal, "ne": a.xp.not_equal}[op]
    return Tensor._wrap(fn(a.data, b.data))
