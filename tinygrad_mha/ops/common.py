"""Small helpers every op family shares: turning operands into Tensors and checking axes."""

from __future__ import annotations

import numpy as np

from ..tensor import Tensor


def as_tensor(value, like: Tensor | None = None) -> Tensor:
    """Wrap a non-Tensor operand as a constant Tensor next to ``like``.

    Python numbers (not NumPy scalars, which are "strong") are "weak", as in NumPy 2: they
    take ``like``'s float dtype, so ``x * 0.5`` keeps a float32 tensor in float32. Arrays keep
    their own dtype and device.
    """
    if isinstance(value, Tensor):
        return value
    if type(value) in (bool, int, float) and like is not None:
        dtype = like.dtype if (like.dtype.kind == "f" and not isinstance(value, bool)) else None
        return Tensor._wrap(like.xp.asarray(value, dtype=dtype))
    if isinstance(value, np.generic) and like is not None:  # keeps its dtype, follows the device
        return Tensor._wrap(like.xp.asarray(value))
    return Tensor(value)


def same_device(*tensors: Tensor, op: str) -> None:
    # One array type per device (numpy.ndarray, cupy.ndarray): compare types before devices.
    kind = type(tensors[0].data)
    for t in tensors:
        if type(t.data) is not kind:
            break
    else:
        return
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        shown = ", ".join(f"{t.device} {t.shape}" for t in tensors)
        raise ValueError(f"{op}: all operands must be on one device, got {shown}")


def pair(a, b, op: str) -> tuple[Tensor, Tensor]:
    """Both operands of a binary op as Tensors on one device."""
    if not isinstance(a, Tensor):
        a = as_tensor(a, b if isinstance(b, Tensor) else None)
    if not isinstance(b, Tensor):
        b = as_tensor(b, a)
    if type(a.data) is not type(b.data):  # one array type per device
        same_device(a, b, op=op)
    return a, b


def apply_binary(fn, a, b, op: str) -> Tensor:
    """``fn.apply`` on both operands of an elementwise op, which must broadcast together."""
    a, b = pair(a, b, op)
    try:
        return fn.apply(a, b)
    except ValueError:
        broadcast_pair(a, b, op)  # NumPy's own message names neither the op nor, always, shapes
        raise


def normalize_axes(axis, ndim: int, name: str = "axis") -> tuple[int, ...]:
    """``axis`` (None, int or sequence, negatives allowed) as a sorted tuple of axes."""
    if axis is None:
        return tuple(range(ndim))
    if not isinstance(axis, (int, np.integer, tuple, list)):
        raise TypeError(f"{name} must be an int or a tuple of ints, got {axis!r}")
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, (int, np.integer)):
            raise TypeError(f"{name} must be an int or a tuple of ints, got {axis!r}")
        if not -ndim <= a < ndim:
            raise ValueError(f"{name} {a} is out of range for a tensor with {ndim} dimensions")
        out.append(int(a) % ndim if ndim else 0)
    if len(set(out)) != len(out):
        raise ValueError(f"{name} {axis!r} repeats an axis")
    return tuple(sorted(out))


def check_broadcast(shape, target, what: str) -> None:
    """Raise unless ``shape`` broadcasts to exactly ``target``."""
    shape, target = tuple(shape), tuple(target)
    if shape == target[len(target) - len(shape):]:  # target's trailing axes: it fits
        return
    try:
        fits = np.broadcast_shapes(tuple(shape), tuple(target)) == tuple(target)
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{what} of shape {tuple(shape)} does not broadcast to shape "
                         f"{tuple(target)}")


def broadcast_pair(a: Tensor, b: Tensor, op: str) -> None:
    """Raise the project's own error unless ``a`` and ``b`` broadcast together."""
    if a.shape == b.shape:
        return
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{op}: operands of shapes {a.shape} and {b.shape} do not broadcast "
                         "together") from None
