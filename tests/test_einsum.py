"""einsum: forward against numpy.einsum, gradients against finite differences, clear errors."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import tinygrad_mha as tm

# (subscripts, operand shapes). Every case is checked forward against numpy.einsum and with a
# float64 gradcheck; the comment names what the case exercises.
CASES = [
    # explicit and implicit output
    ("ij,jk->ik", [(2, 3), (3, 4)]),
    ("ij,jk", [(2, 3), (3, 4)]),                      # implicit: letters seen once, sorted
    ("ba", [(2, 3)]),                                 # implicit output 'ab' is a transpose
    ("Ba,ab", [(2, 3), (3, 2)]),                      # uppercase sorts before lowercase
    ("ji", [(2, 3)]),
    ("ij->ji", [(2, 3)]),
    ("AB,BC->AC", [(2, 3), (3, 4)]),                  # uppercase letters
    ("aB,Ba->", [(2, 3), (3, 2)]),
    # ellipsis with broadcasting batch dimensions
    ("...ij,...jk", [(2, 1, 3, 4), (5, 4, 2)]),       # fewer ellipsis dims + size-1 broadcast
    ("...ij,...jk->...ik", [(3, 4), (2, 4, 2)]),      # one operand has no ellipsis dims at all
    ("...i,...i", [(1, 3), (2, 3)]),                  # size-1 broadcast, implicit output
    ("...i,...i->...", [(2, 1, 3), (4, 3)]),
    ("i...j,j...->...i", [(2, 3, 4), (4, 3)]),        # '...' in the middle and at the end
    ("ij...,jk...->ik...", [(2, 3, 5), (3, 4, 1)]),   # '...' at the end, size-1 broadcast
    ("...,...->...", [(2, 1), (3,)]),                 # pure broadcasting product
    ("...ij->...ji", [(2, 3)]),                       # '...' standing for no dimension
    ("ab...,b...->a...", [(2, 3, 1, 4), (3, 2, 1)]),
    ("i...,...->i...", [(2, 3), ()]),
    ("...a,a->...", [(4,), (4,)]),
    # repeated indices inside one operand: trace and diagonal
    ("ii->", [(3, 3)]),
    ("ii", [(3, 3)]),                                 # implicit trace
    ("ii->i", [(3, 3)]),
    ("iij->ij", [(3, 3, 2)]),
    ("iji->j", [(3, 2, 3)]),
    ("iii->i", [(2, 2, 2)]),
    ("...ii->...i", [(2, 3, 3)]),
    ("b...ii->b...", [(2, 4, 3, 3)]),
    ("iij,jkk->ik", [(2, 2, 3), (3, 4, 4)]),
    ("ii,ii->i", [(3, 3), (3, 3)]),
    # letters summed inside a single operand
    ("ij->i", [(2, 3)]),
    ("ij->", [(2, 3)]),
    ("ij,k->k", [(2, 3), (4,)]),
    ("ijk,k->i", [(2, 3, 4), (4,)]),
    # outer products and hadamard
    ("i,j->ij", [(2,), (3,)]),
    ("i,j", [(2,), (3,)]),
    ("ij,kl->ijkl", [(2, 1), (3, 2)]),
    ("ij,ij->ij", [(2, 3), (2, 3)]),
    ("ij,ij->", [(2, 3), (2, 3)]),
    ("ij,ji->", [(3, 3), (3, 3)]),
    ("i,i->i", [(1,), (3,)]),                         # size-1 broadcast of a named letter
    # 0-d operands
    (",ij->ij", [(), (2, 3)]),
    ("->", [()]),
    (",->", [(), ()]),
    (",", [(), ()]),
    # three and four operands
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]),
    ("i,i,i->", [(3,), (3,), (3,)]),
    ("ij,jk,kl,lm->im", [(2, 3), (3, 4), (4, 2), (2, 3)]),
    ("abc,bd,ce,a->de", [(2, 3, 2), (3, 2), (2, 3), (2,)]),
    # attention equations (PyTorch-style and Keras-style)
    ("bqhd,bkhd->bhqk", [(2, 3, 2, 4), (2, 5, 2, 4)]),
    ("bhqk,bkhd->bqhd", [(2, 2, 3, 5), (2, 5, 2, 4)]),
    ("aecd,abcd->acbe", [(2, 3, 2, 4), (2, 5, 2, 4)]),
    ("acbe,aecd->abcd", [(2, 2, 5, 3), (2, 3, 2, 4)]),
    ("abc,cde->abde", [(2, 3, 4), (4, 2, 3)]),
    ("abcd,cde->abe", [(2, 3, 4, 2), (4, 2, 3)]),
    ("abcd,cde->abe", [(2, 3, 2, 1), (2, 1, 3)]),     # a size-1 summed letter
]
assert len(CASES) >= 35

# A representative subset for second derivatives (each backward is itself an einsum).
SECOND_ORDER = ["ij,jk->ik", "Ba,ab", "...ij,...jk", "i...j,j...->...i", "ii->", "ii->i",
                "iji->j", "ij,k->k", "i,j->ij", ",ij->ij", "ij,jk,kl->il", "bqhd,bkhd->bhqk",
                "aecd,abcd->acbe", "abcd,cde->abe"]


def _operands(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in shapes]


def _ids(case):
    return f"{case[0]}|{'x'.join(map(str, case[1]))}"


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_forward_matches_numpy(case, device):
    subscripts, shapes = case
    arrays = _operands(shapes)
    out = tm.einsum(subscripts, *[tm.Tensor(a, device=device) for a in arrays])
    expected = np.einsum(subscripts, *arrays)
    assert out.shape == np.shape(expected)
    assert out.device == device
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_gradcheck(case, device):
    subscripts, shapes = case
    inputs = [tm.Tensor(a, requires_grad=True, device=device) for a in _operands(shapes, seed=1)]
    assert tm.gradcheck(lambda *xs: tm.einsum(subscripts, *xs), inputs)


@pytest.mark.parametrize("case", [c for c in CASES if c[0] in SECOND_ORDER],
                         ids=[_ids(c) for c in CASES if c[0] in SECOND_ORDER])
def test_gradgradcheck(case, device):
    subscripts, shapes = case
    inputs = [tm.Tensor(a, requires_grad=True, device=device) for a in _operands(shapes, seed=2)]
    assert tm.gradgradcheck(lambda *xs: tm.einsum(subscripts, *xs), inputs)


def test_trace_gradient_is_identity():
    a = tm.Tensor(np.arange(9.0).reshape(3, 3), requires_grad=True)
    tm.einsum("ii->", a).backward()
    np.testing.assert_array_equal(a.grad, np.eye(3))


def test_gradient_only_for_operands_that_require_it(device):
    rng = np.random.default_rng(3)
    a = tm.Tensor(rng.standard_normal((2, 3)), requires_grad=True, device=device)
    b = tm.Tensor(rng.standard_normal((3, 4)), device=device)
    g = rng.standard_normal((2, 4))
    tm.einsum("ij,jk->ik", a, b).backward(tm.Tensor(g, device=device))
    np.testing.assert_allclose(tm.Tensor(a.grad).numpy(), g @ b.numpy().T, rtol=1e-12)
    assert b.grad is None


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_dtype_preserved(dtype):
    rng = np.random.default_rng(4)
    a = tm.Tensor(rng.standard_normal((2, 3)).astype(dtype), requires_grad=True)
    b = tm.Tensor(rng.standard_normal((3, 4)).astype(dtype), requires_grad=True)
    out = tm.einsum("ij,jk->ik", a, b)
    assert out.dtype == dtype
    out.sum().backward()
    assert a.grad.dtype == dtype and b.grad.dtype == dtype
    tol = 1e-2 if dtype == np.float16 else 1e-5
    np.testing.assert_allclose(out.numpy(), np.einsum("ij,jk->ik", a.numpy(), b.numpy()), rtol=tol, atol=tol)


def test_array_operands_are_accepted():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((3,))
    out = tm.einsum("ij,j->i", a, tm.Tensor(b))
    assert isinstance(out, tm.Tensor)
    np.testing.assert_allclose(out.numpy(), a @ b)


# ---------------------------------------------------------------- errors
def _t(*shape):
    return tm.Tensor(np.ones(shape))


def test_wrong_operand_count():
    with pytest.raises(ValueError, match=r"2 operand.*1 were given"):
        tm.einsum("ij,jk", _t(2, 3))
    with pytest.raises(ValueError, match=r"2 operand.*3 were given"):
        tm.einsum("ij,jk->ik", _t(2, 3), _t(3, 2), _t(2, 2))
    with pytest.raises(ValueError, match="at least one operand"):
        tm.einsum("ij")


def test_wrong_rank():
    with pytest.raises(ValueError, match=r"operand 1 has 1 dimension.*'jk' names 2"):
        tm.einsum("ij,jk", _t(2, 3), _t(3))
    with pytest.raises(ValueError, match=r"operand 0 has 1 dimension"):
        tm.einsum("...ij", _t(3))


@pytest.mark.parametrize("subscripts, shapes, letter, sizes", [
    ("ij,jk->ik", [(2, 3), (4, 5)], "j", (3, 4)),
    ("bqhd,bkhd->bhqk", [(2, 3, 2, 4), (2, 5, 2, 6)], "d", (4, 6)),
    ("Ab,bC->AC", [(2, 7), (3, 2)], "b", (7, 3)),
    ("ii->i", [(2, 3)], "i", (2, 3)),
])
def test_mismatched_sizes_name_letter_and_sizes(subscripts, shapes, letter, sizes):
    with pytest.raises(ValueError) as info:
        tm.einsum(subscripts, *[_t(*s) for s in shapes])
    message = str(info.value)
    assert repr(letter) in message
    for n in sizes:
        assert str(n) in message


def test_mismatched_ellipsis_dims():
    with pytest.raises(ValueError, match=r"'\.\.\.'.*2.*3"):
        tm.einsum("...ij,...jk", _t(2, 2, 3), _t(3, 3, 4))


@pytest.mark.parametrize("subscripts", ["i$,jk", "ij,j1", "ij->i!", "i_j"])
def test_bad_characters(subscripts):
    with pytest.raises(ValueError, match="invalid character"):
        tm.einsum(subscripts, *[_t(2, 2)] * (subscripts.count(",") + 1))


@pytest.mark.parametrize("subscripts", ["i.j", "i..j", "i...j...", "ij-k", "ij>k", "ij->i->j"])
def test_malformed_subscripts(subscripts):
    with pytest.raises(ValueError, match="einsum"):
        tm.einsum(subscripts, _t(2, 2))


def test_output_letter_not_in_inputs():
    with pytest.raises(ValueError, match=r"'k'.*does not appear in the inputs"):
        tm.einsum("ij->k", _t(2, 3))


def test_repeated_output_letter():
    with pytest.raises(ValueError, match=r"'i'.*more than once"):
        tm.einsum("ij->ii", _t(2, 3))


def test_ellipsis_in_inputs_but_not_output():
    with pytest.raises(ValueError, match=r"'\.\.\.' in the inputs but not in the output"):
        tm.einsum("...ij->ij", _t(2, 2, 3))


def test_subscripts_must_be_a_string():
    with pytest.raises(TypeError, match="str"):
        tm.einsum(3, _t(2))


def test_string_operand_is_a_type_error():
    with pytest.raises(TypeError):
        tm.einsum("ij,jk", _t(2, 3), "abc")


# ---------------------------------------------------------------- random equations
@st.composite
def einsum_case(draw):
    """A random equation: 1-3 operands, repeated letters, size-1 broadcasting, maybe '...'."""
    letters = "abcdB"
    sizes = {c: draw(st.integers(1, 3)) for c in letters}
    ell = draw(st.lists(st.integers(1, 3), max_size=2)) if draw(st.booleans()) else None
    terms, shapes = [], []
    for _ in range(draw(st.integers(1, 3))):
        term = "".join(draw(st.lists(st.sampled_from(letters), max_size=3)))
        shape = [sizes[c] for c in term]
        if ell is not None and draw(st.booleans()):
            k = draw(st.integers(0, len(ell)))
            part = [draw(st.sampled_from([1, n])) for n in ell[len(ell) - k:]]
            pos = draw(st.integers(0, len(term)))
            term, shape = term[:pos] + "..." + term[pos:], shape[:pos] + part + shape[pos:]
        terms.append(term)
        shapes.append(tuple(shape))
    subscripts = ",".join(terms)
    if draw(st.booleans()):  # explicit output: a random selection of the input letters
        used = sorted(set(subscripts) - set(".,"))
        out = "".join(draw(st.permutations(used))[:draw(st.integers(0, len(used)))])
        if "..." in subscripts:
            pos = draw(st.integers(0, len(out)))
            out = out[:pos] + "..." + out[pos:]
        subscripts += "->" + out
    return subscripts, shapes, draw(st.integers(0, 2 ** 16))


@settings(max_examples=60, deadline=None)
@given(case=einsum_case())
def test_random_equations_match_numpy_and_finite_differences(case):
    subscripts, shapes, seed = case
    arrays = _operands(shapes, seed)
    try:
        expected = np.einsum(subscripts, *arrays)
    except ValueError:
        assume(False)  # not a valid equation for NumPy either
    inputs = [tm.Tensor(a, requires_grad=True) for a in arrays]
    out = tm.einsum(subscripts, *inputs)
    assert out.shape == np.shape(expected)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12)
    assert tm.gradcheck(lambda *xs: tm.einsum(subscripts, *xs), inputs)


def test_same_tensor_used_twice():
    x_np = np.random.default_rng(6).standard_normal((3, 3))
    x = tm.Tensor(x_np, requires_grad=True)
    tm.einsum("ij,jk->", x, x).backward()
    # d/dx sum(x @ x) = 1 x^T + x^T 1 (1: all-ones matrix)
    ones = np.ones((3, 3))
    np.testing.assert_allclose(x.grad, ones @ x_np.T + x_np.T @ ones, rtol=1e-12)


def test_non_contiguous_operands():
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((4, 3, 2)), rng.standard_normal((2, 6, 5))
    A, B = tm.Tensor(a, requires_grad=True), tm.Tensor(b, requires_grad=True)

    def fn(A, B):
        return tm.einsum("kji,jl->ikl", A.transpose(2, 1, 0), B[:, ::2, 1:4].sum(axis=0))

    np.testing.assert_allclose(fn(A, B).numpy(),
                               np.einsum("kji,jl->ikl", a.transpose(2, 1, 0), b[:, ::2, 1:4].sum(0)),
                               rtol=1e-12)
    assert tm.gradcheck(fn, (A, B))


# ---------------------------------------------------------------- scale and bias (one op)
@pytest.mark.parametrize("subscripts, shapes, bias_shape", [
    ("ij,jk->ik", [(3, 4), (4, 2)], (2,)),              # result smaller: scaled in place
    ("bqhd,bkhd->bhqk", [(2, 3, 2, 4), (2, 5, 2, 4)], (5,)),  # result larger: a scaled operand copy
    ("ii->i", [(3, 3)], (3,)),                           # the result is a view of the operand
    ("ij->ji", [(3, 2)], (1, 3)),
])
def test_scale_and_bias_match_numpy_and_leave_operands_alone(subscripts, shapes, bias_shape):
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal(s) for s in shapes]
    copies = [a.copy() for a in arrays]
    bias = rng.standard_normal(bias_shape)
    got = tm.einsum(subscripts, *arrays, scale=-0.5, bias=bias)
    np.testing.assert_allclose(got.numpy(), -0.5 * np.einsum(subscripts, *copies) + bias, rtol=1e-12)
    for a, c in zip(arrays, copies):
        np.testing.assert_array_equal(a, c)
    tensors = [tm.Tensor(a, requires_grad=True) for a in [*arrays, bias]]
    assert tm.gradcheck(lambda *t: tm.einsum(subscripts, *t[:-1], scale=-0.5, bias=t[-1]), tensors)


def test_scale_keeps_float32():
    x = np.ones((2, 3), np.float32)
    assert tm.einsum("ij,jk->ik", x, x.T, scale=0.1, bias=np.float32(1)).dtype == np.float32


def test_bias_of_a_larger_dtype_is_not_added_in_place():
    out = tm.einsum("ij,jk->ik", np.ones((2, 3), np.float32), np.ones((3, 2), np.float32),
                    bias=np.full(2, 0.1, np.float64))
    assert out.dtype == np.float64  # as float32 + float64 in NumPy
    np.testing.assert_allclose(out.numpy(), 3.1)


def test_bad_scale_and_bias_are_rejected():
    x = np.ones((2, 3))
    with pytest.raises(TypeError, match="scale must be a real number"):
        tm.einsum("ij,jk->ik", x, x.T, scale="2")
    with pytest.raises(TypeError, match="scale must be a real number"):
        tm.einsum("ij,jk->ik", x, x.T, scale=True)
    with pytest.raises(ValueError, match=r"bias of shape \(3,\) does not broadcast to shape \(2, 2\)"):
        tm.einsum("ij,jk->ik", x, x.T, bias=np.ones(3))
    with pytest.raises(ValueError, match="does not broadcast"):  # would make the result bigger
        tm.einsum("ij,jk->ik", x, x.T, bias=np.ones((3, 2, 2)))


def test_scale_of_an_integer_einsum_follows_numpy_types():
    a = np.arange(6).reshape(2, 3)
    half = tm.einsum("ij,jk->ik", a, a.T, scale=0.5)
    np.testing.assert_allclose(half.numpy(), 0.5 * (a @ a.T))
    assert half.dtype == (0.5 * (a @ a.T)).dtype
    assert tm.einsum("ij,jk->ik", a, a.T, scale=2).dtype == (2.0 * (a @ a.T)).dtype  # a float scale


@pytest.mark.parametrize("bias_shape", [None, (4,), (3, 1)])
def test_recorded_and_plain_backward_agree(bias_shape):
    # Without create_graph, Einsum's backward (and the engine's bias sum) skip the graph node
    # and run the same arithmetic on arrays; with it, they record ops. Both must give the
    # same first derivatives, for operands, the scale and a broadcast bias alike.
    rng = np.random.default_rng(7)
    a = tm.Tensor(rng.standard_normal((2, 3, 5)), requires_grad=True)
    b = tm.Tensor(rng.standard_normal((5, 4)), requires_grad=True)
    bias = None if bias_shape is None else tm.Tensor(rng.standard_normal(bias_shape), requires_grad=True)
    # (upstream wants a gradient too, so that every recorded gradient is a graph node)
    upstream = tm.Tensor(rng.standard_normal((2, 3, 4)), requires_grad=True)
    wrt = [a, b] + ([] if bias is None else [bias])

    def grads(create_graph):
        y = tm.einsum("ijk,kl->ijl", a, b, scale=0.3, bias=bias)
        return tm.grad(y, wrt, upstream, create_graph=create_graph)

    for plain, recorded in zip(grads(False), grads(True)):
        assert recorded.requires_grad  # really the recorded path
        np.testing.assert_allclose(plain.numpy(), recorded.numpy(), rtol=1e-12, atol=1e-12)
