"""Neural-network ops: masked, numerically stable softmax and log-softmax, and dropout."""

from __future__ import annotations

import numbers

from ..backend import array_module, generator, make_generator
from ..tensor import Function, Tensor
from .common import as_tensor, check_broadcast, normalize_axes


class Softmax(Function):
    """d softmax: gx = y * (g - sum(g * y))  (masked entries have y = 0, so they get 0)"""

    def forward(self, x, axes, mask):
        self.axes = axes
        xp = array_module(x)
        if mask is None:
            e = xp.exp(x - xp.max(x, axis=axes, keepdims=True))
            return e / xp.sum(e, axis=axes, keepdims=True)
        # Shift by the largest *kept* logit; a row with nothing kept has no such logit, so it
        # is shifted by 0, its exponentials are all exactly 0 and its sum is replaced by 1.
        masked = xp.where(mask, x, x.dtype.type(-xp.inf))
        shift = xp.max(masked, axis=axes, keepdims=True)
        shift = xp.where(xp.isfinite(shift), shift, x.dtype.type(0))
        e = xp.exp(masked - shift)
        total = xp.sum(e, axis=axes, keepdims=True)
        return e / xp.where(total == 0, x.dtype.type(1), total)

    def backward(self, g):
        y = self.output
        return y * (g - (g * y).sum(self.axes, keepdims=True))


class LogSoftmax(Function):
    """d log_softmax: gx = g - softmax(x) * sum(g)"""

    def forward(self, x, axes):
        self.axes = axes
        xp = array_module(x)
        shifted = x - xp.max(x, axis=axes, keepdims=True)
        return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axes, keepdims=True))

    def backward(self, g):
        return g - self.output.exp() * g.sum(self.axes, keepdims=True)


def _as_mask(mask, x: Tensor, name: str):
    """A boolean backend array that broadcasts to ``x`` (True = keep)."""
    if isinstance(mask, Tensor):
        mask = mask.data
    mask = x.xp.asarray(mask)
    if mask.dtype.kind == "f":
        raise TypeError(f"{name} must be a boolean (or 0/1 integer) array where True means keep, "
                        f"got dtype {mask.dtype}; for an additive mask add it to the logits instead")
    if mask.dtype != bool:
        mask = mask != 0
    check_broadcast(mask.shape, x.shape, name)
    return mask


def softmax(x, axis=-1, mask=None) -> Tensor:
    """exp(x) / sum(exp(x)) over ``axis`` (an int or a tuple: one joint softmax).

    ``mask`` (bool, broadcastable to x, True = keep) gives masked entries probability exactly
    0; a slice with nothing kept becomes all zeros with zero gradient, never NaN.
    """
    x = as_tensor(x)
    axes = normalize_axes(axis, x.ndim)
    return Softmax.apply(x, axes=axes, mask=None if mask is None else _as_mask(mask, x, "mask"))


def log_softmax(x, axis=-1) -> Tensor:
    """log(softmax(x)), computed without forming softmax (finite for any finite logits)."""
    x = as_tensor(x)
    return LogSoftmax.apply(x, axes=normalize_axes(axis, x.ndim))


def dropout(x, rate, training=True, seed=None) -> Tensor:
    """Inverted dropout: zero each entry with probability ``rate``, scale the rest by 1/(1-rate).

    ``seed`` is an int (the same int gives the same mask), a generator from
    ``backend.make_generator`` (a layer's own stream), or None (the device's shared generator,
    seeded by ``tm.set_seed``). The gradient is the same mask times the upstream gradient.
    """
    x = as_tensor(x)
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0 <= rate < 1:
        raise ValueError(f"dropout rate must be a number in [0, 1), got {rate!r}")
    if x.dtype.kind != "f":
        raise TypeError(f"dropout needs a floating point tensor, got dtype {x.dtype}")
    if not training or rate == 0:
        return x
    if seed is None:
        rng = generator(x.device)
    elif isinstance(seed, numbers.Integral):
        rng = make_generator(int(seed), x.device)
    else:
        rng = seed
    keep = rng.random(x.shape, dtype="float32") >= rate
    scale = keep.astype(x.dtype) * (1.0 / (1.0 - rate))
    return x * Tensor._wrap(scale)
