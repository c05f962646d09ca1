"""The reverse-mode engine: graph walking, accumulation, memory, grad modes, higher order."""

import gc
import weakref

import numpy as np
import pytest

import tinygrad_mha as tm
from tinygrad_mha.tensor import Function


def T(data, device="cpu", **kw):
    return tm.Tensor(np.asarray(data, dtype=kw.pop("dtype", np.float64)), device=device, **kw)


def host(array):
    """A backend array (numpy or cupy) as a NumPy array."""
    return tm.Tensor(array).numpy()


# ---------------------------------------------------------------- deep graphs
def test_100000_op_chain_backpropagates():
    n, c = 100_000, 1.0000001
    x = T([1.0, 2.0], requires_grad=True)
    y = x
    for _ in range(n):
        y = y * c
    y.sum().backward()
    np.testing.assert_allclose(x.grad, np.full(2, c ** n), rtol=1e-9)


def test_deep_chain_with_create_graph():
    n = 5_000  # 15,000 ops, and a recorded backward graph deeper still

    def first_derivative(x0):  # forward-mode reference in plain Python
        y, d = x0, 1.0
        for _ in range(n):
            t = np.tanh(y)
            y, d = y + 0.001 * t, (1 + 0.001 * (1 - t * t)) * d
        return d

    x = T(0.3, requires_grad=True)
    y = x
    for _ in range(n):
        y = y + y.tanh() * 0.001
    (g,) = tm.grad(y, [x], create_graph=True)
    assert g.requires_grad
    (h,) = tm.grad(g, [x])
    assert g.item() == pytest.approx(first_derivative(0.3), rel=1e-9)
    eps = 1e-5
    numeric = (first_derivative(0.3 + eps) - first_derivative(0.3 - eps)) / (2 * eps)
    assert abs(numeric) > 0.1
    assert h.item() == pytest.approx(numeric, rel=1e-4)


def test_wide_graph_and_shared_subexpressions():
    x_np = np.array([0.3, -1.2, 2.0])
    x = T(x_np, requires_grad=True)
    a, b = x * 2, x * 3
    (a * b + a + b).sum().backward()  # 6x^2 + 5x
    np.testing.assert_allclose(x.grad, 12 * x_np + 5)


# ---------------------------------------------------------------- accumulation and retain_graph
def test_gradients_accumulate_across_backward_calls(device):
    x_np = np.array([1.0, -2.0, 3.0])
    x = T(x_np, device, requires_grad=True)
    (x * x).sum().backward()
    np.testing.assert_allclose(host(x.grad), 2 * x_np)
    (x * x).sum().backward()
    np.testing.assert_allclose(host(x.grad), 4 * x_np)
    x.zero_grad()
    assert x.grad is None
    (x * 3).sum().backward()
    np.testing.assert_allclose(host(x.grad), 3.0)


def test_backward_twice_without_retain_graph_raises():
    x = T([1.0, 2.0], requires_grad=True)
    y = (x.exp() * x).sum()
    y.backward()
    first = x.grad.copy()
    with pytest.raises(RuntimeError, match=r"(?i)second time.*retain_graph=True"):
        y.backward()
    np.testing.assert_array_equal(x.grad, first)  # the failed call changed nothing


def test_backward_twice_with_retain_graph_doubles(device):
    x_np = np.array([1.0, 2.0])
    x = T(x_np, device, requires_grad=True)
    y = (x.exp() * x).sum()
    y.backward(retain_graph=True)
    y.backward(retain_graph=True)
    np.testing.assert_allclose(host(x.grad), 2 * (np.exp(x_np) * (1 + x_np)), rtol=1e-12)
    y.backward()  # the last call may free the graph
    np.testing.assert_allclose(host(x.grad), 3 * (np.exp(x_np) * (1 + x_np)), rtol=1e-12)
    with pytest.raises(RuntimeError):
        y.backward()


def test_shared_subgraph_freed_by_the_first_backward():
    x = T([1.0, 2.0], requires_grad=True)
    h = x * 2
    h.sum().backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        (h * 3).sum().backward()


# ---------------------------------------------------------------- memory
def test_intermediate_is_freed_after_backward_and_del():
    x = T(np.ones(3), requires_grad=True)
    middle = x.exp()
    ref = weakref.ref(middle.data)
    out = (middle * 2).sum()
    del middle
    assert ref() is not None  # the graph keeps its values alive for backward (exp's gradient reads them)
    out.backward()
    del out
    assert ref() is None  # freed by reference counting alone, no cycle left behind
    gc.collect()
    assert ref() is None


