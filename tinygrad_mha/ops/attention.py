"""Scaled dot-product attention as one differentiable node.

Attention is three steps, each an op of its own elsewhere in this package:

    scores  = scale * einsum(dot_equation, key, query)
    probs   = softmax(scores, axis, mask)                 # then dropout, when training
    context = einsum(combine_equation, probs, value)

Recorded one by one they make four graph nodes, each with its Python bookkeeping, and their
backward passes hand each other arrays the size of the scores. ``Attention`` does the same
arithmetic as one node (as PyTorch's ``scaled_dot_product_attention`` does): at the small
benchmark size that took about a tenth off a MultiHeadAttention training step, and its
backward forms the softmax gradient in place, one scores-sized array fewer at the peak.

When the probabilities themselves are wanted (``return_probs``, as for Keras'
``return_attention_scores``) the steps are recorded separately instead, so that gradients can
flow through the returned probabilities too. Both paths give the same numbers; the tests
check each against the other and against finite differences.
"""

from __future__ import annotations

import functools

from ..tensor import Function, Tensor, is_grad_enabled
from .common import as_tensor, normalize_axes, same_device
from .einsum import Einsum, _evaluate, contract, einsum, parse
from .nn import (Softmax, SoftmaxGrad, as_mask, check_dropout_args, dropout, dropout_scale,
                 softmax, softmax_array, softmax_grad_array)


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
        self.dot, self.combine, self.axes, self.scale, self.mask, self.keep = dot, combine, axes, scale, mask, keep
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
        """The same formulas as recorded ops (``create_graph``), so they can be differentiated
        again. The probabilities are recomputed as a recorded function of query and key: the
        saved array has no graph, and second derivatives must flow through it."""
        (k_t, q_t, s_t), (w_t, v_t, o_t) = self.dot, self.combine
        query, key, value = self.inputs
        scores = Einsum.apply(key, query, inputs=(k_t, q_t), output=s_t, scale=self.scale)
        probs = Softmax.apply(scores, axes=self.axes, mask=self.mask)
        keep = None if self.keep is None else Tensor._wrap(self.keep)
        weights = probs if keep is None else probs * keep
        d_value = Einsum.apply(weights, g, inputs=(w_t, o_t), output=v_t)
        d_weights = Einsum.apply(g, value, inputs=(o_t, v_t), output=w_t)
        d_scores = SoftmaxGrad.apply(d_weights if keep is None else d_weights * keep, probs, axes=self.axes)
        d_query = Einsum.apply(key, d_scores, inputs=(k_t, s_t), output=q_t, scale=self.scale)
        d_key = Einsum.apply(query, d_scores, inputs=(q_t, s_t), output=k_t, scale=self.scale)
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
    dot_in, dot_out, dot_squeeze, scores_shape = parse(dot_equation, (key_shape, query_shape))
    comb_in, comb_out, comb_squeeze, _ = parse(combine_equation, (scores_shape, value_shape))
    dot, combine = (*dot_in, dot_out), (*comb_in, comb_out)

    def plain(a, b, out):
        return all(len(set(t)) == len(t) for t in (a, b, out)) and set(a) <= set(b + out) and set(b) <= set(a + out)
    fusable = not dot_squeeze and not comb_squeeze and plain(*dot) and plain(*combine)
    return dot, combine, scores_shape, fusable


def attention(query, key, value, dot_equation: str, combine_equation: str, axis=-1, scale=None,
              mask=None, dropout_rate=0.0, seed=None, return_probs=False):
    """``einsum(combine_equation, dropout(softmax(scale * einsum(dot_equation, key, query),
    axis, mask)), value)``: attention, recorded as one node.

    ``axis`` counts in the scores (the dot product's result); ``mask`` (bool, True = attend)
    broadcasts to them, and a query with nothing to attend to gets all-zero probabilities.
    ``dropout_rate``/``seed`` are ``dropout``'s (0: none). With ``return_probs`` the result
    is ``(context, probs)``, the probabilities before dropout, computed as separate ops.

    >>> attention(q, k, v, "bshd,bthd->bhts", "bhts,bshd->bthd", scale=0.125)  # (B, T, H, D)
    """
    query, key, value = as_tensor(query), as_tensor(key), as_tensor(value)
    same_device(query, key, value, op="attention")
    for name, t in (("query", query), ("key", key), ("value", value)):
        if t.data.dtype.kind != "f":
            raise TypeError(f"attention: {name} must be a floating point tensor, got dtype {t.dtype}")
    check_dropout_args(dropout_rate, seed, "attention")
    dot, combine, scores_shape, fusable = _plan(dot_equation, combine_equation, query.shape, key.shape,
                                                value.shape)
    axes = normalize_axes(axis, len(scores_shape))
    if mask is not None:
        mask = as_mask(mask, query.xp, scores_shape, "attention: mask")
    scale = None if scale is None else float(scale)
    if return_probs or not fusable:
        scores = einsum(dot_equation, key, query, scale=scale)
        probs = softmax(scores, axis=axes, mask=mask, overwrite_x=True)  # the scores are never read again
        weights = dropout(probs, dropout_rate, training=True, seed=seed) if dropout_rate else probs
        context = einsum(combine_equation, weights, value)
        return (context, probs) if return_probs else context
    keep = None
    if dropout_rate:
        dtype = query.xp.result_type(key.dtype, query.dtype)  # the scores'
        keep = dropout_scale(scores_shape, dtype, dropout_rate, seed, query.device)
    return Attention.apply(query, key, value, dot=dot, combine=combine, axes=axes, scale=scale,
                           mask=mask, keep=keep)
