"""Kernel for ``einsum`` (reference: ``ops.einsum.Einsum``): a contraction planner.

The reference forward is one ``xp.einsum`` call. This kernel contracts two operands at a time
with one batched ``matmul`` each (BLAS, on views: no copies where the layout allows, see
``_pair_plan``), in an order chosen by ``numpy.einsum_path``; single operands (traces,
diagonals, sums) go to ``xp.einsum``. A ``scale`` and a ``bias`` are applied where they cost
least (as BLAS gemm's alpha and C), plans are cached per shape and layout, and when nothing
records the backward, it runs the same contractions on plain arrays.

What it buys (``benchmarks/bench_kernels.py``, forward plus backward of the scaled attention
scores einsum, one thread): the reference takes 7.7x its time at the small MultiHeadAttention
size, 7.1x at the medium and 7.7x at the large one; the ops table of ``benchmarks/RESULTS.md``
puts the planned einsums at 1.0-1.05x hand-written NumPy matmuls from the medium size on.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np

from ..backend import array_module, is_cupy_array
from ..ops.einsum import Einsum, embed_diagonal, parse
from ..ops.common import check_broadcast
from ..tensor import Tensor, is_grad_enabled
from . import register


# ---------------------------------------------------------------- 2. contraction
@functools.lru_cache(maxsize=1024)
def _pair_order(inputs: tuple, output: str, shapes: tuple) -> tuple:
    """Which pairs of operands to contract, in order (NumPy's greedy path on shapes alone)."""
    if len(inputs) <= 2:
        return ((0, 1),) if len(inputs) == 2 else ()
    dummies = [np.broadcast_to(np.empty((), dtype=np.float32), s) for s in shapes]
    path = np.einsum_path(",".join(inputs) + "->" + output, *dummies, optimize="greedy")[0]
    steps = tuple(tuple(step) for step in path[1:])
    if all(len(step) == 2 for step in steps):
        return steps
    return tuple((0, 1) for _ in range(len(inputs) - 1))  # plain left to right


@functools.lru_cache(maxsize=4096)
def _single_target(term: str, keep: str) -> str:
    """``term`` with each letter once and letters not in ``keep`` dropped.

    Cached: it runs three times per pair, and at small sizes building these strings cost
    as much as the matmul.
    """
    return "".join(dict.fromkeys(c for c in term if c in keep))


def _reduce_single(array, term: str, keep: str):
    """Take diagonals of repeated letters and sum letters not in ``keep``; returns (array, term)."""
    target = _single_target(term, keep)
    if target == term:
        return array, term
    return array_module(array).einsum(f"{term}->{target}", array), target


class _PairPlan(NamedTuple):
    """How ``_contract_pair`` lays two operands out for one ``matmul`` (see ``_pair_plan``)."""

    # Every step that would be a no-op is None, decided once here: at small sizes each
    # NumPy call, even a do-nothing reshape, costs a tenth of a small matmul.
    product: bool       # nothing to sum: multiply broadcast views instead of a matmul
    swap: bool          # compute b @ a instead, so the result comes out in the wanted order
    perm_a: tuple       # transpose a to (batch..., left..., summed...) (None: it already is) ...
    shape_a: tuple      # ... and view it as (batch..., M, K) (None: it already is)
    perm_b: tuple       # transpose b to (batch..., summed..., right...) ...
    shape_b: tuple      # ... and view it as (batch..., K, N)
    out_term: str       # the letters of the result, in its axis order
    out_shape: tuple = ()     # the result, C-contiguous in ``out_term`` order ...
    out_grouped: tuple = ()   # ... is this view of it, with its left and right letters merged ...
    out_perm: tuple = None    # ... transposed to the (batch..., M, N) matmul writes (None: as is)
    regroup: bool = False     # out_grouped is not out_shape: the result needs a reshape (a view)


def _moved(perm: tuple):
    """A transpose, or None for the identity (saves a NumPy call per operand on the hot path)."""
    return None if perm == tuple(range(len(perm))) else perm


@functools.lru_cache(maxsize=4096)
def _pair_plan(ta: str, tb: str, keep: str, shape_a: tuple, strides_a: tuple,
               shape_b: tuple, strides_b: tuple) -> _PairPlan:
    """Plan one pair contraction; cached, because a model repeats the same few shapes.

    The plan avoids copies, which at attention sizes cost up to as much as the matmul itself
    (before it, the scores einsum's forward and backward took 1.5-1.9x plain NumPy's time):

    * Batch letters stay separate axes (``matmul`` loops over any batch layout), instead of
      being merged into one axis, which forces a copy when they are not adjacent in memory
      (as with the heads axis of ``aecd,abcd->acbe``).
    * Letters merged into M, K or N are taken in the operand's memory order (by stride), so
      the merge is a free reshape of a view; NumPy's matmul hands the transposed 2-D views
      to BLAS directly.
    * The result is written (``out=``) into an array already in the order ``keep`` lists, so
      the output of the last pair is C-contiguous in the requested output order, and is not
      a transposed view that every later op would have to copy. Operands are swapped (b @ a)
      when that gives the wanted order directly. When the order still interleaves batch and
      free letters (context ``acbe,aecd->abcd``), BLAS writes rows with a stride: a few
      percent slower than a contiguous block, but much cheaper than the copy it saves later.
    """
    if not any(c in tb and c not in keep for c in ta):
        return _product_plan(ta, tb, shape_a, shape_b)
    result = [c for c in dict.fromkeys(keep) if c in ta or c in tb]  # wanted order
    first_free = next((c for c in result if (c in ta) != (c in tb)), None)
    swap = first_free is not None and first_free not in ta
    if swap:  # b's own letters come first in the wanted order: compute b @ a
        ta, tb, shape_a, shape_b = tb, ta, shape_b, shape_a
        strides_a, strides_b = strides_b, strides_a
    size = dict(zip(ta, shape_a)) | dict(zip(tb, shape_b))
    memory_order = lambda letters, term, strides: sorted(  # noqa: E731
        letters, key=lambda c: -strides[term.index(c)])
    batch = [c for c in result if c in ta and c in tb]
    left = memory_order([c for c in ta if c not in tb], ta, strides_a)
    right = memory_order([c for c in tb if c not in ta], tb, strides_b)
    summed = memory_order([c for c in ta if c in tb and c not in keep], ta, strides_a)
    prod = lambda letters: math.prod(size[c] for c in letters)  # noqa: E731

    out_term, out_shape, out_grouped, out_perm = _output_layout(result, batch, left, right, size)
    perm_a = tuple(ta.index(c) for c in batch + left + summed)
    perm_b = tuple(tb.index(c) for c in batch + summed + right)
    shape_a = tuple(size[c] for c in batch) + (prod(left), prod(summed))
    shape_b = tuple(size[c] for c in batch) + (prod(summed), prod(right))
    return _PairPlan(
        product=False, swap=swap,
        perm_a=_moved(perm_a),
        shape_a=None if shape_a == tuple(size[ta[i]] for i in perm_a) else shape_a,
        perm_b=_moved(perm_b),
        shape_b=None if shape_b == tuple(size[tb[i]] for i in perm_b) else shape_b,
        out_shape=out_shape, out_grouped=out_grouped, out_perm=out_perm,
        regroup=out_grouped != out_shape, out_term=out_term)


def _product_plan(ta: str, tb: str, shape_a: tuple, shape_b: tuple) -> _PairPlan:
    """Nothing to sum: a broadcast product (batch..., left..., 1...) * (batch..., 1...,
    right...) is cheaper than a matmul with K = 1."""
    size = dict(zip(ta, shape_a)) | dict(zip(tb, shape_b))
    batch = [c for c in ta if c in tb]
    left = [c for c in ta if c not in tb]
    right = [c for c in tb if c not in ta]
    return _PairPlan(
        product=True, swap=False,
        perm_a=_moved(tuple(ta.index(c) for c in batch + left)),
        shape_a=tuple(size[c] for c in batch + left) + (1,) * len(right) if right else None,
        perm_b=_moved(tuple(tb.index(c) for c in batch + right)),
        shape_b=(tuple(size[c] for c in batch) + (1,) * len(left)
                 + tuple(size[c] for c in right)) if left else None,
        out_term="".join(batch + left + right))


def _output_layout(result: list, batch: list, left: list, right: list, size: dict):
    """(out_term, out_shape, out_grouped, out_perm) of ``_PairPlan`` for a matmul pair."""
    # Output order: ``result`` when its left and right letters each form one run in the order
    # matmul produces them (always true for outputs like 'abcd' from 'ac|b|d'); else matmul's.
    joined = "".join(result)
    if "".join(left) in joined and "".join(right) in joined:
        out_term = joined
    else:
        out_term = "".join(batch + left + right)
    # The output's axes with the left run and the right run each merged into one axis, named
    # "<M>" and "<N>" (more than one character, so never a letter); an empty run has length 1.
    axes = []
    for c in out_term:
        if c in batch:
            axes.append((c, size[c]))
        elif left and c == left[0]:
            axes.append(("<M>", math.prod(size[c] for c in left)))
        elif right and c == right[0]:
            axes.append(("<N>", math.prod(size[c] for c in right)))
    axes += [(name, 1) for name, run in (("<M>", left), ("<N>", right)) if not run]
    names = [name for name, _ in axes]
    out_perm = _moved(tuple(names.index(name) for name in batch + ["<M>", "<N>"]))
    return out_term, tuple(size[c] for c in out_term), tuple(n for _, n in axes), out_perm


def _contract_pair(a, ta: str, b, tb: str, keep: str):
    """Contract two operands over their shared letters not in ``keep``, via one batched matmul."""
    a, ta = _reduce_single(a, ta, keep + tb)
    b, tb = _reduce_single(b, tb, keep + ta)
    plan = _pair_plan(ta, tb, keep, a.shape, a.strides, b.shape, b.strides)
    return _run_pair(plan, a, b), plan.out_term


@functools.lru_cache(maxsize=4096)
def _direct_plan(inputs: tuple, output: str, shape_a: tuple, strides_a: tuple,
                 shape_b: tuple, strides_b: tuple):
    """(pair plan, final transpose or None) for two operands that need no reduction of their
    own (no diagonal, no letter summed inside one operand), else None.

    One cached lookup instead of the three ``_reduce_single`` checks and the plan lookup of the
    general path: at small sizes that bookkeeping cost as much as the matmul.
    """
    ta, tb = inputs
    if _single_target(ta, output + tb) != ta or _single_target(tb, output + ta) != tb:
        return None
    plan = _pair_plan(ta, tb, output, shape_a, strides_a, shape_b, strides_b)
    term = plan.out_term
    if _single_target(term, output) != term:
        return None
    return plan, (None if term == output else tuple(term.index(c) for c in output))


def _run_pair(plan: _PairPlan, a, b):
    """Carry out ``plan`` on the two operands: views, then one matmul (or a broadcast product)."""
    if plan.swap:
        a, b = b, a
    if plan.perm_a is not None:
        a = a.transpose(plan.perm_a)
    if plan.shape_a is not None:
        a = a.reshape(plan.shape_a)  # a reshape copies only if it must
    if plan.perm_b is not None:
        b = b.transpose(plan.perm_b)
    if plan.shape_b is not None:
        b = b.reshape(plan.shape_b)
    if plan.product:
        return a * b
    if plan.out_perm is None:  # matmul's own layout is the wanted order: let it allocate
        out = a @ b
    elif is_cupy_array(a):
        # CuPy's matmul(out=) into a non-contiguous ``out`` computes into a temporary and
        # copies, so writing through a transposed view buys nothing there: let it allocate.
        out = (a @ b).transpose(tuple(np.argsort(plan.out_perm)))
    else:  # write through a transposed view, so the result is C-contiguous in the wanted order
        xp = array_module(a)
        dtype = a.dtype if a.dtype == b.dtype else xp.result_type(a.dtype, b.dtype)
        out = xp.empty(plan.out_grouped, dtype=dtype)
        xp.matmul(a, b, out=out.transpose(plan.out_perm))
    return out.reshape(plan.out_shape) if plan.regroup else out


def contract(inputs: tuple, output: str, arrays: list):
    """Evaluate plain-letter einsum ``inputs -> output`` on backend arrays."""
    if len(arrays) == 1:
        xp = array_module(arrays[0])
        return xp.asarray(xp.einsum(f"{inputs[0]}->{output}", arrays[0]))
    if len(arrays) == 2:  # the common case (every attention einsum and its gradients): one pair
        a, b = arrays
        direct = _direct_plan(inputs, output, a.shape, a.strides, b.shape, b.strides)
        if direct is not None:
            out = _run_pair(direct[0], a, b)
            return out if direct[1] is None else out.transpose(direct[1])
        out, term = _contract_pair(a, inputs[0], b, inputs[1], output)
    else:
        terms, arrays = list(inputs), list(arrays)
        for i, j in _pair_order(tuple(inputs), output, tuple(a.shape for a in arrays)):
            i, j = sorted((i, j))
            tb, b = terms.pop(j), arrays.pop(j)
            ta, a = terms.pop(i), arrays.pop(i)
            keep = output + "".join(terms)
            out, term = _contract_pair(a, ta, b, tb, keep)
            terms.append(term)
            arrays.append(out)
        (term,), (out,) = terms, arrays
    out, term = _reduce_single(out, term, output)
    return out.transpose([term.index(c) for c in output]) if term != output else out


@functools.lru_cache(maxsize=1024)
def _scaled_operand(inputs: tuple, output: str, shapes: tuple):
    """Where ``scale`` costs least (see ``_evaluate``): an operand's index, or None for the
    result."""
    i = min(range(len(shapes)), key=lambda j: math.prod(shapes[j]))
    sizes = {c: n for term, shape in zip(inputs, shapes) for c, n in zip(term, shape)}
    return i if math.prod(sizes[c] for c in output) > math.prod(shapes[i]) else None


@functools.lru_cache(maxsize=1024)
def _grad_recipe(terms: tuple, out_term: str, k: int):
    """For operand k's gradient: the other operands' indices, the gradient einsum's input terms
    (theirs, then the upstream gradient's), its output letters, and k's letters each once.
    Cached: it depends on the subscripts only, and building it cost as much as a small einsum."""
    others = tuple(j for j in range(len(terms)) if j != k)
    grad_terms = tuple(terms[j] for j in others) + (out_term,)
    unique = "".join(dict.fromkeys(terms[k]))
    reachable = "".join(c for c in unique if any(c in t for t in grad_terms))
    return others, grad_terms, reachable, unique


def _evaluate(arrays, inputs: tuple, output: str, scale=None, bias=False):
    """``scale * einsum(arrays) + bias`` on backend arrays (bias, when given, is the last array)."""
    if scale is None and not bias:
        return contract(inputs, output, arrays)
    operands = arrays[:-1] if bias else arrays
    scale_result = scale is not None
    if scale_result:
        # As BLAS gemm's alpha, the scale goes where it costs least: onto the result
        # (in place) when that is no bigger than any operand, else onto a copy of the
        # smallest operand, dropped right after. For attention scores that is the
        # (B, T, H, D) query instead of a pass over the (B, H, T, S) scores.
        i = _scaled_operand(inputs, output, tuple([a.shape for a in operands]))
        if i is not None:
            operands = (*operands[:i], operands[i] * scale, *operands[i + 1:])
            scale_result = False
    out = contract(inputs, output, operands)
    xp = array_module(out)
    if scale_result:
        out = in_place(out, operands, xp.multiply, scale)
    if bias:  # added in place: no second array of the output's size (as ``y = x @ w; y += b``)
        out = in_place(out, operands, xp.add, arrays[-1])
    return out




def in_place(out, operands, op, value):
    """``op(out, value)``, written into ``out`` when it is a new array whose dtype the result
    keeps: one pass over memory and no new array, as ``y = x @ w; y += b``. (A product of two
    or more ``operands`` is always a new array; one operand may give a view of itself, such as
    a transpose or a diagonal.)"""
    xp = array_module(out)
    if ((getattr(value, "dtype", None) == out.dtype or xp.result_type(out, value) == out.dtype)
            and (len(operands) > 1 or not xp.may_share_memory(out, operands[0]))):
        return op(out, value, out=out)
    return op(out, value)


class PlannedEinsum(Einsum):
    """``scale * einsum(operands) + bias`` (bias: the last input) on the planner.

    Gradients as the reference's, times ``scale``; the bias gets g itself (the engine sums it
    down to the bias' shape). Under ``create_graph`` the reference formulas record themselves.
    """

    def forward(self, *arrays, inputs, output, scale=None, bias=False):
        self.terms, self.out_term, self.scale = inputs, output, scale
        return _evaluate(arrays, inputs, output, scale, bias)

    def backward(self, g):
        n = len(self.terms)
        if is_grad_enabled():
            scaled = g if self.scale is None else g * self.scale
            grads = [self.grad_for(k, scaled) if t.requires_grad else None
                     for k, t in enumerate(self.inputs[:n])]
        else:
            grads = [self._array_grad(k, g) if t.requires_grad else None
                     for k, t in enumerate(self.inputs[:n])]
        return (*grads, g) if len(self.inputs) > n else tuple(grads)

    def _array_grad(self, k: int, g: Tensor) -> Tensor:
        """The reference's ``grad_for`` on plain arrays, the contraction planned."""
        others, grad_terms, reachable, unique = _grad_recipe(self.terms, self.out_term, k)
        grad = Tensor._wrap(_evaluate([self.inputs[j].data for j in others] + [g.data],
                                      grad_terms, reachable, self.scale))
        term = self.terms[k]
        if reachable == unique == term:
            return grad
        size = dict(zip(term, self.inputs[k].shape))
        if reachable != unique:
            grad = grad.reshape([size[c] if c in reachable else 1 for c in unique])
            grad = grad.broadcast_to([size[c] for c in unique])
        if unique != term:
            grad = embed_diagonal(grad, unique, term, size)
        return grad


cached_parse = functools.lru_cache(maxsize=1024)(parse)


@register("einsum")
def einsum(subscripts: str, tensors: list, scale, bias):
    """``ops.einsum`` after its argument checks, on the planner."""
    inputs, output, squeeze, out_shape = cached_parse(subscripts, tuple([t.shape for t in tensors]))
    if squeeze:
        tensors = [t.reshape([n for j, n in enumerate(t.shape) if j not in sq]) if sq else t
                   for t, sq in zip(tensors, squeeze)]
    extra = ()
    if bias is not None:
        check_broadcast(bias.shape, out_shape, "einsum: bias")
        extra = (bias,)
    return PlannedEinsum.apply(*tensors, *extra, inputs=inputs, output=output, scale=scale,
                               bias=bool(extra))
