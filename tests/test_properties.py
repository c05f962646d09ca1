"""Property tests: random broadcast-compatible shapes and random reduction axes.

Forward values are compared with NumPy; gradients with formulas written here in plain NumPy
(an independent reference: none of it goes through tinygrad_mha), and on small shapes with
finite differences through ``tm.gradcheck``.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_mha as tm

SETTINGS = settings(max_examples=40, deadline=None)

finite = st.floats(-5, 5, allow_nan=False, allow_infinity=False, width=64)
away_from_zero = st.one_of(st.floats(-4, -0.5), st.floats(0.5, 4))


def unbroadcast(g, shape):
    """Sum a broadcast gradient back down to ``shape`` (reference, pure NumPy)."""
    g = np.asarray(g)
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for i, n in enumerate(shape):
        if n == 1 and g.shape[i] != 1:
            g = g.sum(axis=i, keepdims=True)
    return g


@st.composite
def broadcast_pair(draw, b_elements=finite):
    shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3,
                                                    min_side=1, max_side=4))
    sa, sb = shapes.input_shapes
    a = draw(hnp.arrays(np.float64, sa, elements=finite))
    b = draw(hnp.arrays(np.float64, sb, elements=b_elements))
    g = draw(hnp.arrays(np.float64, shapes.result_shape, elements=finite))
    return a, b, g


# op name -> (forward in NumPy, gradient w.r.t. a, gradient w.r.t. b), before unbroadcasting
BINARY = {
    "add": (lambda a, b: a + b, lambda a, b, g: g, lambda a, b, g: g),
    "sub": (lambda a, b: a - b, lambda a, b, g: g, lambda a, b, g: -g),
    "mul": (lambda a, b: a * b, lambda a, b, g: g * b, lambda a, b, g: g * a),
    "div": (lambda a, b: a / b, lambda a, b, g: g / b, lambda a, b, g: -g * a / b ** 2),
}
OPERATORS = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y,
             "mul": lambda x, y: x * y, "div": lambda x, y: x / y}


def _check_binary(name, a, b, g, device):
    ref, ref_ga, ref_gb = BINARY[name]
    ta = tm.Tensor(a, requires_grad=True, device=device)
    tb = tm.Tensor(b, requires_grad=True, device=device)
    out = OPERATORS[name](ta, tb)
    expected = ref(a, b)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12)
    out.backward(tm.Tensor(g, device=device))
    np.testing.assert_allclose(tm.Tensor(ta.grad).numpy(), unbroadcast(ref_ga(a, b, g), a.shape),
                               rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(tm.Tensor(tb.grad).numpy(), unbroadcast(ref_gb(a, b, g), b.shape),
                               rtol=1e-10, atol=1e-10)
    assert ta.grad.shape == a.shape and tb.grad.shape == b.shape


@pytest.mark.parametrize("name", ["add", "sub", "mul"])
@SETTINGS
@given(data=broadcast_pair())
def test_binary_broadcasting(name, data):
    _check_binary(name, *data, device="cpu")


@SETTINGS
@given(data=broadcast_pair(b_elements=away_from_zero))
def test_division_broadcasting(data):
    _check_binary("div", *data, device="cpu")


@pytest.mark.parametrize("name", ["add", "sub", "mul", "div"])
def test_binary_broadcasting_on_device(name, device):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 1, 3))
    b = rng.uniform(0.5, 2.0, (4, 1))
    g = rng.standard_normal((2, 4, 3))
    _check_binary(name, a, b, g, device)


@settings(max_examples=25, deadline=None)
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3,
                                                min_side=1, max_side=3),
       seed=st.integers(0, 2 ** 16), op=st.sampled_from(sorted(BINARY)))
def test_binary_gradcheck_small(shapes, seed, op):
    rng = np.random.default_rng(seed)
    sa, sb = shapes.input_shapes
    a = tm.Tensor(rng.standard_normal(sa), requires_grad=True)
    b = tm.Tensor(rng.uniform(0.5, 2.0, sb) * rng.choice([-1.0, 1.0], sb), requires_grad=True)
    assert tm.gradcheck(OPERATORS[op], (a, b))


@SETTINGS
@given(data=broadcast_pair())
def test_scalar_operands_both_orders(data):
    a, _, _ = data
    s = 1.5
    t = tm.Tensor(a, requires_grad=True)
    for out, expected in [(t + s, a + s), (s + t, s + a), (t - s, a - s), (s - t, s - a),
                          (t * s, a * s), (s * t, s * a), (t / s, a / s)]:
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12)


# ---------------------------------------------------------------- reductions
@st.composite
def reduction_case(draw):
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4))
    x = draw(hnp.arrays(np.float64, shape, elements=finite))
    ndim = len(shape)
    kind = draw(st.sampled_from(["none", "int", "tuple"] if ndim else ["none", "tuple"]))
    if kind == "none":
        axis = None
    elif kind == "int":
        axis = draw(st.integers(-ndim, ndim - 1))
    elif ndim == 0:
        axis = ()
    else:
        axis = tuple(draw(st.lists(st.integers(0, ndim - 1), unique=True, max_size=ndim)))
        if axis and draw(st.booleans()):  # negative spellings are accepted too
            axis = tuple(a - ndim for a in axis)
    keepdims = draw(st.booleans())
    return x, axis, keepdims


def _reduced_axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else axis
    return tuple(sorted(a % ndim for a in axes))


def _expand(g, shape, axes):
    """Upstream gradient of a reduction, broadcast back over the reduced axes."""
    kept = tuple(1 if i in axes else n for i, n in enumerate(shape))
    return np.broadcast_to(np.reshape(g, kept), shape)


def _reference_grad(name, x, axes, g, ddof=0):
    count = int(np.prod([x.shape[i] for i in axes])) if axes else 1
    up = _expand(g, x.shape, axes)
    if name == "sum":
        return up
    if name == "mean":
        return up / count
    if name == "var":
        return up * 2 * (x - x.mean(axis=axes, keepdims=True)) / (count - ddof)
    # max/min: the gradient goes to the extreme entries, shared equally between ties
    extreme = (np.max if name == "max" else np.min)(x, axis=axes, keepdims=True)
    hit = (x == extreme).astype(np.float64)
    return up * hit / hit.sum(axis=axes, keepdims=True)


@pytest.mark.parametrize("name", ["sum", "mean", "max", "min", "var"])
@SETTINGS
@given(case=reduction_case(), seed=st.integers(0, 2 ** 16))
def test_reductions(name, case, seed):
    x, axis, keepdims = case
    t = tm.Tensor(x, requires_grad=True)
    out = getattr(t, name)(axis=axis, keepdims=keepdims)
    expected = getattr(np, name)(x, axis=axis, keepdims=keepdims)
    assert out.shape == np.shape(expected)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-10)
    g = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(g)
    axes = _reduced_axes(axis, x.ndim)
    np.testing.assert_allclose(t.grad, _reference_grad(name, x, axes, g), rtol=1e-9, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=2, max_side=3),
       seed=st.integers(0, 2 ** 16), keepdims=st.booleans(),
       name=st.sampled_from(["sum", "mean", "max", "min", "var"]), data=st.data())
def test_reductions_gradcheck_small(shape, seed, keepdims, name, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = tm.Tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=True)
    assert tm.gradcheck(lambda a: getattr(a, name)(axis=axis, keepdims=keepdims), (x,))


def test_var_ddof_matches_numpy():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4))
    t = tm.Tensor(x, requires_grad=True)
    out = t.var(axis=1, ddof=1)
    np.testing.assert_allclose(out.numpy(), np.var(x, axis=1, ddof=1), rtol=1e-12)
    g = rng.standard_normal(3)
    out.backward(g)
    np.testing.assert_allclose(t.grad, _reference_grad("var", x, (1,), g, ddof=1), rtol=1e-10)


def test_max_ties_share_the_gradient():
    x = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])
    t = tm.Tensor(x, requires_grad=True)
    t.max(axis=1).sum().backward()
    np.testing.assert_allclose(t.grad, _reference_grad("max", x, (1,), np.ones(2)))
    assert np.isclose(t.grad.sum(), 2.0)


@pytest.mark.parametrize("name", ["sum", "mean", "max", "min", "var"])
def test_reductions_on_device(name, device):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4))
    t = tm.Tensor(x, requires_grad=True, device=device)
    out = getattr(t, name)(axis=(0, 2), keepdims=True)
    np.testing.assert_allclose(out.numpy(), getattr(np, name)(x, axis=(0, 2), keepdims=True), rtol=1e-12)
    g = rng.standard_normal(out.shape)
    out.backward(tm.Tensor(g, device=device))
    np.testing.assert_allclose(tm.Tensor(t.grad).numpy(), _reference_grad(name, x, (0, 2), g), rtol=1e-10)


# ---------------------------------------------------------------- matmul with batch broadcasting
@st.composite
def matmul_case(draw):
    batch = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=2,
                                                   min_side=1, max_side=3))
    n, k, m = (draw(st.integers(1, 4)) for _ in range(3))
    a_vec, b_vec = draw(st.booleans()), draw(st.booleans())
    sa = (k,) if a_vec else batch.input_shapes[0] + (n, k)
    sb = (k,) if b_vec else batch.input_shapes[1] + (k, m)
    seed = draw(st.integers(0, 2 ** 16))
    rng = np.random.default_rng(seed)
    return rng.standard_normal(sa), rng.standard_normal(sb), seed


@SETTINGS
@given(case=matmul_case())
def test_matmul_matches_numpy(case):
    a, b, seed = case
    ta, tb = tm.Tensor(a, requires_grad=True), tm.Tensor(b, requires_grad=True)
    out = ta @ tb
    expected = np.matmul(a, b)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-12)
    g = np.random.default_rng(seed + 1).standard_normal(expected.shape)
    out.backward(g)
    # reference: promote 1-D operands to matrices, then dA = g b^T, dB = a^T g, unbroadcast
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    g2 = np.asarray(g)
    if a.ndim == 1:
        g2 = np.expand_dims(g2, -2 if b.ndim > 1 else 0)
    if b.ndim == 1:
        g2 = np.expand_dims(g2, -1)
    ga = unbroadcast(g2 @ np.swapaxes(b2, -1, -2), a2.shape).reshape(a.shape)
    gb = unbroadcast(np.swapaxes(a2, -1, -2) @ g2, b2.shape).reshape(b.shape)
    np.testing.assert_allclose(ta.grad, ga, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(tb.grad, gb, rtol=1e-10, atol=1e-12)
