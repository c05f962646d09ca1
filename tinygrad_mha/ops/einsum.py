"""``einsum`` in full NumPy notation, with a gradient that is itself an einsum.

``parse`` turns the user's subscripts into plain letters: ``...`` becomes fresh letters, an
implicit output is made explicit, sizes are checked, and axes of size 1 that broadcast against
a larger size are squeezed away. ``Einsum`` then works on those plain letters: its forward is
the backend's einsum, and the gradient for operand k contracts the upstream gradient with all
the *other* operands into k's letters. (The fast contraction planner is a kernel:
``kernels/contraction.py``.)
"""

from __future__ import annotations

import string

import numpy as np

from ..backend import array_module
from ..kernels import kernel_for
from ..tensor import Function, Tensor
from .common import as_tensor, check_broadcast, same_device

LETTERS = string.ascii_letters


class Einsum(Function):
    """d einsum(x_1..x_n) / d x_k = einsum(g, every x_j but x_k) into x_k's letters"""
    uses_inputs, uses_output = "others", False

    def forward(self, *arrays, inputs, output):
        self.terms, self.out_term = inputs, output
        xp = array_module(arrays[0])
        spec = ",".join(inputs) + "->" + output
        return xp.asarray(xp.einsum(spec, *arrays))

    def backward(self, g):
        return tuple(self.grad_for(k, g) if t.requires_grad else None
                     for k, t in enumerate(self.inputs))

    def grad_for(self, k: int, g: Tensor) -> Tensor:
        """Operand k's gradient. Two corrections make the plain contraction exact: letters
        summed inside operand k alone are broadcast back, and repeated letters (a diagonal
        such as ``ii``) are put back on the diagonal with identity matrices."""
        term = self.terms[k]
        others = [j for j in range(len(self.terms)) if j != k]
        grad_terms = tuple(self.terms[j] for j in others) + (self.out_term,)
        unique = "".join(dict.fromkeys(term))
        reachable = "".join(c for c in unique if any(c in t for t in grad_terms))
        grad = Einsum.apply(*[self.inputs[j] for j in others], g, inputs=grad_terms,
                            output=reachable)
        size = dict(zip(term, self.inputs[k].shape))
        if reachable != unique:  # summed inside operand k only: broadcast back
            grad = grad.reshape([size[c] if c in reachable else 1 for c in unique])
            grad = grad.broadcast_to([size[c] for c in unique])
        if unique != term:
            grad = embed_diagonal(grad, unique, term, size)
        return grad


def embed_diagonal(grad: Tensor, unique: str, term: str, size: dict) -> Tensor:
    """Turn a gradient over ``unique`` letters into one over ``term`` (e.g. 'i' -> 'ii')."""
    fresh = iter(c for c in LETTERS if c not in term)
    expanded, eyes, eye_terms = [], [], []
    for pos, c in enumerate(term):
        if c in term[:pos]:
            f = next(fresh)
            expanded.append(f)
            eye_terms.append(c + f)
            eyes.append(Tensor._wrap(grad.xp.eye(size[c], dtype=grad.dtype)))
        else:
            expanded.append(c)
    return Einsum.apply(grad, *eyes, inputs=(unique, *eye_terms), output="".join(expanded))


# ---------------------------------------------------------------- parsing
def parse(subscripts: str, shapes: tuple) -> tuple[tuple[str, ...], str, tuple, tuple]:
    """Explicit subscripts for ``shapes``: (input terms, output term, axes to squeeze per
    operand or None, output shape)."""
    terms, arrow, rhs = _split(subscripts, len(shapes))
    inputs, ell = _expand_ellipsis(terms, shapes, subscripts)
    output = _output_term(terms, inputs, arrow, rhs, ell, subscripts)
    sizes = _letter_sizes(inputs, shapes, ell, subscripts)
    # Axes of size 1 whose letter is larger elsewhere: squeeze them and drop the letter.
    squeeze = tuple(tuple(j for j, (c, n) in enumerate(zip(t, s)) if n == 1 and sizes[c] != 1)
                    for t, s in zip(inputs, shapes))
    inputs = tuple("".join(c for j, c in enumerate(t) if j not in sq)
                   for t, sq in zip(inputs, squeeze))
    return inputs, output, (squeeze if any(squeeze) else None), tuple(sizes[c] for c in output)


def _split(subscripts: str, n_operands: int):
    """(input terms, arrow, output) of ``subscripts``, checking its characters and arrow."""
    spec = subscripts.replace(" ", "")
    bad = set(spec) - set(LETTERS) - set(",.->")
    if bad:
        raise ValueError(f"einsum: subscripts {subscripts!r} contain invalid characters "
                         f"{sorted(bad)}")
    bare = spec.replace("->", "")
    if spec.count("->") > 1 or "-" in bare or ">" in bare:
        raise ValueError(f"einsum: subscripts {subscripts!r} must contain '->' at most once, "
                         "and '-' or '>' only as part of '->'")
    lhs, arrow, rhs = spec.partition("->")
    terms = lhs.split(",")
    if len(terms) != n_operands:
        raise ValueError(f"einsum: subscripts {subscripts!r} name {len(terms)} operand(s) "
                         f"but {n_operands} were given")
    return terms, arrow, rhs


