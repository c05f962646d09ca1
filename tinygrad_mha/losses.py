"""Two training losses, each a scalar Tensor built from differentiable Tensor ops."""

from __future__ import annotations

from .ops import log_softmax
from .ops.common import as_tensor, normalize_axes
from .tensor import Tensor


def mean_squared_error(y_true, y_pred) -> Tensor:
    """mean((y_pred - y_true)**2) over every element (Keras's MSE with its default mean
    reduction)."""
    y_pred = as_tensor(y_pred)
    y_true = _on_device(y_true, y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"mean_squared_error: y_true has shape {y_true.shape} but y_pred has "
                         f"shape {y_pred.shape}")
    diff = y_pred - y_true
    return (diff * diff).mean()


def softmax_cross_entropy(logits, labels, axis=-1) -> Tensor:
    """-mean(sum(labels * log_softmax(logits), axis)): the mean cross-entropy per example.

    ``labels`` are either integer class indices (the logits' shape without ``axis``) or
    probabilities / one-hot vectors of the logits' shape. log_softmax keeps it finite for
    any finite logits.
    """
    logits = as_tensor(logits)
    (axis,) = normalize_axes(axis, logits.ndim)
    labels = _on_device(labels, logits)
    classes = logits.shape[axis]
    if labels.dtype.kind in "iu":
        expected = logits.shape[:axis] + logits.shape[axis + 1:]
        if labels.shape != expected:
            raise ValueError(f"softmax_cross_entropy: integer labels must have shape {expected} "
                             f"(the logits' shape {logits.shape} without axis {axis}), "
                             f"got {labels.shape}")
        xp = labels.xp
        if labels.size and (int(labels.data.min()) < 0 or int(labels.data.max()) >= classes):
            low, high = int(labels.data.min()), int(labels.data.max())
            raise ValueError(f"softmax_cross_entropy: labels must be class indices in "
                             f"[0, {classes}), got values from {low} to {high}")
        class_ids = xp.arange(classes).reshape((classes,) + (1,) * (logits.ndim - 1 - axis))
        one_hot = xp.expand_dims(labels.data, axis) == class_ids
        labels = Tensor._wrap(one_hot.astype(logits.dtype))
    elif labels.shape != logits.shape:
        raise ValueError(f"softmax_cross_entropy: one-hot or probability labels must have the "
                         f"logits' shape {logits.shape}, got {labels.shape}")
    return -(labels * log_softmax(logits, axis=axis)).sum(axis).mean()


def _on_device(value, like: Tensor) -> Tensor:
    """``value`` as a Tensor on ``like``'s device; plain float arrays also take its dtype."""
    if isinstance(value, Tensor):
        return value if value.device == like.device else value.to(like.device)
    value = Tensor(value, device=like.device)
    if value.dtype.kind == "f" and like.dtype.kind == "f" and value.dtype != like.dtype:
        value = Tensor._wrap(value.data.astype(like.dtype))
    return value
