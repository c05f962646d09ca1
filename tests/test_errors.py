"""Errors: raised early, of the right type, with a message that says what was wrong."""

import importlib.util
import re

import numpy as np
import pytest

import tinygrad_mha as tm
from tinygrad_mha import backend

HAS_CUDA = tm.cuda_available()
HAS_CUPY = importlib.util.find_spec("cupy") is not None


# ---------------------------------------------------------------- construction
@pytest.mark.parametrize("data", [[1, 2], np.arange(3), [True, False], np.array([1], dtype=np.uint8)])
def test_requires_grad_on_integer_or_bool_tensor(data):
    with pytest.raises(TypeError, match="requires_grad"):
        tm.Tensor(data, requires_grad=True)


def test_requires_grad_on_integer_data_cast_to_float_is_fine():
    t = tm.Tensor([1, 2], requires_grad=True, dtype=np.float32)
    assert t.dtype == np.float32 and t.requires_grad


@pytest.mark.parametrize("device", ["tpu", "gpu", "CUDA ", 3, ""])
def test_unknown_device(device):
    with pytest.raises(ValueError, match="device"):
        tm.Tensor([1.0], device=device)
    with pytest.raises(ValueError, match="device"):
        tm.Tensor([1.0]).to(device)


@pytest.mark.skipif(HAS_CUDA, reason="CuPy and a GPU are present")
def test_cuda_without_cupy_or_gpu_is_a_clear_runtime_error():
    t = tm.Tensor([1.0, 2.0], requires_grad=True)
    for make in (lambda: tm.Tensor([1.0], device="cuda"), lambda: t.to("cuda")):
        with pytest.raises(RuntimeError) as info:
            make()
        message = str(info.value)
        assert "cuda" in message
        if HAS_CUPY:  # installed, but no working GPU
            assert "GPU" in message
        else:
            assert re.search(r"(?i)cupy.*not installed", message)
            assert "pip install" in message
    assert t.device == "cpu" and not tm.cuda_available()


@pytest.mark.skipif(not HAS_CUDA, reason="mixing devices needs CuPy and a GPU")
def test_mixing_devices():
    a = tm.Tensor(np.ones(3))
    b = tm.Tensor(np.ones(3), device="cuda")
    for op in (lambda: a + b, lambda: b * a, lambda: tm.einsum("i,i", a, b),
               lambda: tm.concatenate([a, b]), lambda: tm.matmul(a, b)):
        with pytest.raises(ValueError, match="device"):
            op()


@pytest.mark.parametrize("data", ["abc", b"abc", ["a", "b"], None, object(), {"a": 1}])
def test_non_numeric_data(data):
    with pytest.raises(TypeError):
        tm.Tensor(data)


@pytest.mark.parametrize("data", [np.array([1 + 2j]), np.array([1.0], dtype=np.clongdouble)])
def test_complex_data(data):
    with pytest.raises(TypeError, match="complex"):
        tm.Tensor(data)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, "complex64"])
def test_complex_dtype(dtype):
    with pytest.raises(TypeError, match="dtype"):
        tm.Tensor([1.0], dtype=dtype)


@pytest.mark.skipif(np.dtype(np.longdouble).itemsize <= 8, reason="long double is float64 here")
def test_float128():
    with pytest.raises(TypeError, match="float16, float32 or float64"):
        tm.Tensor(np.array([1.0], dtype=np.longdouble))
    with pytest.raises(TypeError, match="float16, float32 or float64"):
        tm.Tensor([1.0], dtype=np.longdouble)
    with pytest.raises(TypeError, match="dtype"):
        tm.Tensor([1.0]).astype(np.longdouble)


@pytest.mark.parametrize("dtype", ["foo", "U3", object])
def test_bad_dtype(dtype):
    with pytest.raises(TypeError, match="dtype"):
        tm.Tensor([1.0], dtype=dtype)


# ---------------------------------------------------------------- shapes
@pytest.mark.parametrize("new", [(4, 2), (7,), (-1, 4), (2, -1, -1), (0, -1)])
def test_reshape_to_wrong_size_names_both_shapes(new):
    t = tm.Tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(ValueError) as info:
        t.reshape(*new)
    message = str(info.value)
    assert "(2, 3)" in message
    assert str(tuple(new)) in message


@pytest.mark.parametrize("sa, sb", [((2, 3), (2, 3)), ((3,), (4,)), ((2, 3), (4,)), ((4,), (3, 2)),
                                    ((2, 2, 3), (3, 3, 4))])
def test_matmul_shape_mismatch_names_shapes(sa, sb):
    a, b = tm.Tensor(np.ones(sa)), tm.Tensor(np.ones(sb))
    with pytest.raises(ValueError) as info:
        a @ b
    message = str(info.value)
    assert str(sa) in message and str(sb) in message


