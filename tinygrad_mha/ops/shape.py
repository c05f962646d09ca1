"""Ops that move data around without arithmetic: reshapes, transposes, indexing, joining.

Each gradient is the inverse movement: reshape back, transpose by the inverse permutation,
scatter an indexed gradient back into zeros, split a concatenated gradient.
"""

from __future__ import annotations

import math

import numpy as np

from ..backend import (array_module, check_index, is_cupy_array, scatter_add,
                       to_device)
from ..tensor import Function, Tensor
from .common import as_tensor, normalize_axes, same_device


class Reshape(Function):
    """Gradient: reshape back."""
    uses_inputs, uses_output = "none", False

    def forward(self, a, shape):
        return a.reshape(shape)

    def backward(self, g):
        return g.reshape(self.inputs[0].shape)


class Transpose(Function):
    """Gradient: transpose by the inverse permutation."""
    uses_inputs, uses_output = "none", False

    def forward(self, a, axes):
        self.axes = axes
        return a.transpose(axes)

    def backward(self, g):
        return g.transpose(tuple(np.argsort(self.axes)))


class BroadcastTo(Function):
    """Gradient: sum over the broadcast axes (``sum_to``)."""
    uses_inputs, uses_output = "none", False

    def forward(self, a, shape):
        return array_module(a).broadcast_to(a, shape)

    def backward(self, g):
        from .reduce import sum_to
        return sum_to(g, self.inputs[0].shape)


class GetItem(Function):
    """Gradient: zeros of the input's shape with ``g`` added at the indexed places."""
    uses_inputs, uses_output = "none", False

    def forward(self, a, index):
        self.index = index
        return a[index]

    def backward(self, g):
        return ScatterAdd.apply(g, shape=self.inputs[0].shape, index=self.index)


class ScatterAdd(Function):
    """zeros(shape) with ``a`` added at ``index`` (repeated indices add up); adjoint of getitem."""
    uses_inputs, uses_output = "none", False

    def forward(self, a, shape, index):
        self.index = index
        out = array_module(a).zeros(shape, dtype=a.dtype)
        scatter_add(out, index, a)
        return out

    def backward(self, g):
        return g[self.index]


class Concatenate(Function):
    """Gradient: the slice of ``g`` that each input occupied."""
    uses_inputs, uses_output = "none", False

    def forward(self, *arrays, axis):
        self.axis = axis
        return array_module(arrays[0]).concatenate(arrays, axis=axis)

    def backward(self, g):
        grads, start = [], 0
        for t in self.inputs:
            stop = start + t.shape[self.axis]
            index = (slice(None),) * self.axis + (slice(start, stop),)
            grads.append(g[index] if t.requires_grad else None)
            start = stop
        return tuple(grads)


class Stack(Function):
    """Gradient: each input's slice of ``g`` along the new axis (views, no copies)."""
    uses_inputs, uses_output = "none", False

    def forward(self, *arrays, axis):
        self.axis = axis
        return array_module(arrays[0]).stack(arrays, axis=axis)

    def backward(self, g):
        return tuple(g[(slice(None),) * self.axis + (i,)] if t.requires_grad else None
                     for i, t in enumerate(self.inputs))


# ---------------------------------------------------------------- functional forms
def reshape(a, *shape):
    a = as_tensor(a)
    if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
        shape = tuple(shape[0])
    target = _reshape_target(a.shape, shape)
    return a if target == a.shape else Reshape.apply(a, shape=target)


