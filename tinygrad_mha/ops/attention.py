"""Scaled dot-product attention, composed of three ops stated elsewhere in this package:

    scores  = scale * einsum(dot_equation, key, query)
    probs   = softmax(scores, axis, mask)                 # then dropout, when training
    context = einsum(combine_equation, probs, value)

Its gradient is theirs, chained by the engine. (The fused node that does the same arithmetic
as one graph node is a kernel: ``kernels/fused_attention.py``.)
"""

from __future__ import annotations

from ..kernels import kernel_for
from .common import as_tensor, normalize_axes, same_device
from .einsum import einsum, parse
from .nn import as_mask, check_dropout_args, dropout, softmax


def attention(query, key, value, dot_equation: str, combine_equation: str, axis=-1, scale=None,
              mask=None, dropout_rate=0.0, seed=None, return_probs=False):
    """``einsum(combine_equation, dropout(softmax(scale * einsum(dot_equation, key, query),
    axis, mask)), value)``.

    ``axis`` counts in the scores (the dot product's result); ``mask`` (bool, True = attend)
    broadcasts to them, and a query with nothing to attend to gets all-zero probabilities.
    ``dropout_rate``/``seed`` are ``dropout``'s (0: none). With ``return_probs`` the result
    is ``(context, probs)``, the probabilities before dropout.

    >>> attention(q, k, v, "bshd,bthd->bhts", "bhts,bshd->bthd", scale=0.125)  # (B, T, H, D)
    """
    query, key, value = as_tensor(query), as_tensor(key), as_tensor(value)
    same_device(query, key, value, op="attention")
    for name, t in (("query", query), ("key", key), ("value", value)):
        if t.dtype.kind != "f":
            raise TypeError(f"attention: {name} must be a floating point tensor, "
                            f"got dtype {t.dtype}")
    check_dropout_args(dropout_rate, seed, "attention")
    scale = None if scale is None else float(scale)
    kernel = kernel_for("attention")
    if kernel is not None:
        return kernel(query, key, value, dot_equation, combine_equation, axis, scale, mask,
                      dropout_rate, seed, return_probs)
    scores_shape = parse(dot_equation, (key.shape, query.shape))[3]
    parse(combine_equation, (scores_shape, value.shape))  # its errors before any work
    axes = normalize_axes(axis, len(scores_shape))
    if mask is not None:
        mask = as_mask(mask, query.xp, scores_shape, "attention: mask")
    scores = einsum(dot_equation, key, query, scale=scale)
    probs = softmax(scores, axis=axes, mask=mask)
    weights = dropout(probs, dropout_rate, training=True, seed=seed) if dropout_rate else probs
    context = einsum(combine_equation, weights, value)
    return (context, probs) if return_probs else context
