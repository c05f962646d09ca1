"""Small helpers every op family shares: turning operands into Tensors and checking axes."""

from __future__ import annotations

import functools

import numpy as np

from ..backend import array_module
from ..tensor import Tensor


def as_tensor(value, like: Tensor | None = None) -> Tensor:
    """Wrap a non-Tensor operand as a constant Tensor next to ``like``.

    Python numbers (not NumPy scalars, which are "strong") are "weak", as in NumPy 2: they take ``like``'s float dtype, so
    ``x * 0.5`` keeps a float32 tensor in float32. Arrays keep their own dtype and device.
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
    # One array type per device (numpy.ndarray, cupy.ndarray): comparing types is the fast check.
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
    if type(a.data) is not type(b.data):  # one array type per device: the cheap test first
        same_device(a, b, op=op)
    return a, b


def normalize_axes(axis, ndim: int, name: str = "axis") -> tuple[int, ...]:
    """``axis`` (None, int or sequence, negatives allowed) as a sorted tuple of axes."""
    if type(axis) is int or (type(axis) is tuple and all(type(a) is int for a in axis)):
        return _normalize_axes(axis, ndim, name)  # from a cache: every softmax and sum asks
    return _normalize_axes.__wrapped__(axis, ndim, name)


@functools.lru_cache(maxsize=1024)
def _normalize_axes(axis, ndim: int, name: str) -> tuple[int, ...]:
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
    if not _broadcasts_to(tuple(shape), tuple(target)):
        raise ValueError(f"{what} of shape {tuple(shape)} does not broadcast to shape {tuple(target)}")


@functools.lru_cache(maxsize=4096)
def _broadcasts_to(shape: tuple, target: tuple) -> bool:
    # cached: np.broadcast_shapes costs as much as a small op, and a model repeats its shapes
    try:
        return np.broadcast_shapes(shape, target) == target
    except ValueError:
        return False


def in_place(out, operands, op, value):
    """``op(out, value)``, written into ``out`` when it is a new array whose dtype the result
    keeps: one pass over memory and no new array, as ``y = x @ w; y += b``. (A product of two
    or more ``operands`` is always a new array; one operand may give a view of itself, such as
    a transpose or a diagonal.) Einsum's scale and bias and TensorDot's bias use it."""
    xp = array_module(out)
    if ((getattr(value, "dtype", None) == out.dtype or xp.result_type(out, value) == out.dtype)
            and (len(operands) > 1 or not xp.may_share_memory(out, operands[0]))):
        return op(out, value, out=out)
    return op(out, value)