def _reshape_target(shape, new):
    """Resolve a -1 in ``new`` and check the element count, with a message naming both shapes."""
    new = tuple(int(n) for n in new)
    size = math.prod(shape)
    if new.count(-1) > 1 or any(n < -1 for n in new):
        raise ValueError(f"cannot reshape tensor of shape {shape} into {new}: bad dimension")
    if -1 in new:
        rest = math.prod(n for n in new if n != -1)
        if rest == 0 or size % rest:
            raise ValueError(f"cannot reshape tensor of shape {shape} (size {size}) into {new}")
        new = tuple(size // rest if n == -1 else n for n in new)
    if math.prod(new) != size:
        raise ValueError(f"cannot reshape tensor of shape {shape} (size {size}) into {new}")
    return new


def transpose(a, *axes):
    a = as_tensor(a)
    if len(axes) == 1 and (axes[0] is None or not isinstance(axes[0], (int, np.integer))):
        axes = axes[0]
    if axes is None or axes == ():
        axes = tuple(range(a.ndim))[::-1]
    axes = tuple(axes)
    if any(isinstance(x, bool) or not isinstance(x, (int, np.integer)) or not -a.ndim <= x < a.ndim
           for x in axes):
        raise ValueError(f"transpose axes {axes} are not a permutation of the {a.ndim} "
                         f"axes of shape {a.shape}")
    axes = tuple(int(x) % a.ndim for x in axes)
    if sorted(axes) != list(range(a.ndim)):
        raise ValueError(f"transpose axes {axes} are not a permutation of the {a.ndim} "
                         f"axes of shape {a.shape}")
    return a if axes == tuple(range(a.ndim)) else Transpose.apply(a, axes=axes)


def swapaxes(a, axis1, axis2):
    a = as_tensor(a)
    i, j = (normalize_axes(ax, a.ndim)[0] for ax in (axis1, axis2))
    axes = list(range(a.ndim))
    axes[i], axes[j] = axes[j], axes[i]
    return transpose(a, tuple(axes))


def expand_dims(a, axis):
    a = as_tensor(a)
    axes = normalize_axes(axis, a.ndim + len(axis if isinstance(axis, (tuple, list)) else (axis,)))
    shape = iter(a.shape)
    return reshape(a, tuple(1 if i in axes else next(shape) for i in range(a.ndim + len(axes))))


def squeeze(a, axis=None):
    a = as_tensor(a)
    if axis is None:
        axes = tuple(i for i, n in enumerate(a.shape) if n == 1)
    else:
        axes = normalize_axes(axis, a.ndim)
        for i in axes:
            if a.shape[i] != 1:
                raise ValueError(f"cannot squeeze axis {i} of shape {a.shape}: its size is not 1")
    return reshape(a, tuple(n for i, n in enumerate(a.shape) if i not in axes))


def broadcast_to(a, shape):
    a = as_tensor(a)
    shape = tuple(int(n) for n in shape)
    try:
        ok = np.broadcast_shapes(a.shape, shape) == shape
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"cannot broadcast tensor of shape {a.shape} to shape {shape}")
    return a if a.shape == shape else BroadcastTo.apply(a, shape=shape)


def _index_part(part, xp):
    """One component of an index, with Tensors and lists turned into backend arrays."""
    if isinstance(part, Tensor):
        part = part.data
    elif isinstance(part, list):
        part = np.asarray(part)
    if isinstance(part, np.ndarray) or is_cupy_array(part):
        if part.dtype.kind not in "iub":
            raise IndexError(f"index arrays must be integer or bool, got dtype {part.dtype}")
        part = to_device(part, "cuda" if xp is not np else "cpu")
    return part


def getitem(a, index):
    """NumPy basic and advanced (integer/bool array) indexing."""
    a = as_tensor(a)
    parts = index if isinstance(index, tuple) else (index,)
    parts = tuple(_index_part(p, a.xp) for p in parts)
    index = parts if isinstance(index, tuple) else parts[0]
    check_index(index, a.shape)  # CuPy would wrap an out-of-range index silently
    return GetItem.apply(a, index=index)


def concatenate(tensors, axis=0):
    tensors = [as_tensor(t) for t in tensors]
    if not tensors:
        raise ValueError("concatenate needs at least one tensor")
    same_device(*tensors, op="concatenate")
    first = tensors[0]
    if first.ndim == 0:
        raise ValueError("concatenate cannot join 0-d tensors; use stack")
    axis = normalize_axes(axis, first.ndim)[0]
    for i, t in enumerate(tensors):
        if t.ndim != first.ndim or any(t.shape[d] != first.shape[d]
                                       for d in range(t.ndim) if d != axis):
            raise ValueError(f"concatenate: tensor {i} has shape {t.shape}, which does not match "
                             f"{first.shape} outside axis {axis}")
    return Concatenate.apply(*tensors, axis=axis)


def stack(tensors, axis=0):
    tensors = [as_tensor(t) for t in tensors]
    if not tensors:
        raise ValueError("stack needs at least one tensor")
    for i, t in enumerate(tensors):
        if t.shape != tensors[0].shape:
            raise ValueError(f"stack: tensor {i} has shape {t.shape}, expected {tensors[0].shape}")
    same_device(*tensors, op="stack")
    axis = normalize_axes(axis, tensors[0].ndim + 1)[0]
    return Stack.apply(*tensors, axis=axis)
