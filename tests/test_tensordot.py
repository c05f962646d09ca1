"""tm.tensordot: NumPy's tensordot (integer axes) plus a bias, and the layers that use it."""

import numpy as np
import pytest

import tinygrad_mha as tm
from tinygrad_mha.layers.einsum_dense import EinsumDense, tensordot_axes
from tinygrad_mha.kernels.tensordot import TensorDot

CASES = [  # a's shape, b's shape, axes, bias shape (None: no bias)
    ((2, 3, 4), (4, 5), 1, (5,)),
    ((2, 3, 4), (4, 2, 5), 1, (2, 5)),
    ((2, 3, 4), (4, 2, 5), 1, (2, 1)),      # a bias that broadcasts inside the result
    ((2, 3, 4, 5), (4, 5, 6), 2, (6,)),
    ((3, 4), (3, 4), 2, ()),                # everything contracted: a scalar
    ((2, 3), (4,), 0, (3, 4)),              # nothing contracted: an outer product
    ((0, 4), (4, 2), 1, (2,)),              # an empty batch
    ((3,), (3, 2), 1, None),
]


@pytest.mark.parametrize("sa, sb, n, bias_shape", CASES)
def test_matches_numpy_tensordot_and_finite_differences(sa, sb, n, bias_shape, rng, device):
    arrays = [rng.standard_normal(sa), rng.standard_normal(sb)]
    if bias_shape is not None:
        arrays.append(rng.standard_normal(bias_shape))
    inputs = [tm.Tensor(a, requires_grad=True, device=device) for a in arrays]
    fn = (lambda a, b: tm.tensordot(a, b, n)) if bias_shape is None else \
        (lambda a, b, c: tm.tensordot(a, b, n, bias=c))
    out = fn(*inputs)
    want = np.tensordot(arrays[0], arrays[1], n) + (0 if bias_shape is None else arrays[2])
    assert out.shape == want.shape and out.device == device
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-12, atol=1e-12)
    assert tm.gradcheck(fn, inputs)
    assert tm.gradgradcheck(fn, inputs)


def test_gradients_equal_numpy_formulas(rng):
    """d a = g . b over b's free axes, d b = a . g over a's free axes, d bias = sum of g."""
    a, b, c = rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 2, 5)), rng.standard_normal((2, 5))
    g = rng.standard_normal((2, 3, 2, 5))
    ts = [tm.Tensor(v, requires_grad=True) for v in (a, b, c)]
    tm.tensordot(*ts[:2], 1, bias=ts[2]).backward(g)
    np.testing.assert_allclose(ts[0].grad, np.einsum("btuv,cuv->btc", g, b), rtol=1e-12)
    np.testing.assert_allclose(ts[1].grad, np.einsum("btc,btuv->cuv", a, g), rtol=1e-12)
    np.testing.assert_allclose(ts[2].grad, g.sum(axis=(0, 1)), rtol=1e-12)


@pytest.mark.parametrize("wanted", [(True, False), (False, True), (True, True)])
def test_only_the_wanted_gradients_are_formed(wanted, rng):
    a = tm.Tensor(rng.standard_normal((3, 4)), requires_grad=wanted[0])
    b = tm.Tensor(rng.standard_normal((4, 2)), requires_grad=wanted[1])
    tm.tensordot(a, b, 1).sum().backward()
    assert (a.grad is not None) == wanted[0] and (b.grad is not None) == wanted[1]
    if wanted[0]:
        np.testing.assert_allclose(a.grad, np.ones((3, 2)) @ b.data.T)
    if wanted[1]:
        np.testing.assert_allclose(b.grad, a.data.T @ np.ones((3, 2)))


def test_non_contiguous_operands(rng):
    a = rng.standard_normal((4, 3, 2)).transpose(2, 1, 0)  # (2, 3, 4), strided
    b = rng.standard_normal((5, 4)).T                      # (4, 5), F-ordered
    ta, tb = tm.Tensor(a, requires_grad=True), tm.Tensor(b, requires_grad=True)
    np.testing.assert_allclose(tm.tensordot(ta, tb, 1).numpy(), np.tensordot(a, b, 1), rtol=1e-12)
    assert tm.gradcheck(lambda x, y: tm.tensordot(x, y, 1), [ta, tb])


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_dtype_is_kept(dtype, rng):
    a = tm.Tensor(rng.standard_normal((2, 3)), dtype=dtype, requires_grad=True)
    b = tm.Tensor(rng.standard_normal((3, 4)), dtype=dtype, requires_grad=True)
    c = tm.Tensor(rng.standard_normal((4,)), dtype=dtype, requires_grad=True)
    out = tm.tensordot(a, b, 1, bias=c)
    assert out.dtype == dtype
    out.sum().backward()
    assert a.grad.dtype == b.grad.dtype == c.grad.dtype == np.dtype(dtype)