def _expand_ellipsis(terms, shapes, subscripts):
    """The terms with ``...`` replaced by fresh letters (right-aligned), and those letters."""
    unused = iter(c for c in LETTERS if c not in subscripts)
    ell_rank = 0
    for i, (term, shape) in enumerate(zip(terms, shapes)):
        _check_dots(term, subscripts)
        named = len(term.replace("...", ""))
        if "..." in term:
            ell_rank = max(ell_rank, len(shape) - named)
        if len(shape) < named or ("..." not in term and named != len(shape)):
            raise ValueError(f"einsum: operand {i} has {len(shape)} dimension(s) but "
                             f"{term!r} names {named}")
    ell = "".join(next(unused) for _ in range(ell_rank))
    inputs = tuple(t.replace("...", ell[ell_rank - (len(s) - len(t) + 3):]) if "..." in t else t
                   for t, s in zip(terms, shapes))
    return inputs, ell


def _output_term(terms, inputs, arrow, rhs, ell, subscripts) -> str:
    if not arrow:  # implicit: broadcast letters first, then letters seen exactly once, sorted
        joined = "".join(terms).replace(".", "")
        return ell + "".join(sorted(c for c in set(joined) if joined.count(c) == 1))
    _check_dots(rhs, subscripts)
    if "..." not in rhs and ell:
        raise ValueError(f"einsum: subscripts {subscripts!r} have broadcast dimensions '...' "
                         "in the inputs but not in the output")
    output = rhs.replace("...", ell)
    for c in output:
        if output.count(c) > 1:
            raise ValueError(f"einsum: output subscript {c!r} appears more than once in "
                             f"{subscripts!r}")
        if not any(c in t for t in inputs):
            raise ValueError(f"einsum: output subscript {c!r} does not appear in the inputs "
                             f"of {subscripts!r}")
    return output


def _letter_sizes(inputs, shapes, ell, subscripts) -> dict:
    """Each letter's size (1 only where every operand has 1), checking that they agree."""
    sizes: dict[str, int] = {}
    for i, (term, shape) in enumerate(zip(inputs, shapes)):
        for c, n in zip(term, shape):
            seen = sizes.get(c, 1)
            if n != seen and 1 not in (n, seen):
                what = "broadcast dimension '...'" if c in ell else f"subscript {c!r}"
                raise ValueError(f"einsum: {what} has size {seen} in one place and {n} "
                                 f"in operand {i} ({subscripts!r} with shapes {list(shapes)})")
            sizes[c] = n if seen == 1 else seen
        for c in set(term):
            dims = {n for t, n in zip(term, shape) if t == c}
            if len(dims) > 1:
                raise ValueError(f"einsum: repeated subscript {c!r} in operand {i} needs equal "
                                 f"sizes, got {sorted(dims)}")
    return sizes


def _check_dots(term: str, subscripts: str) -> None:
    if term.count(".") not in (0, 3) or (term.count(".") == 3 and "..." not in term):
        raise ValueError(f"einsum: subscripts {subscripts!r} use '.' outside a single '...'")


# ---------------------------------------------------------------- public function
def einsum(subscripts: str, *operands, scale=None, bias=None) -> Tensor:
    """Einstein summation in NumPy's notation, differentiable in every operand.

    ``scale * einsum(...) + bias`` when ``scale`` (a number) or ``bias`` (broadcast to the
    result) is given.

    >>> einsum("bqhd,bkhd->bhqk", q, k, scale=0.125)   # scaled attention scores
    >>> einsum("btc,chd->bthd", x, kernel, bias=b)     # a projection with its bias
    >>> einsum("ii->", a)                              # trace
    """
    if not isinstance(subscripts, str):
        raise TypeError(f"einsum: subscripts must be a str, got {type(subscripts).__name__}")
    if not operands:
        raise ValueError("einsum needs at least one operand")
    if scale is not None and (isinstance(scale, bool)
                              or not isinstance(scale, (int, float, np.integer, np.floating))):
        raise TypeError(f"einsum: scale must be a real number or None, got scale={scale!r}")
    tensors = [as_tensor(x) for x in operands]
    bias = None if bias is None else as_tensor(bias, tensors[0])
    same_device(*tensors, *([] if bias is None else [bias]), op="einsum")
    scale = None if scale is None else float(scale)
    kernel = kernel_for("einsum")
    if kernel is not None:
        return kernel(subscripts, tensors, scale, bias)
    inputs, output, squeeze, out_shape = parse(subscripts, tuple(t.shape for t in tensors))
    if squeeze:
        tensors = [t.reshape([n for j, n in enumerate(t.shape) if j not in sq]) if sq else t
                   for t, sq in zip(tensors, squeeze)]
    if bias is not None:
        check_broadcast(bias.shape, out_shape, "einsum: bias")
    out = Einsum.apply(*tensors, inputs=inputs, output=output)
    if scale is not None:
        out = out * scale
    return out if bias is None else out + bias