def test_graph_without_backward_is_freed_on_del():
    x = T(np.ones(3), requires_grad=True)
    middle = x.exp()
    ref = weakref.ref(middle)
    out = tm.softmax(middle * 2).sum()
    del middle, out
    assert ref() is None


def test_function_saved_state_is_cleared_after_backward():
    x = T(np.random.default_rng(0).standard_normal((2, 3)), requires_grad=True)
    y = tm.softmax(x, axis=(0, 1))
    node = y._ctx
    assert node is not None and node.inputs[0] is x and hasattr(node, "axes")
    y.backward(np.ones((2, 3)))
    assert node.inputs is None
    assert not hasattr(node, "axes")


def test_retain_graph_keeps_saved_state():
    x = T(np.ones((2, 3)), requires_grad=True)
    y = x.max(axis=1)
    y.backward(np.ones(2), retain_graph=True)
    assert y._ctx.inputs[0] is x and hasattr(y._ctx, "axes")


def test_nothing_saved_when_no_input_requires_grad():
    a = T(np.ones(3))
    ref = weakref.ref(a)
    b = (a * 2).exp()
    assert b._ctx is None and not b.requires_grad
    del a
    assert ref() is None  # no graph node holds on to the input


# ---------------------------------------------------------------- grad modes
def test_no_grad_records_nothing(device):
    x = T([1.0, 2.0], device, requires_grad=True)
    with tm.no_grad():
        y = (x * 2).exp().sum()
    assert y._ctx is None and not y.requires_grad
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()
    assert (x * 2).requires_grad  # recording is back on afterwards


def test_no_grad_as_decorator():
    x = T([1.0, 2.0], requires_grad=True)

    @tm.no_grad()
    def infer(t):
        return (t * t).sum()

    y = infer(x)
    assert y._ctx is None and not y.requires_grad
    assert (x * x).sum().requires_grad


def test_no_grad_restores_state_after_an_exception():
    x = T([1.0], requires_grad=True)
    with pytest.raises(KeyError):
        with tm.no_grad():
            raise KeyError("boom")
    assert (x * 2).requires_grad

    @tm.no_grad()
    def failing():
        raise ValueError("boom")

    with pytest.raises(ValueError):
        failing()
    assert (x * 2).requires_grad


def test_recursive_no_grad_decorated_function_restores_state():
    x = T([1.0], requires_grad=True)

    @tm.no_grad()
    def countdown(n, t):
        assert not (t * 2).requires_grad
        return t if n == 0 else countdown(n - 1, t * 2)

    assert not countdown(3, x).requires_grad
    assert (x * 2).requires_grad  # the outermost call restored recording

    @tm.enable_grad()
    def recorded(n, t):
        return t if n == 0 else recorded(n - 1, t * 2)

    with tm.no_grad():
        assert recorded(2, x).requires_grad
        assert not (x * 2).requires_grad


def test_one_no_grad_object_reused_in_nested_blocks():
    x = T([1.0], requires_grad=True)
    quiet = tm.no_grad()
    with quiet:
        with quiet:
            pass
        assert not (x * 2).requires_grad
    assert (x * 2).requires_grad


def test_nested_no_grad_and_enable_grad():
    x = T([1.0], requires_grad=True)
    with tm.no_grad():
        with tm.no_grad():
            assert not (x * 2).requires_grad
        assert not (x * 2).requires_grad  # the inner block restored "off", not "on"
        with tm.enable_grad():
            assert (x * 2).requires_grad
        assert not (x * 2).requires_grad
    assert (x * 2).requires_grad


def test_nothing_recorded_when_no_input_requires_grad():
    y = T([1.0, 2.0]) * T([3.0, 4.0])
    assert y._ctx is None and not y.requires_grad
    with pytest.raises(RuntimeError):
        y.sum().backward()


def test_failing_backward_restores_grad_mode():
    class Broken(Function):
        def forward(self, a):
            return a * 1

        def backward(self, g):
            raise ArithmeticError("broken backward")

    x = T([1.0], requires_grad=True)
    with pytest.raises(ArithmeticError):
        Broken.apply(x).sum().backward()
    assert (x * 2).requires_grad


# ---------------------------------------------------------------- higher order
def test_second_derivative_of_cube_via_grad():
    x_np = np.array([-1.5, 0.5, 2.0])
    x = T(x_np, requires_grad=True)
    (g,) = tm.grad((x ** 3).sum(), [x], create_graph=True)
    np.testing.assert_allclose(g.numpy(), 3 * x_np ** 2)
    assert g.requires_grad
    (h,) = tm.grad(g.sum(), [x])
    np.testing.assert_allclose(h.numpy(), 6 * x_np)
    assert x.grad is None


