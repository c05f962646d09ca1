"""Neural-network ops: masked, numerically stable softmax and log-softmax, and dropout."""

from __future__ import annotations

import numbers

import numpy as np

from ..backend import array_module, random_key, uniform
from ..kernels import kernel_for
from ..tensor import Function, Tensor
from .common import as_tensor, check_broadcast, normalize_axes


class Softmax(Function):
    """d softmax: gx = y * (g - sum(g * y))  (masked entries have y = 0, so they get 0)"""
    uses_inputs, uses_output = "none", True

    def forward(self, x, axes, mask):
        self.axes = axes
        xp = array_module(x)
        if x.size == 0:  # nothing to normalise (a max over no entries has no identity)
            return xp.zeros_like(x)
        if mask is None:
            e = xp.exp(x - x.max(axis=axes, keepdims=True))  # shifted: exp never overflows
            return e / e.sum(axis=axes, keepdims=True)
        # Shift by the largest *kept* logit; a row with nothing kept has none, so it is
        # shifted by 0, its exponentials are all exactly 0 and its sum is replaced by 1.
        logits = xp.where(mask, x, x.dtype.type(-xp.inf))
        shift = logits.max(axis=axes, keepdims=True)
        e = xp.exp(logits - xp.where(shift == -xp.inf, x.dtype.type(0), shift))
        total = e.sum(axis=axes, keepdims=True)
        return e / xp.where(total == 0, x.dtype.type(1), total)

    def backward(self, g):
        y = self.output
        return y * (g - (g * y).sum(self.axes, keepdims=True))


class LogSoftmax(Function):
    """d log_softmax: gx = g - softmax(x) * sum(g)"""
    uses_inputs, uses_output = "none", True

    def forward(self, x, axes):
        self.axes = axes
        xp = array_module(x)
        if x.size == 0:
            return xp.zeros_like(x)
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
        hint = "; for an additive mask add it to the logits instead" * (mask.dtype.kind == "f")
        raise TypeError(f"{name} must be a boolean (or 0/1 integer) array where True means keep, "
                        f"got dtype {mask.dtype}{hint}")
    if mask.dtype != bool:
        mask = mask != 0
    check_broadcast(mask.shape, shape, name)
    return mask


def softmax(x, axis=-1, mask=None) -> Tensor:
    """exp(x) / sum(exp(x)) over ``axis`` (an int or a tuple: one joint softmax).

    ``mask`` (bool, broadcastable to x, True = keep) gives masked entries probability exactly
    0; a slice with nothing kept becomes all zeros with zero gradient, never NaN.
    """
    x = as_tensor(x)
    axes = normalize_axes(axis, x.ndim)
    mask = None if mask is None else as_mask(mask, x.xp, x.shape, "mask")
    kernel = kernel_for("softmax")
    if kernel is not None:
        return kernel(x, axes, mask)
    return Softmax.apply(x, axes=axes, mask=mask)


def log_softmax(x, axis=-1) -> Tensor:
    """log(softmax(x)), computed without forming softmax (finite for any finite logits)."""
    x = as_tensor(x)
    return LogSoftmax.apply(x, axes=normalize_axes(axis, x.ndim))


def dropout(x, rate, training=True, seed=None) -> Tensor:
    """Inverted dropout: zero each entry with probability ``rate``, scale the rest by 1/(1-rate).

    ``seed`` is an int (the same int gives the same mask), a host generator from
    ``backend.make_generator`` (a layer's own stream), or None (the shared host generator,
    seeded by ``tm.set_seed``). Masks are the same on cpu and cuda. The gradient is the same mask
    times the upstream gradient.
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
        return  # the common case: nothing more to check
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0 <= rate < 1:
        raise ValueError(f"{op}: dropout rate must be a number in [0, 1), got {rate!r}")
    if isinstance(seed, bool) or not (seed is None or isinstance(seed, numbers.Integral)
                                      or hasattr(seed, "random")):
        raise TypeError(f"{op}: seed must be None, a non-negative int or a generator, "
                        f"got seed={seed!r}")
    if isinstance(seed, numbers.Integral) and seed < 0:
        raise ValueError(f"{op}: seed must be None, a non-negative int or a generator, "
                         f"got seed={seed!r}")


def dropout_scale(shape, dtype, rate: float, seed, device):
    """The multiplier dropout applies: 0 where dropped, 1/(1 - rate) where kept.

    ``seed`` as in ``dropout`` (already checked). The mask is a pure function of the stream
    key and each entry's position (``backend.uniform``), so it is the same on every device
    and whoever applies it (``dropout``, fused or blocked attention) can redraw it exactly.
    """
    return keep_multiplier(uniform(random_key(seed), tuple(shape), device), rate, dtype)


def keep_multiplier(uniforms, rate: float, dtype):
    """1/(1 - rate) where a uniform draw is >= rate, else 0: the one rule that turns draws
    into dropout's mask, shared by the dense path and the blocked kernel's per-block redraw."""
    dtype = np.dtype(dtype)
    return (uniforms >= rate).astype(dtype) * dtype.type(1.0 / (1.0 - rate))
