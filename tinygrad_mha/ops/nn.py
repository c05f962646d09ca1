"""Neural-network ops: masked, numerically stable softmax and log-softmax, and dropout."""

from __future__ import annotations

import functools
import numbers

import numpy as np

from ..backend import array_module, random_key, uniform
from ..tensor import Function, Tensor
from .common import as_tensor, check_broadcast, normalize_axes


class Softmax(Function):
    """d softmax: gx = y * (g - sum(g * y))  (masked entries have y = 0, so they get 0)"""
    uses_inputs, uses_output = "none", True

    def forward(self, x, axes, mask, overwrite_x=False):
        self.axes = axes
        return softmax_array(x, axes, mask, overwrite_x)

    def backward(self, g):
        return SoftmaxGrad.apply(g, self.output, axes=self.axes)


def softmax_array(x, axes: tuple, mask=None, overwrite_x=False):
    """The masked, stable softmax on a backend array (``Softmax`` and ``Attention`` share it)."""
    xp = array_module(x)
    # One array, shifted, exponentiated and normalised in place: at attention sizes each
    # pass over the scores costs as much as a small matmul, and each temporary a trip
    # through the allocator (this was 1.6x the time of the three-temporary version).
    # With overwrite_x that array is x itself: writing into a new array also costs reading
    # it into the cache first (a quarter of the softmax's time at the medium benchmark size).
    overwrite_x = overwrite_x and getattr(x.flags, "writeable", True)
    if mask is None:
        if overwrite_x:
            e = x
            e -= x.max(axis=axes, keepdims=True)
        else:
            e = x - x.max(axis=axes, keepdims=True)
    else:
        # Shift by the largest *kept* logit; a row with nothing kept has no such logit, so it
        # is shifted by 0, its exponentials are all exactly 0 and its sum is replaced by 1.
        if overwrite_x:
            e = x
            xp.copyto(e, x.dtype.type(-xp.inf), where=xp.logical_not(mask))
        else:
            e = xp.where(mask, x, x.dtype.type(-xp.inf))
        shift = e.max(axis=axes, keepdims=True)
        # (only -inf, "nothing kept", is replaced: a NaN logit must make its row NaN, as unmasked)
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
    """The softmax gradient z = y * (g - sum(g * y)) as one op, so that it can be fused.

    Written with four Tensor ops it made four arrays the size of the attention scores and
    took 1.5x as long. Its own gradient (for second derivatives), with upstream u:
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
            gy = u * (g - (g * y).sum(self.axes, keepdims=True)) - g * (u * y).sum(self.axes, keepdims=True)
        return gg, gy


class LogSoftmax(Function):
    """d log_softmax: gx = g - softmax(x) * sum(g)"""
    uses_inputs, uses_output = "none", True

    def forward(self, x, axes):
        self.axes = axes
        xp = array_module(x)
        shifted = x - xp.max(x, axis=axes, keepdims=True)
        return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axes, keepdims=True))

    def backward(self, g):
        return g - self.output.exp() * g.sum(self.axes, keepdims=True)


def as_mask(mask, xp, shape: tuple, name: str):
    """A boolean ``xp`` array that broadcasts to ``shape`` (True = keep)."""
    if isinstance(mask, Tensor):
        mask = mask.data
    try:
        mask = xp.asarray(mask)
    except ValueError as exc:  # a ragged nested list
        raise ValueError(f"{name} must be a rectangular boolean array: {exc}") from exc
    if mask.dtype.kind not in "biu":
        raise TypeError(f"{name} must be a boolean (or 0/1 integer) array where True means keep, "
                        f"got dtype {mask.dtype}"
                        + ("; for an additive mask add it to the logits instead" if mask.dtype.kind == "f" else ""))
    if mask.dtype != bool:
        mask = mask != 0
    check_broadcast(mask.shape, shape, name)
    return mask


def softmax(x, axis=-1, mask=None, overwrite_x=False) -> Tensor:
    """exp(x) / sum(exp(x)) over ``axis`` (an int or a tuple: one joint softmax).

    ``mask`` (bool, broadcastable to x, True = keep) gives masked entries probability exactly
    0; a slice with nothing kept becomes all zeros with zero gradient, never NaN.
    ``overwrite_x=True`` computes the result in x's memory, for a caller that will never read
    x's values again (MultiHeadAttention, with the scores it just made). Gradients are not
    affected: softmax's gradient reads its output only.
    """
    x = as_tensor(x)
    axes = normalize_axes(axis, x.ndim)
    return Softmax.apply(x, axes=axes, mask=None if mask is None else as_mask(mask, x.xp, x.shape, "mask"),
                         overwrite_x=bool(overwrite_x))


def log_softmax(x, axis=-1) -> Tensor:
    """log(softmax(x)), computed without forming softmax (finite for any finite logits)."""
    x = as_tensor(x)
    return LogSoftmax.apply(x, axes=normalize_axes(axis, x.ndim))


def dropout(x, rate, training=True, seed=None) -> Tensor:
    """Inverted dropout: zero each entry with probability ``rate``, scale the rest by 1/(1-rate).

    ``seed`` is an int (the same int gives the same mask), a host generator from
    ``backend.make_generator`` (a layer's own stream), or None (the shared host generator,
    seeded by ``tm.set_seed``). Masks are the same on cpu and cuda. The gradient is the same mask times the upstream gradient.
    """
    x = as_tensor(x)
    check_dropout_args(rate, seed, "dropout")
    if x.dtype.kind != "f":
        raise TypeError(f"dropout needs a floating point tensor, got dtype {x.dtype}")
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"dropout: training must be True or False, got training={training!r}")
    if not training or rate == 0:
        return x
    return x * Tensor._wrap(dropout_scale(x.shape, x.dtype, rate, seed, x.device))


def check_dropout_args(rate, seed, op: str) -> None:
    if seed is None and type(rate) in (float, int) and 0 <= rate < 1:
        return  # the common case, without the (slower) abstract number checks below
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0 <= rate < 1:
        raise ValueError(f"{op}: dropout rate must be a number in [0, 1), got {rate!r}")
    if isinstance(seed, bool) or not (seed is None or isinstance(seed, numbers.Integral)
                                      or hasattr(seed, "random")):
        raise TypeError(f"{op}: seed must be None, a non-negative int or a generator, got seed={seed!r}")
    if isinstance(seed, numbers.Integral) and seed < 0:
        raise ValueError(f"{op}: seed must be None, a non-negative int or a generator, got seed={seed!r}")


def dropout_scale(shape, dtype, rate: float, seed, device):
    """The multiplier dropout applies: 0 where dropped, 1/(1 - rate) where kept.

    ``seed`` as in ``dropout`` (already checked). The mask is a pure function of the stream
    key and each entry's position (``backend.uniform``), so it is the same on every device
    and whoever applies it (``dropout``, fused or blocked attention) can redraw it exactly.
    """
    keep = uniform(random_key(seed), tuple(shape), device) >= rate
    return keep.astype(dtype) * (1.0 / (1.0 - rate))