def test_second_derivative_via_backward_create_graph():
    x_np = np.array([1.0, 2.0])
    x = T(x_np, requires_grad=True)
    y = x * x  # a non-leaf inside the graph: its saved state must survive the first backward
    (y * y).sum().backward(create_graph=True)  # d/dx x^4 = 4x^3
    np.testing.assert_allclose(x.grad, 4 * x_np ** 3)
    first = x._grad
    assert first.requires_grad
    x.zero_grad()
    first.sum().backward()
    np.testing.assert_allclose(x.grad, 12 * x_np ** 2)


def test_third_derivative():
    x_np = np.array([0.3, -0.7])
    x = T(x_np, requires_grad=True)
    y = x.tanh().sum()
    (g1,) = tm.grad(y, x, create_graph=True)
    (g2,) = tm.grad(g1.sum(), x, create_graph=True)
    (g3,) = tm.grad(g2.sum(), x)
    t = np.tanh(x_np)
    np.testing.assert_allclose(g1.numpy(), 1 - t ** 2)
    np.testing.assert_allclose(g2.numpy(), -2 * t * (1 - t ** 2))
    np.testing.assert_allclose(g3.numpy(), -2 * (1 - t ** 2) ** 2 + 4 * t ** 2 * (1 - t ** 2))


def _hvp_problem():
    rng = np.random.default_rng(1)
    n = 4
    A, w = rng.standard_normal((n, n)), rng.standard_normal(n)
    x, v = rng.standard_normal(n), rng.standard_normal(n)

    def f_np(z):
        return np.sum(w * np.tanh(z)) + z @ A @ z + np.prod(z[:3])

    def f(z):
        return (T(w) * z.tanh()).sum() + z @ (T(A) @ z) + z[0] * z[1] * z[2]

    return f_np, f, x, v


def test_hessian_vector_product_against_finite_differences():
    f_np, f, x_np, v = _hvp_problem()
    x = T(x_np, requires_grad=True)
    (g,) = tm.grad(f(x), [x], create_graph=True)
    (hv,) = tm.grad((g * T(v)).sum(), [x])
    # Hessian from central second differences of f's values alone
    n, h = len(x_np), 1e-4
    H = np.zeros((n, n))
    e = np.eye(n) * h
    for i in range(n):
        for j in range(n):
            H[i, j] = (f_np(x_np + e[i] + e[j]) - f_np(x_np + e[i] - e[j])
                       - f_np(x_np - e[i] + e[j]) + f_np(x_np - e[i] - e[j])) / (4 * h * h)
    np.testing.assert_allclose(hv.numpy(), H @ v, rtol=1e-5, atol=1e-6)


def test_gradgradcheck_composite(device):
    rng = np.random.default_rng(2)
    a = tm.Tensor(rng.standard_normal((3, 4)), requires_grad=True, device=device)
    b = tm.Tensor(rng.standard_normal((4, 2)), requires_grad=True, device=device)

    def fn(a, b):
        return tm.softmax((a @ b).tanh() * a.sum(axis=1, keepdims=True), axis=0) + (a.exp() ** 2).mean()

    assert tm.gradcheck(fn, (a, b))
    assert tm.gradgradcheck(fn, (a, b))


# ---------------------------------------------------------------- tm.grad
def test_grad_returns_zeros_for_unused_inputs_and_leaves_dot_grad_alone(device):
    a = T([1.0, 2.0], device, requires_grad=True)
    b = T([[1.0, 2.0, 3.0]], device, requires_grad=True)
    b.grad = np.full((1, 3), 7.0)
    ga, gb = tm.grad((a * a).sum(), [a, b])
    np.testing.assert_allclose(ga.numpy(), [2.0, 4.0])
    np.testing.assert_array_equal(gb.numpy(), np.zeros((1, 3)))
    assert gb.shape == b.shape and gb.device == device
    assert a.grad is None
    np.testing.assert_array_equal(host(b.grad), 7.0)


def test_grad_with_grad_outputs_and_intermediate_inputs():
    x_np = np.array([1.0, -2.0])
    x = T(x_np, requires_grad=True)
    y = x * 3
    z = y * y
    gy, gx = tm.grad(z, [y, x], grad_outputs=T([1.0, 0.5]))
    np.testing.assert_allclose(gy.numpy(), 2 * (3 * x_np) * [1.0, 0.5])
    np.testing.assert_allclose(gx.numpy(), 18 * x_np * [1.0, 0.5])
    assert x.grad is None and y.grad is None