def test_matmul_of_0d_operand():
    with pytest.raises(ValueError, match=r"\(\)"):
        tm.matmul(tm.Tensor(2.0), tm.Tensor(np.ones(3)))


def test_broadcast_mismatch_names_shapes():
    with pytest.raises(ValueError, match=r"\(?2, ?3\)?.*\(?4,?\)?"):
        tm.Tensor(np.ones((2, 3))) + tm.Tensor(np.ones(4))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 3\)"):
        tm.Tensor(np.ones((2, 3))).broadcast_to((3, 3))


def test_concatenate_and_stack_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(3, 2\)"):
        tm.concatenate([tm.Tensor(np.ones((2, 3))), tm.Tensor(np.ones((3, 2)))])
    with pytest.raises(ValueError, match=r"\(3, 2\)"):
        tm.stack([tm.Tensor(np.ones((2, 3))), tm.Tensor(np.ones((3, 2)))])
    with pytest.raises(ValueError):
        tm.concatenate([])


# ---------------------------------------------------------------- axes
X = tm.Tensor(np.ones((2, 3)))


@pytest.mark.parametrize("op", [
    lambda: X.sum(axis=2), lambda: X.sum(axis=-3), lambda: X.mean(axis=(0, 5)),
    lambda: X.max(axis=2), lambda: X.min(axis=-3), lambda: X.var(axis=(1, 1)),
    lambda: X.sum(axis=(0, -2)), lambda: tm.softmax(X, axis=2), lambda: tm.softmax(X, axis=(0, 0)),
    lambda: tm.log_softmax(X, axis=-3), lambda: X.squeeze(0), lambda: X.squeeze(3),
    lambda: X.expand_dims(4), lambda: X.swapaxes(0, 2), lambda: X.transpose(0, 2),
    lambda: X.transpose(1, -3), lambda: X.transpose(0, 0), lambda: X.transpose(0),
    lambda: tm.concatenate([X, X], axis=2), lambda: tm.stack([X, X], axis=3),
])
def test_bad_axis_is_a_value_error(op):
    with pytest.raises(ValueError, match="ax"):
        op()


@pytest.mark.parametrize("op", [lambda: X.sum(axis=1.0), lambda: X.mean(axis=(0, 1.5)),
                                lambda: X.max(axis="0"), lambda: X.sum(axis=True)])
def test_non_integer_axis_is_a_type_error(op):
    with pytest.raises(TypeError, match="axis"):
        op()


def test_transpose_out_of_range_is_not_wrapped():
    # transpose(0, 5) of a 2-D tensor must not silently mean transpose(0, 1)
    with pytest.raises(ValueError, match=r"\(0, 5\)"):
        X.transpose(0, 5)


# ---------------------------------------------------------------- no state change on failure
def test_failing_backward_changes_nothing():
    x = tm.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * x).sum().backward()
    before = x.grad.copy()
    y = x * 3
    with pytest.raises(ValueError):
        y.backward(np.ones(3))            # wrong shape
    with pytest.raises(ValueError):
        y.backward()                      # not a scalar
    np.testing.assert_array_equal(x.grad, before)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, before + 3)
    with pytest.raises(RuntimeError):
        y.sum().backward()                # graph freed: raises before touching any .grad
    np.testing.assert_array_equal(x.grad, before + 3)


def test_failing_grad_assignment_keeps_old_grad():
    x = tm.Tensor(np.ones(3), requires_grad=True)
    x.grad = np.full(3, 2.0)
    with pytest.raises(ValueError, match=r"\(3,\).*\(4,\)"):
        x.grad = np.ones(4)
    np.testing.assert_array_equal(x.grad, 2.0)


def test_failing_set_seed_and_dropout_leave_random_state_alone():
    tm.set_seed(5)
    try:
        tm.dropout(tm.Tensor(np.ones(4)), 0.5)  # make the shared generator exist
        before = str(backend.get_state())
        with pytest.raises(ValueError, match="seed"):
            tm.set_seed(-1)
        with pytest.raises(ValueError, match="seed"):
            tm.set_seed(1.5)
        with pytest.raises(ValueError, match="rate"):
            tm.dropout(tm.Tensor(np.ones(4)), 1.5)
        assert str(backend.get_state()) == before
    finally:
        tm.set_seed(None)


def test_failing_op_records_nothing_on_its_inputs():
    x = tm.Tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(ValueError):
        tm.einsum("ij,jk", x, tm.Tensor(np.ones((4, 2))))
    with pytest.raises(ValueError):
        x.reshape(5)
    assert x._ctx is None and x.grad is None
    (x * 2).sum().backward()
    np.testing.assert_array_equal(x.grad, 2.0)


def test_item_and_len_errors():
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        X.item()
    with pytest.raises(TypeError):
        len(tm.Tensor(1.0))
    with pytest.raises(ValueError, match="ambiguous"):
        bool(X)
