"""Every differentiable op, with inputs to check it on: the syllabus for gradcheck.

The test suite walks this list (float64 gradcheck on each case, gradgradcheck where
``second_order``), and ``python -m tinygrad_mha gradcheck`` prints the same report. Adding an op
means adding a line here, so no op can go unchecked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import ops
from .tensor import Tensor


@dataclass(frozen=True)
class OpCase:
    name: str
    fn: Callable
    shapes: tuple  # one shape per differentiable input
    second_order: bool = True
    positive: bool = False  # draw inputs from (0.5, 2) instead of N(0, 1): log, sqrt, pow
    kwargs: dict = field(default_factory=dict)

    def inputs(self, seed: int = 0, dtype=np.float64, device="cpu") -> list[Tensor]:
        rng = np.random.default_rng(seed)
        arrays = [rng.uniform(0.5, 2.0, s) if self.positive else rng.standard_normal(s)
                  for s in self.shapes]
        return [Tensor(a.astype(dtype), requires_grad=True, device=device) for a in arrays]


def _cases(name, fn, shape_sets, **kw):
    return [OpCase(f"{name}{list(shapes)}", fn, tuple(shapes), **kw) for shapes in shape_sets]


_BINARY_SHAPES = [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((3, 1), (1, 4)), ((), (2, 3)), ((1,), ())]
_UNARY_SHAPES = [((3, 4),), ((),), ((1,),), ((2, 1, 3),)]
# query position i (of 6, row-major over a 2x3 grid) attends to key positions j <= i, except
# that query 0 attends to nothing (its probabilities are all zero)
_GRID_MASK = ((np.arange(6)[:, None] >= np.arange(6))
              & (np.arange(6) > 0)[:, None]).reshape(1, 2, 3, 2, 3)
_MASK = np.array([[True, False, True, True], [False, False, False, False],
                  [True, True, True, False]])
_DOT, _COMBINE = "bshd,bthd->bhts", "bhts,bshd->bthd"

CATALOG: list[OpCase] = [
    *_cases("add", ops.add, _BINARY_SHAPES),
    *_cases("sub", ops.sub, _BINARY_SHAPES),
    *_cases("mul", ops.mul, _BINARY_SHAPES),
    *_cases("div", ops.div, _BINARY_SHAPES, positive=True),
    *_cases("pow", ops.pow, _BINARY_SHAPES, positive=True),
    *_cases("pow_scalar", lambda a: a ** 3, _UNARY_SHAPES),
    *_cases("rpow_scalar", lambda a: 2.0 ** a, _UNARY_SHAPES),
    *_cases("neg", ops.neg, _UNARY_SHAPES),
    *_cases("abs", ops.abs, _UNARY_SHAPES),
    *_cases("exp", ops.exp, _UNARY_SHAPES),
    *_cases("log", ops.log, _UNARY_SHAPES, positive=True),
    *_cases("sqrt", ops.sqrt, _UNARY_SHAPES, positive=True),
    *_cases("tanh", ops.tanh, _UNARY_SHAPES),
    *_cases("sigmoid", ops.sigmoid, _UNARY_SHAPES),
    *_cases("relu", ops.relu, _UNARY_SHAPES),
    *_cases("sum", ops.sum, _UNARY_SHAPES),
    *_cases("sum_axis", lambda a: a.sum(axis=-1, keepdims=True), [((3, 4),), ((2, 1, 3),)]),
    *_cases("sum_axes", lambda a: a.sum(axis=(0, 2)), [((2, 3, 4),)]),
    *_cases("mean", lambda a: a.mean(axis=0), [((3, 4),), ((1,),)]),
    *_cases("max", lambda a: a.max(axis=1), [((3, 4),), ((2, 1, 3),)]),
    *_cases("max_all", ops.max, _UNARY_SHAPES),
    *_cases("min", lambda a: a.min(axis=(0, 1), keepdims=True), [((3, 4),), ((2, 1, 3),)]),
    *_cases("var", lambda a: a.var(axis=-1), [((3, 4),), ((2, 5),)]),
    *_cases("var_ddof", lambda a: a.var(ddof=1), [((3, 4),)]),
    *_cases("reshape", lambda a: a.reshape(-1, 2), [((3, 4),), ((2, 1, 2),)]),
    *_cases("transpose", lambda a: a.transpose(), _UNARY_SHAPES),
    *_cases("transpose_axes", lambda a: a.transpose(1, 2, 0), [((2, 3, 4),)]),
    *_cases("T", lambda a: a.T, [((3, 4),)]),
    *_cases("swapaxes", lambda a: a.swapaxes(0, -1), [((2, 3, 4),)]),
    *_cases("expand_dims", lambda a: a.expand_dims(-1), [((3, 4),), ((),)]),
    *_cases("squeeze", lambda a: a.squeeze(), [((2, 1, 3),), ((1,),)]),
    *_cases("broadcast_to", lambda a: a.broadcast_to((2, 3, 4)), [((3, 1),), ((4,),), ((),)]),
    *_cases("getitem_basic", lambda a: a[1:, ::2], [((3, 4),)]),
    *_cases("getitem_int", lambda a: a[1], [((3, 4),)]),
    *_cases("getitem_array", lambda a: a[np.array([0, 2, 0]), 1:3], [((3, 4),)]),
    *_cases("getitem_bool", lambda a: a[_MASK], [((3, 4),)]),
    *_cases("getitem_newaxis", lambda a: a[None, ..., 0], [((3, 4),)]),
    *_cases("matmul", ops.matmul, [((3, 4), (4, 2)), ((2, 3, 4), (4, 5)), ((4,), (4, 3)),
                                   ((3, 4), (4,)), ((4,), (4,)), ((2, 1, 3, 4), (3, 4, 2))]),
    *_cases("tensordot", lambda a, b: ops.tensordot(a, b, 1),
            [((2, 3, 4), (4, 5)), ((3,), (3, 2))]),
    *_cases("tensordot_2_axes", lambda a, b: ops.tensordot(a, b, 2),
            [((2, 3, 4), (3, 4, 5)), ((3, 4), (3, 4))]),
    *_cases("tensordot_bias", lambda a, b, c: ops.tensordot(a, b, 1, bias=c),
            [((2, 3, 4), (4, 2, 5), (2, 5)), ((2, 3, 4), (4, 2, 5), (2, 1)), ((3, 4), (4, 2), ())]),
    *_cases("einsum_matmul", lambda a, b: ops.einsum("ij,jk->ik", a, b), [((3, 4), (4, 2))]),
    *_cases("einsum_attention", lambda q, k: ops.einsum("bqhd,bkhd->bhqk", q, k),
            [((2, 3, 2, 4), (2, 5, 2, 4))]),
    *_cases("einsum_trace", lambda a: ops.einsum("ii->", a), [((3, 3),)]),
    *_cases("einsum_diag", lambda a: ops.einsum("ii->i", a), [((3, 3),)]),
    *_cases("einsum_ellipsis", lambda a, b: ops.einsum("...ij,...jk", a, b),
            [((2, 1, 3, 4), (5, 4, 2))]),
    # scale and bias: on the result in place, on a copy of the smaller operand, on a view (diag)
    *_cases("einsum_scale_bias", lambda a, b, c: ops.einsum("ij,jk->ik", a, b, scale=0.5, bias=c),
            [((3, 4), (4, 2), (2,)), ((3, 4), (4, 2), (3, 1))]),
    *_cases("einsum_scaled_attention", lambda q, k: ops.einsum("bqhd,bkhd->bhqk", q, k, scale=0.5),
            [((2, 3, 2, 4), (2, 5, 2, 4))]),
    *_cases("einsum_projection_bias", lambda x, w, b: ops.einsum("btc,chd->bthd", x, w, bias=b),
            [((2, 3, 4), (4, 2, 3), (2, 3))]),
    *_cases("einsum_diag_scaled", lambda a: ops.einsum("ii->i", a, scale=-2.0), [((3, 3),)]),
    *_cases("softmax", ops.softmax, [((3, 4),), ((2, 3, 4),), ((1,),)]),
    *_cases("softmax_axes", lambda a: ops.softmax(a, axis=(0, 2)), [((2, 3, 4),)]),
    *_cases("softmax_mask", lambda a: ops.softmax(a, mask=_MASK), [((3, 4),), ((2, 3, 4),)]),
    *_cases("log_softmax", ops.log_softmax, [((3, 4),), ((1,),)]),
    *_cases("log_softmax_axes", lambda a: ops.log_softmax(a, axis=(0, 1)), [((3, 4),)]),
    *_cases("dropout", lambda a: ops.dropout(a, 0.4, seed=7), [((3, 4),), ((2, 3, 4),)]),
    # attention: the fused node (one axis; two joint axes with a mask and dropout), and the
    # separately recorded path that return_probs takes
    *_cases("attention", lambda q, k, v: ops.attention(q, k, v, _DOT, _COMBINE, scale=0.5),
            [((2, 3, 2, 4), (2, 5, 2, 4), (2, 5, 2, 3))]),
    *_cases("attention_2d_mask_dropout",
            lambda q, k, v: ops.attention(q, k, v, "bxyd,buvd->buvxy", "buvxy,bxyd->buvd",
                                          axis=(3, 4),
                                          mask=_GRID_MASK, dropout_rate=0.3, seed=5),
            [((2, 2, 3, 2), (2, 2, 3, 2), (2, 2, 3, 3))]),
    *_cases("attention_probs", lambda q, k, v: ops.attention(q, k, v, _DOT, _COMBINE,
                                                             mask=_MASK[:, :3],
                                                             return_probs=True)[1],
            [((2, 3, 2, 4), (2, 3, 2, 4), (2, 3, 2, 3))]),
    *_cases("concatenate", lambda a, b: ops.concatenate([a, b], axis=1), [((3, 4), (3, 2))]),
    *_cases("stack", lambda a, b: ops.stack([a, b], axis=-1), [((3, 4), (3, 4)), ((), ())]),
    *_cases("where", lambda a, b: ops.where(_MASK, a, b), [((3, 4), (3, 4)), ((3, 4), ()),
                                                            ((1, 4), (3, 1))]),
]