def test_grad_of_several_outputs_sums():
    x = T([1.0, 2.0], requires_grad=True)
    (g,) = tm.grad([(x * x).sum(), (x * 3).sum()], [x])
    np.testing.assert_allclose(g.numpy(), 2 * np.array([1.0, 2.0]) + 3)


def test_grad_rejects_inputs_without_requires_grad():
    x = T([1.0], requires_grad=True)
    with pytest.raises(ValueError, match="requires_grad"):
        tm.grad((x * 2).sum(), [T([1.0])])


# ---------------------------------------------------------------- retain_grad, seeds, errors
def test_retain_grad_on_non_leaf():
    x_np = np.array([1.0, 2.0])
    x = T(x_np, requires_grad=True)
    h = (x * 3).retain_grad()
    other = x * 5
    (h * h + other).sum().backward()
    np.testing.assert_allclose(h.grad, 2 * 3 * x_np)
    np.testing.assert_allclose(x.grad, 18 * x_np + 5)
    assert other.grad is None  # non-leaves keep no gradient unless asked


def test_backward_on_non_scalar_needs_grad():
    x = T(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        (x * 2).backward()
    assert x.grad is None


def test_backward_with_wrong_shaped_grad():
    x = T(np.ones((2, 3)), requires_grad=True)
    y = x * 2
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        y.backward(np.ones((3, 2)))
    assert x.grad is None
    y.backward(np.ones((2, 3)))  # the failed call did not free the graph
    np.testing.assert_allclose(x.grad, 2.0)


def test_backward_of_single_element_non_scalar():
    x = T(np.ones((1, 1)), requires_grad=True)
    (x * 4).backward()
    np.testing.assert_allclose(x.grad, [[4.0]])


def test_backward_on_tensor_without_grad():
    with pytest.raises(RuntimeError, match="does not require grad"):
        T([1.0]).backward()


def test_explicit_grad_is_used(device):
    x_np = np.array([1.0, 2.0, 3.0])
    x = T(x_np, device, requires_grad=True)
    g = np.array([0.5, -1.0, 2.0])
    x.exp().backward(tm.Tensor(g, device=device))
    np.testing.assert_allclose(host(x.grad), g * np.exp(x_np))


# ---------------------------------------------------------------- dtypes and operands
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_low_precision_dtype_is_preserved(dtype, device):
    x_np = np.array([[0.5, -1.0], [2.0, 0.25]])
    x = tm.Tensor(x_np.astype(dtype), requires_grad=True, device=device)
    y = ((x * 2.5 + 1) / 3.0 - x ** 2).tanh() @ x
    y = tm.softmax(y).sum() + x.abs().mean() + (2.0 ** x).sum() - x.var()
    assert y.dtype == dtype
    y.backward()
    assert x.grad.dtype == dtype
    ref = tm.Tensor(x_np, requires_grad=True)
    z = ((ref * 2.5 + 1) / 3.0 - ref ** 2).tanh() @ ref
    (tm.softmax(z).sum() + ref.abs().mean() + (2.0 ** ref).sum() - ref.var()).backward()
    tol = 5e-2 if dtype == np.float16 else 1e-5
    np.testing.assert_allclose(host(x.grad).astype(np.float64), ref.grad, rtol=tol, atol=tol)


@pytest.mark.parametrize("seed", [np.ones(3), np.ones(3, dtype=np.int64), [1.0, 1.0, 1.0]])
def test_upstream_gradient_takes_the_output_dtype(seed):
    x = tm.Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    x.backward(seed)  # a leaf as the root: its .grad is the seed itself
    assert x.grad.dtype == np.float32
    h = (x * 2).retain_grad()
    h.backward(seed)
    assert h.grad.dtype == np.float32 and x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad, 3.0)


def test_gradient_cast_back_to_input_dtype():
    x = tm.Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    y = x * np.full(3, 2.0)  # a float64 array promotes the result, as in NumPy
    assert y.dtype == np.float64
    y.sum().backward()
    assert x.grad.dtype == np.float32


@pytest.mark.parametrize("op", [lambda t: t + 2, lambda t: 2 + t, lambda t: t * 0.5, lambda t: 0.5 * t,
                                lambda t: t - 1.5, lambda t: 1.5 - t, lambda t: t / 3, lambda t: 3 / t,
                                lambda t: t ** 2, lambda t: 2.0 ** t, lambda t: -t])
