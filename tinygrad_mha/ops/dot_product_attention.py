"""``dot_product_attention``: keras.ops.dot_product_attention's names and (B, T, N, H) layout.

The reference is the readable composition of this package's ops (what the tutorials teach):

    scores = einsum("btnh,bsnh->bnts", query, key, scale=scale) + bias
    probs  = softmax(scores, axis=-1, mask=mask & causal band)
    out    = einsum("bnts,bsnh->btnh", probs, value)

With ``flash_attention`` (and kernels enabled) the blocked kernel of
``kernels/blocked_attention.py`` computes the same numbers without ever forming the
(B, N, T, S) scores. Under ``tm.use_kernels(False)`` the reference always runs, even with
``flash_attention=True`` (which still refuses nothing here: this function never returns
probabilities).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..tensor import Tensor
from .common import as_tensor, same_device
from .einsum import einsum
from .nn import as_mask, softmax


def _check(query, key, value, bias, mask, scale, is_causal, flash_attention):
    for name, t in (("query", query), ("key", key), ("value", value)):
        if t.ndim != 4:
            raise ValueError(f"dot_product_attention: {name} must have rank 4 (batch, positions, "
                             f"heads, features), got shape {t.shape}")
        if t.dtype.kind != "f":
            raise TypeError(f"dot_product_attention: {name} must be a floating point tensor, got "
                            f"dtype {t.dtype}")
    same_device(query, key, value, op="dot_product_attention")
    if not query.dtype == key.dtype == value.dtype:
        raise TypeError("dot_product_attention: query, key and value must have one dtype, got "
                        f"{query.dtype}, {key.dtype} and {value.dtype}")
    (b, t, n, h), (bk, s, nk, hk), (bv, sv, nv, _) = query.shape, key.shape, value.shape
    if not (b == bk == bv and n == nk == nv and s == sv and h == hk):
        raise ValueError("dot_product_attention: expected query (B, T, N, H), key (B, S, N, H) "
                         f"and value (B, S, N, Hv), got shapes {query.shape}, {key.shape} and "
                         f"{value.shape}")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, numbers.Real)):
        raise TypeError("dot_product_attention: scale must be a number or None, got "
                        f"scale={scale!r}")
    if not isinstance(is_causal, (bool, np.bool_)):
        raise TypeError("dot_product_attention: is_causal must be a bool, got "
                        f"is_causal={is_causal!r}")
    if flash_attention is not None and not isinstance(flash_attention, (bool, np.bool_)):
        raise TypeError("dot_product_attention: flash_attention must be None, True or False, "
                        f"got flash_attention={flash_attention!r}")
    scores_shape = (b, n, t, s)
    if bias is not None:
        if bias.dtype.kind != "f":
            raise TypeError("dot_product_attention: bias must be floating point, got dtype "
                            f"{bias.dtype}")
        try:
            fits = bias.ndim <= 4 and np.broadcast_shapes(bias.shape, scores_shape) == scores_shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(f"dot_product_attention: bias of shape {bias.shape} does not "
                             f"broadcast to the scores (B, N, T, S) = {scores_shape}")
    if mask is not None:
        mask = as_mask(mask, query.xp, scores_shape, "dot_product_attention: mask (B, N, T, S)")
    return scores_shape, mask


def dot_product_attention(query, key, value, bias=None, mask=None, scale=None, is_causal=False,
                          flash_attention=None) -> Tensor:
    """softmax(query . key * scale + bias, masked) . value, in the (B, T, N, H) layout.

    ``mask``: bool, broadcastable to (B, N, T, S), True = attend. ``is_causal``: query t sees
    keys s <= t (top-left aligned when T != S). A query row with no key left gives zeros.
    ``scale`` defaults to 1/sqrt(H). Differentiable in query, key, value and bias, in the
    inputs' dtype. ``flash_attention``: None = the blocked kernel when T * S is at least
    ``kernels.blocked_attention.AUTO_MIN_SCORES`` (where it measured faster), True = always,
    False = never; with ``tm.use_kernels(False)`` the dense reference always runs.
    """
    query, key, value = as_tensor(query), as_tensor(key), as_tensor(value)
    bias = None if bias is None else as_tensor(bias, like=query)
    scores_shape, mask = _check(query, key, value, bias, mask, scale, is_causal, flash_attention)
    if bias is not None:
        same_device(query, bias, op="dot_product_attention")
        bias = bias.astype(query.dtype)  # the result stays in the inputs' dtype on both paths
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else float(scale)
    b, n, t, s = scores_shape

    from ..kernels import kernels_enabled
    from ..kernels.blocked_attention import AUTO_MIN_SCORES, blocked_attention
    if (kernels_enabled() and flash_attention is not False
            and (flash_attention or t * s >= AUTO_MIN_SCORES)):
        masks = () if mask is None else (mask,)
        biases = () if bias is None else (bias,)
        perm = (0, 2, 1, 3)
        return blocked_attention(query, key, value, (perm, perm, perm, (b, n), (t,), (s,)),
                                 scale=scale, biases=biases, masks=masks, causal=is_causal)

    # the reference composition
    scores = einsum("btnh,bsnh->bnts", query, key, scale=scale)
    if bias is not None:
        scores = scores + bias
    if is_causal:
        xp = query.xp
        band = xp.arange(t)[:, None] >= xp.arange(s)[None, :]
        mask = band if mask is None else mask & band
    probs = softmax(scores, axis=-1, mask=mask)
    return einsum("bnts,bsnh->btnh", probs, value)