def test_a_wider_bias_widens_the_result_as_numpy_does(rng):
    a, b = tm.Tensor(rng.standard_normal((2, 3)), dtype="float32"), tm.Tensor(rng.standard_normal((3, 4)), dtype="float32")
    bias = tm.Tensor(rng.standard_normal(4), requires_grad=True)  # float64
    out = tm.tensordot(a, b, 1, bias=bias)
    assert out.dtype == np.float64
    out.sum().backward()
    assert bias.grad.dtype == np.float64
    np.testing.assert_allclose(bias.grad, np.full(4, 2.0))


@pytest.mark.parametrize("args, error, words", [
    (((2, 3), (3, 4), (1,)), TypeError, "axes must be an int"),
    (((2, 3), (3, 4), True), TypeError, "axes must be an int"),
    (((2, 3), (3, 4), 1.0), TypeError, "axes must be an int"),
    (((2, 3), (3, 4), -1), ValueError, "between 0 and"),
    (((2, 3), (3, 4), 3), ValueError, "between 0 and"),
    (((2, 3), (4, 3), 1), ValueError, "must equal the first 1 axes of b"),
])
def test_bad_arguments_name_what_is_wrong(args, error, words, rng):
    sa, sb, axes = args
    with pytest.raises(error, match=words):
        tm.tensordot(tm.Tensor(rng.standard_normal(sa)), tm.Tensor(rng.standard_normal(sb)), axes)


def test_a_bias_that_does_not_broadcast_is_refused_before_any_work(rng):
    a, b = tm.Tensor(rng.standard_normal((2, 3)), requires_grad=True), tm.Tensor(rng.standard_normal((3, 4)))
    with pytest.raises(ValueError, match=r"tensordot: bias of shape \(3,\) does not broadcast to shape \(2, 4\)"):
        tm.tensordot(a, b, 1, bias=np.zeros(3))


@pytest.mark.parametrize("equation, axes", [
    ("abc,cde->abde", 1), ("abcd,cde->abe", 2), ("...b,bc->...c", 1), ("ab,bc->ac", 1),
    ("abcd,def->abcef", 1), ("abcd,cd->ab", 2),
    ("ab...,bc->ac...", None),   # the contracted axis is not the input's last
    ("abc,bd->abd", None),       # b is kept, not contracted: not a tensordot
    ("abc,cde->abed", None),     # the output's letters are reordered
    ("abc,dce->abde", None),     # the kernel's contracted letter is not its first
])
def test_which_equations_are_a_tensordot(equation, axes):
    assert tensordot_axes(equation) == axes


@pytest.mark.parametrize("equation, out_shape, bias_axes, in_shape", [
    ("abc,cde->abde", (None, 2, 3), "de", (2, 4, 5)),
    ("abcd,cde->abe", (None, 6), "e", (2, 3, 2, 4)),
    ("...b,bc->...c", (3,), "c", (2, 4, 5)),
    ("ab...,bc->ac...", (3,), "c", (2, 4, 5)),  # the general einsum path
])
@tm.use_kernels(True)
def test_einsum_dense_gives_the_einsum_answer_on_either_path(equation, out_shape, bias_axes, in_shape, rng):
    layer = EinsumDense(equation, out_shape, bias_axes=bias_axes, bias_initializer="random_normal",
                        dtype="float64")
    x = tm.Tensor(rng.standard_normal(in_shape), requires_grad=True)
    out = layer(x)
    assert (out._ctx.__class__ is TensorDot) == (tensordot_axes(equation) is not None)
    want = np.einsum(equation, x.data, layer.kernel.data) + layer.bias.data
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-12, atol=1e-12)
    R = rng.standard_normal(want.shape)
    (out * R).sum().backward()
    got = [x.grad, layer.kernel.grad, layer.bias.grad]
    want_grads = tm.grad((tm.einsum(equation, x, layer.kernel) + layer.bias) * R, [x, layer.kernel, layer.bias],
                         grad_outputs=np.ones(want.shape))
    for g, w in zip(got, want_grads):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-12, atol=1e-12)