def test_python_scalars_do_not_upcast(op):
    t = tm.Tensor(np.array([1.0, 2.0], dtype=np.float32))
    assert op(t).dtype == np.float32
    t16 = tm.Tensor(np.array([1.0, 2.0], dtype=np.float16))
    assert op(t16).dtype == np.float16


@pytest.mark.parametrize("op, ref", [
    (lambda a, t: a + t, lambda a, b: a + b), (lambda a, t: a - t, lambda a, b: a - b),
    (lambda a, t: a * t, lambda a, b: a * b), (lambda a, t: a / t, lambda a, b: a / b),
    (lambda a, t: a ** t, lambda a, b: a ** b), (lambda a, t: a @ t, lambda a, b: a @ b),
])
def test_ndarray_with_tensor_returns_tensor(op, ref):
    rng = np.random.default_rng(3)
    a, b = rng.uniform(0.5, 2, (3, 3)), rng.uniform(0.5, 2, (3, 3))
    t = tm.Tensor(b, requires_grad=True)
    out = op(a, t)
    assert isinstance(out, tm.Tensor) and out.requires_grad
    np.testing.assert_allclose(out.numpy(), ref(a, b), rtol=1e-12)


@pytest.mark.parametrize("name", ["lt", "le", "gt", "ge", "eq", "ne"])
def test_comparisons_return_bool_tensors_without_grad(name):
    a, b = np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 2.0])
    t = tm.Tensor(a, requires_grad=True)
    import operator
    op = getattr(operator, name)
    for out in (op(t, tm.Tensor(b)), op(t, b), op(t, 2.0)):
        assert isinstance(out, tm.Tensor)
        assert out.dtype == bool and not out.requires_grad and out._ctx is None
        np.testing.assert_array_equal(out.numpy(), op(a, b))


def test_getitem_with_duplicate_indices_accumulates(device):
    x = tm.Tensor(np.arange(5.0), requires_grad=True, device=device)
    idx = np.array([0, 3, 0, 0, 4, 3])
    g = np.arange(1.0, 7.0)
    x[idx].backward(tm.Tensor(g, device=device))
    expected = np.zeros(5)
    np.add.at(expected, idx, g)
    np.testing.assert_allclose(host(x.grad), expected)


def test_getitem_2d_integer_arrays_with_duplicates():
    x_np = np.random.default_rng(4).standard_normal((3, 4))
    x = tm.Tensor(x_np, requires_grad=True)
    rows, cols = np.array([[0, 2], [0, 0]]), np.array([[1, 1], [1, 3]])
    out = x[rows, cols]
    np.testing.assert_array_equal(out.numpy(), x_np[rows, cols])
    g = np.random.default_rng(5).standard_normal(out.shape)
    out.backward(g)
    expected = np.zeros_like(x_np)
    np.add.at(expected, (rows, cols), g)
    np.testing.assert_allclose(x.grad, expected)
    assert tm.gradcheck(lambda a: a[rows, cols], (tm.Tensor(x_np, requires_grad=True),))


@pytest.mark.parametrize("sa, sb", [((4,), (4,)), ((4,), (4, 3)), ((3, 4), (4,)), ((2, 3, 4), (4,)),
                                    ((4,), (2, 4, 3)), ((2, 1, 3, 4), (5, 4, 2)), ((3, 4), (2, 4, 5))])
def test_matmul_against_numpy(sa, sb, device):
    rng = np.random.default_rng(6)
    a_np, b_np = rng.standard_normal(sa), rng.standard_normal(sb)
    a = tm.Tensor(a_np, requires_grad=True, device=device)
    b = tm.Tensor(b_np, requires_grad=True, device=device)
    out = tm.matmul(a, b)
    expected = np.matmul(a_np, b_np)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12)
    assert tm.gradcheck(tm.matmul, (a, b))


def test_where_with_python_scalars_and_tensors():
    cond = np.array([True, False, True])
    np.testing.assert_array_equal(tm.where(cond, 1.0, 2.0).numpy(), np.where(cond, 1.0, 2.0))
    x = tm.Tensor(np.array([1.0, 2.0, 3.0], dtype=np.float32), requires_grad=True)
    y = tm.where(x > 1.5, x * 2, 0.0)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y.numpy(), np.where(x.numpy() > 1.5, x.numpy() * 2, 0.0))
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 2.0, 2.0])
