"""Kernel for ``attention`` (reference: ``ops.attention.attention``, a composition of
einsum, softmax, dropout and einsum): the same arithmetic as one graph node.

Recorded one by one the steps make four graph nodes, each with its Python bookkeeping, and
their backward passes hand each other arrays the size of the scores. ``Attention`` does it
as one node (as PyTorch's ``scaled_dot_product_attention`` does), and its backward forms the
softmax gradient in place, one scores-sized array fewer at the peak. What it buys
(``benchmarks/bench_kernels.py``, forward plus backward, one thread): the reference
composition takes 7.3x its time at the small MultiHeadAttention size, 8.3x at the medium and
8.8x at the large one; most of that is the planner's (``contraction.py``) over the reference's
plain ``einsum``, and the fusion's own share was about a tenth of the small training step
when it was written. Dropout's multiplier comes from ``ops.nn.dropout_scale``, so both modes
draw the same mask.

When the probabilities themselves are wanted (``return_probs``) the steps are recorded
separately, on the other kernels, so gradients can flow through the returned probabilities.
"""

from __future__ import annotations

import functools

from ..ops.common import normalize_axes
from ..ops.einsum import Einsum
from ..ops.nn import Softmax, as_mask, dropout, dropout_scale
from ..tensor import Function, Tensor, is_grad_enabled
from . import register
from .contraction import _evaluate, cached_parse, contract, einsum
from .softmax import FastSoftmax, softmax_array, softmax_grad_array


class Attention(Function):
    """``einsum(combine, softmax(scale * einsum(dot, key, query)) * keep, value)`` as one node.

    ``dot`` is (key term, query term, scores term) and ``combine`` (weights term, value
    term, output term), in plain letters. ``keep`` is dropout's multiplier or None. Backward
    keeps the probabilities (and the multiplier) only; with them and the inputs:

        d weights = einsum(g, value)            d value = einsum(weights, g)
        d scores  = probs * (dw - sum(dw * probs))   where dw = keep * d weights
        d query   = scale * einsum(key, d scores)    d key = scale * einsum(query, d scores)
    """
    uses_inputs, uses_output = "all", False

    def forward(self, query, key, value, dot, combine, axes, scale, mask, keep):
        self.dot, self.combine, self.axes = dot, combine, axes
        self.scale, self.mask, self.keep = scale, mask, keep
        k_t, q_t, s_t = dot
        scores = _evaluate([key, query], (k_t, q_t), s_t, scale)
        # the scores array is ours alone: the probabilities take its memory
        self.probs = probs = softmax_array(scores, axes, mask, overwrite_x=True)
        weights = probs if keep is None else probs * keep
        return contract(combine[:2], combine[2], [weights, value])

    def backward(self, g):
        if is_grad_enabled():
            return self._recorded_backward(g)
        (k_t, q_t, s_t), (w_t, v_t, o_t) = self.dot, self.combine
        query, key, value = self.inputs
        probs, keep, g = self.probs, self.keep, g.data
        d_query = d_key = d_value = None
        if value.requires_grad:
            weights = probs if keep is None else probs * keep
            d_value = Tensor._wrap(contract((w_t, o_t), v_t, [weights, g]))
        if query.requires_grad or key.requires_grad:
            d_scores = contract((o_t, v_t), w_t, [g, value.data])  # a new array: worked on in place
            if keep is not None:
                d_scores *= keep
            softmax_grad_array(d_scores, probs, self.axes, overwrite_g=True)
            if query.requires_grad:
                d_query = Tensor._wrap(_evaluate([key.data, d_scores], (k_t, s_t), q_t, self.scale))
            if key.requires_grad:
                d_key = Tensor._wrap(_evaluate([query.data, d_scores], (q_t, s_t), k_t, self.scale))
        return d_query, d_key, d_value

    def _recorded_backward(self, g):
        """The docstring's formulas as recorded reference ops (``create_graph``), so they can
        be differentiated again. The probabilities are recomputed as a recorded function of
        query and key: the saved array has no graph, and second derivatives flow through it."""
        (k_t, q_t, s_t), (w_t, v_t, o_t) = self.dot, self.combine
        query, key, value = self.inputs
        scale = 1.0 if self.scale is None else self.scale
        scores = Einsum.apply(key, query, inputs=(k_t, q_t), output=s_t) * scale
        probs = Softmax.apply(scores, axes=self.axes, mask=self.mask)
        keep = None if self.keep is None else Tensor._wrap(self.keep)
        weights = probs if keep is None else probs * keep
        d_value = Einsum.apply(weights, g, inputs=(w_t, o_t), output=v_t)
        d_weights = Einsum.apply(g, value, inputs=(o_t, v_t), output=w_t)
        if keep is not None:
            d_weights = d_weights * keep
        d_scores = probs * (d_weights - (d_weights * probs).sum(self.axes, keepdims=True))
        d_query = Einsum.apply(key, d_scores, inputs=(k_t, s_t), output=q_t) * scale
        d_key = Einsum.apply(query, d_scores, inputs=(q_t, s_t), output=k_t) * scale
        return d_query, d_key, d_value


@functools.lru_cache(maxsize=256)
def _plan(dot_equation: str, combine_equation: str, query_shape: tuple, key_shape: tuple,
          value_shape: tuple):
    """(dot terms, combine terms, scores shape, fusable) for these equations and shapes.

    Fusable: every gradient of ``Attention`` is a plain contraction, that is no letter
    repeats within a term and each operand's letters all appear in another operand or the
    result (no diagonals, no sums inside one operand, nothing squeezed; ``Einsum`` handles
    those, and the unfused path uses it). Cached: a model asks with the same few shapes.
    """
    dot_in, dot_out, dot_squeeze, scores_shape = cached_parse(dot_equation,
                                                              (key_shape, query_shape))
    comb_in, comb_out, comb_squeeze, _ = cached_parse(combine_equation,
                                                      (scores_shape, value_shape))
    dot, combine = (*dot_in, dot_out), (*comb_in, comb_out)

    def plain(a, b, out):
        return (all(len(set(t)) == len(t) for t in (a, b, out))
                and set(a) <= set(b + out) and set(b) <= set(a + out))
    fusable = not dot_squeeze and not comb_squeeze and plain(*dot) and plain(*combine)
    return dot, combine, scores_shape, fusable


@register("attention")
def attention(query, key, value, dot_equation, combine_equation, axis, scale, mask,
              dropout_rate, seed, return_probs):
    """``ops.attention.attention`` after its argument checks: one ``Attention`` node when
    every gradient is a plain contraction, else the steps one by one on the other kernels."""
    dot, combine, scores_shape, fusable = _plan(dot_equation, combine_equation, query.shape,
                                                key.shape, value.shape)
    axes = normalize_axes(axis, len(scores_shape))
    if mask is not None:
        mask = as_mask(mask, query.xp, scores_shape, "attention: mask")
    if return_probs or not fusable:
        scores = einsum(dot_equation, [key, query], scale, None)
        # the scores are never read again: the probabilities take their memory
        probs = FastSoftmax.apply(scores, axes=axes, mask=mask, overwrite_x=True)
        weights = dropout(probs, dropout_rate, seed=seed) if dropout_rate else probs
        context = einsum(combine_equation, [weights, value], None, None)
        return (context, probs) if return_probs else context
    keep = None
    if dropout_rate:
        dtype = query.xp.result_type(key.dtype, query.dtype)  # the scores'
        keep = dropout_scale(scores_shape, dtype, dropout_rate, seed, query.device)
    return Attention.apply(query, key, value, dot=dot, combine=combine, axes=axes, scale=scale,
                           mask=mask, keep=keep)
