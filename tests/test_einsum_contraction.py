"""The pairwise contraction behind ``einsum``: every operand layout and output order.

``_contract_pair`` lays operands out for one batched ``matmul`` without copies (views in
memory order, batch axes left separate, results written straight into the requested order).
These tests feed it the layouts that take each branch: non-contiguous, transposed, reversed
and broadcast operands, outputs in every order, operands that must be swapped, and more
than two operands. NumPy's own ``einsum`` is the reference. The planner is a kernel
(``kernels/contraction.py``): these tests run with kernels on in either mode.
"""

import importlib

import numpy as np
import pytest

import tinygrad_mha as tm


@pytest.fixture(autouse=True)
def _planner():
    with tm.use_kernels(True):
        yield

ATTENTION = [  # as Keras MultiHeadAttention writes them
    ("abc,cde->abde", [(2, 5, 6), (6, 3, 4)]),        # q/k/v projection
    ("aecd,abcd->acbe", [(2, 7, 3, 4), (2, 5, 3, 4)]),  # scores
    ("acbe,aecd->abcd", [(2, 3, 5, 7), (2, 7, 3, 4)]),  # context
    ("abcd,cde->abe", [(2, 5, 3, 4), (3, 4, 6)]),       # output projection
]
ORDERS = [  # every output order of a batched product, and contractions that need a swap
    ("bij,bjk->bik", [(3, 4, 5), (3, 5, 6)]),
    ("bij,bjk->bki", [(3, 4, 5), (3, 5, 6)]),
    ("bij,bjk->ikb", [(3, 4, 5), (3, 5, 6)]),
    ("bij,bjk->kib", [(3, 4, 5), (3, 5, 6)]),
    ("ij,jk->ki", [(4, 5), (5, 6)]),
    ("abc,cd->dba", [(2, 3, 4), (4, 5)]),
    ("abcd,bd->ca", [(2, 3, 4, 5), (3, 5)]),
    ("abcd,dcb->a", [(2, 3, 4, 5), (5, 4, 3)]),
    ("abcd,cxdy->xbay", [(2, 3, 4, 5), (4, 6, 5, 7)]),   # left and right letters interleaved
    ("ij,ij->", [(3, 4), (3, 4)]),                       # no free letters at all
    ("ij,ij->j", [(3, 4), (3, 4)]),                      # batch only, no M or N
    ("i,j->ij", [(3,), (4,)]),                           # nothing summed: broadcast product
    ("i,i->", [(5,), (5,)]),                             # vectors: M = N = 1
    ("ij,j->i", [(3, 4), (4,)]),
    ("i,ij->j", [(3,), (3, 4)]),
    (",i->i", [(), (4,)]),                               # a scalar operand
    ("ii,ij->j", [(3, 3), (3, 4)]),                      # a diagonal taken before the pair
    ("ij,jk,kl->li", [(3, 4), (4, 5), (5, 6)]),          # three operands
    ("...ij,...jk->...ik", [(2, 1, 3, 4), (5, 4, 6)]),   # broadcast batch
    ("NMij,MNjk->MkNi", [(2, 3, 4, 5), (3, 2, 5, 6)]),   # capital letters M and N as batch letters
]


def _layouts(shape, rng):
    """The same values in several memory layouts: C order, transposed, strided, reversed."""
    x = np.asarray(rng.standard_normal(shape))
    yield "contiguous", x
    yield "fortran", x.copy(order="F")
    rev = tuple(range(x.ndim))[::-1]
    yield "transposed view", x.transpose(rev).copy().transpose(rev)
    big = np.asarray(rng.standard_normal(tuple(2 * n for n in shape)))
    big[tuple(slice(None, None, 2) for _ in shape)] = x
    yield "strided view", big[tuple(slice(None, None, 2) for _ in shape)]
    flip = (slice(None, None, -1),) * x.ndim
    yield "reversed view", x[flip].copy()[flip]


@pytest.mark.parametrize("subscripts, shapes", ATTENTION + ORDERS, ids=[c[0] for c in ATTENTION + ORDERS])
def test_forward_matches_numpy_in_every_layout(subscripts, shapes):
    rng = np.random.default_rng(0)
    layouts = [list(_layouts(s, rng)) for s in shapes]
    for k, (layout, _) in enumerate(layouts[0]):
        first_only = [layouts[0][k][1]] + [ls[0][1] for ls in layouts[1:]]
        every = [ls[k][1] for ls in layouts]
        for arrays, which in ((first_only, "the first operand"), (every, "every operand")):
            np.testing.assert_allclose(tm.einsum(subscripts, *arrays).numpy(), np.einsum(subscripts, *arrays),
                                       rtol=1e-12, atol=1e-12, err_msg=f"{subscripts}, {which} {layout}")


@pytest.mark.parametrize("subscripts, shapes", ATTENTION + ORDERS, ids=[c[0] for c in ATTENTION + ORDERS])
def test_gradcheck(subscripts, shapes):
    rng = np.random.default_rng(1)
    inputs = [tm.Tensor(rng.standard_normal(s), requires_grad=True) for s in shapes]
    assert tm.gradcheck(lambda *xs: tm.einsum(subscripts, *xs), inputs)


@pytest.mark.parametrize("subscripts, shapes", ATTENTION, ids=[c[0] for c in ATTENTION])
def test_attention_outputs_and_gradients_are_contiguous(subscripts, shapes):
    """Results come out in the requested order, not as transposed views later ops must copy."""
    rng = np.random.default_rng(2)
    a, b = (tm.Tensor(rng.standard_normal(s).astype(np.float32), requires_grad=True) for s in shapes)
    out = tm.einsum(subscripts, a, b)
    assert out.data.flags.c_contiguous
    out.backward(rng.standard_normal(out.shape).astype(np.float32))
    assert a.grad.flags.c_contiguous and b.grad.flags.c_contiguous
    assert out.dtype == a.grad.dtype == b.grad.dtype == np.float32  # no upcast on the way


def test_mixed_dtypes_and_integers_follow_numpy():
    rng = np.random.default_rng(3)
    i = rng.integers(-5, 5, (3, 4))
    f = rng.standard_normal((4, 2)).astype(np.float32)
    for x, y in ((i, i.T), (i, f), (f.T, i.T)):
        got = tm.einsum("ij,jk->ik", x, y)
        want = np.einsum("ij,jk->ik", x, y)
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)


def test_empty_contraction_gives_zeros():
    out = tm.einsum("ij,jk->ik", np.ones((3, 0)), np.ones((0, 4)))
    np.testing.assert_array_equal(out.numpy(), np.zeros((3, 4)))


def test_plans_are_cached_per_layout():
    module = importlib.import_module("tinygrad_mha.kernels.contraction")
    x = np.ones((2, 3, 4))
    module._pair_plan.cache_clear()
    module._direct_plan.cache_clear()
    for _ in range(3):
        tm.einsum("bij,bjk->bik", x, x.transpose(0, 2, 1))
    assert module._pair_plan.cache_info().misses == 1  # planned once ...
    info = module._direct_plan.cache_info()
    assert info.misses == 1 and info.hits == 2  # ... then found in one lookup
