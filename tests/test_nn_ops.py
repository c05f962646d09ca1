"""softmax, log_softmax and dropout against NumPy references and statistical bounds."""

import re

import numpy as np
import pytest

import tinygrad_mha as tm


def np_softmax(x, axis=-1, mask=None):
    """Reference softmax in float64; masked entries get exactly 0, empty rows all 0."""
    x = np.asarray(x, dtype=np.float64)
    if mask is None:
        mask = np.ones(x.shape, dtype=bool)
    mask = np.broadcast_to(np.asarray(mask, dtype=bool), x.shape)
    big = np.where(mask, x, -np.inf)
    m = np.max(big, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.where(mask, np.exp(np.where(mask, x, 0.0) - m), 0.0)
    s = e.sum(axis=axis, keepdims=True)
    return e / np.where(s == 0, 1.0, s)


def np_log_softmax(x, axis=-1):
    x = np.asarray(x, dtype=np.float64)
    m = np.max(x, axis=axis, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


TOL = {np.float16: 2e-3, np.float32: 1e-6, np.float64: 1e-12}


@pytest.fixture
def restore_seed():
    yield
    tm.set_seed(None)


# ---------------------------------------------------------------- softmax
@pytest.mark.parametrize("axis", [-1, 0, 1, (0, 2), (1, 2), None])
def test_softmax_matches_numpy_and_sums_to_one(axis, device):
    x = np.random.default_rng(0).standard_normal((2, 3, 4)) * 3
    y = tm.softmax(tm.Tensor(x, device=device), axis=axis)
    np.testing.assert_allclose(y.numpy(), np_softmax(x, axis=axis), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(y.numpy().sum(axis=axis), 1.0, rtol=1e-12)


@pytest.mark.parametrize("axis", [-1, 0, (0, 2), (0, 1, 2)])
def test_log_softmax_matches_numpy(axis, device):
    x = np.random.default_rng(1).standard_normal((2, 3, 4)) * 3
    y = tm.log_softmax(tm.Tensor(x, device=device), axis=axis)
    np.testing.assert_allclose(y.numpy(), np_log_softmax(x, axis=axis), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.exp(y.numpy()), np_softmax(x, axis=axis), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("axis", [-1, 1, (0, 2)])
def test_softmax_and_log_softmax_gradcheck(axis, device):
    x = tm.Tensor(np.random.default_rng(2).standard_normal((2, 3, 4)), requires_grad=True, device=device)
    assert tm.gradcheck(lambda a: tm.softmax(a, axis=axis), (x,))
    assert tm.gradcheck(lambda a: tm.log_softmax(a, axis=axis), (x,))


def test_softmax_gradient_matches_jacobian_formula():
    rng = np.random.default_rng(3)
    x, g = rng.standard_normal(5), rng.standard_normal(5)
    t = tm.Tensor(x, requires_grad=True)
    tm.softmax(t).backward(g)
    s = np_softmax(x)
    jacobian = np.diag(s) - np.outer(s, s)
    np.testing.assert_allclose(t.grad, jacobian.T @ g, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_softmax_is_stable_for_huge_logits(dtype, device):
    x = np.array([[1e4, -1e4, 0.0, 1e4], [-1e4, -1e4, -1e4, -1e4], [1e4, 1e4 - 1, -1e4, 3.0]], dtype=dtype)
    t = tm.Tensor(x, requires_grad=True, device=device)
    y = tm.softmax(t)
    assert y.dtype == dtype
    assert np.all(np.isfinite(y.numpy()))
    np.testing.assert_allclose(y.numpy(), np_softmax(x.astype(np.float64)), atol=TOL[dtype])
    y.backward(tm.Tensor(np.ones(x.shape, dtype=dtype), device=device))
    assert np.all(np.isfinite(t.numpy())) and np.all(np.isfinite(tm.Tensor(t.grad).numpy()))

    ls = tm.log_softmax(tm.Tensor(x, device=device))
    assert ls.dtype == dtype
    assert np.all(np.isfinite(ls.numpy()))
    np.testing.assert_allclose(ls.numpy(), np_log_softmax(x.astype(np.float64)),
                               rtol=TOL[dtype], atol=TOL[dtype])


def test_softmax_float32_matches_float64_reference():
    x = np.random.default_rng(4).standard_normal((3, 7)).astype(np.float32) * 10
    y = tm.softmax(tm.Tensor(x))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.numpy(), np_softmax(x), rtol=1e-5, atol=1e-7)


def test_joint_softmax_equals_softmax_over_flattened_axes(device):
    x = np.random.default_rng(5).standard_normal((2, 3, 4, 5))
    joint = tm.softmax(tm.Tensor(x, device=device), axis=(1, 3)).numpy()
    moved = np.moveaxis(x, (1, 3), (2, 3)).reshape(2, 4, 15)  # (0, 2, 1, 3) then flatten 1 and 3
    flat = tm.softmax(tm.Tensor(moved, device=device), axis=-1).numpy()
    np.testing.assert_allclose(np.moveaxis(joint, (1, 3), (2, 3)).reshape(2, 4, 15), flat, rtol=1e-12)
    np.testing.assert_allclose(joint.sum(axis=(1, 3)), 1.0, rtol=1e-12)


def test_joint_log_softmax_equals_log_softmax_over_flattened_axes():
    x = np.random.default_rng(6).standard_normal((3, 4, 2))
    joint = tm.log_softmax(tm.Tensor(x), axis=(0, 1)).numpy()
    flat = tm.log_softmax(tm.Tensor(x.reshape(12, 2)), axis=0).numpy()
    np.testing.assert_allclose(joint.reshape(12, 2), flat, rtol=1e-12)


# ---------------------------------------------------------------- masks
MASK = np.array([[True, False, True, True], [False, True, False, False], [True, True, True, True]])


def test_masked_entries_are_exactly_zero(device):
    x = np.random.default_rng(7).standard_normal((3, 4)) * 5
    y = tm.softmax(tm.Tensor(x, device=device), mask=MASK).numpy()
    assert np.all(y[~MASK] == 0.0)
    np.testing.assert_allclose(y, np_softmax(x, mask=MASK), rtol=1e-12)
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-12)
    # kept entries are the softmax of the kept logits alone
    np.testing.assert_allclose(y[0, MASK[0]], np_softmax(x[0, MASK[0]]), rtol=1e-12)


@pytest.mark.parametrize("mask_shape", [(4,), (1, 4), (2, 1, 4), (3, 1), (2, 3, 4)])
def test_broadcastable_masks(mask_shape, device):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 4))
    mask = rng.random(mask_shape) > 0.3
    y = tm.softmax(tm.Tensor(x, device=device), mask=mask).numpy()
    np.testing.assert_allclose(y, np_softmax(x, mask=mask), rtol=1e-12, atol=1e-15)
    assert np.all(y[~np.broadcast_to(mask, x.shape)] == 0.0)


def test_integer_mask_equals_bool_mask():
    x = tm.Tensor(np.random.default_rng(9).standard_normal((3, 4)))
    as_bool = tm.softmax(x, mask=MASK).numpy()
    for m in (MASK.astype(np.int64), MASK.astype(np.int8), MASK.astype(np.uint8).tolist(),
              tm.Tensor(MASK.astype(np.int32)), tm.Tensor(MASK)):
        np.testing.assert_array_equal(tm.softmax(x, mask=m).numpy(), as_bool)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_mask_is_a_type_error(dtype):
    with pytest.raises(TypeError, match="mask"):
        tm.softmax(tm.Tensor(np.zeros((3, 4))), mask=MASK.astype(dtype))


@pytest.mark.parametrize("shape", [(3,), (2, 4), (3, 4, 1), (5, 3, 4, 2)])
def test_wrong_shape_mask_is_a_value_error(shape):
    with pytest.raises(ValueError, match=r"mask.*" + re.escape(str(shape))):
        tm.softmax(tm.Tensor(np.zeros((3, 4))), mask=np.ones(shape, dtype=bool))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_fully_masked_row_is_zero_with_zero_gradient(dtype, device):
    x = tm.Tensor(np.random.default_rng(10).standard_normal((3, 4)).astype(dtype), requires_grad=True,
                  device=device)
    mask = MASK.copy()
    mask[1] = False
    y = tm.softmax(x, mask=mask)
    out = y.numpy()
    assert not np.any(np.isnan(out))
    assert np.all(out[1] == 0.0)
    np.testing.assert_allclose(out[[0, 2]].sum(-1), 1.0, rtol=TOL[dtype])
    g = np.random.default_rng(11).standard_normal((3, 4)).astype(dtype)
    y.backward(tm.Tensor(g, device=device))
    grad = tm.Tensor(x.grad).numpy()
    assert not np.any(np.isnan(grad))
    assert np.all(grad[1] == 0.0)
    assert np.all(grad[~mask] == 0.0)


def test_fully_masked_everything():
    x = tm.Tensor(np.ones((2, 3)), requires_grad=True)
    y = tm.softmax(x, mask=np.zeros((2, 3), dtype=bool))
    np.testing.assert_array_equal(y.numpy(), 0.0)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, 0.0)


def test_masked_softmax_gradcheck(device):
    x = tm.Tensor(np.random.default_rng(12).standard_normal((2, 3, 4)), requires_grad=True, device=device)
    mask = np.array([[True, False, True, True], [False, False, False, False], [True, True, False, True]])
    assert tm.gradcheck(lambda a: tm.softmax(a, mask=mask), (x,))
    assert tm.gradcheck(lambda a: tm.softmax(a, axis=(1, 2), mask=mask[None]), (x,))
    assert tm.gradgradcheck(lambda a: tm.softmax(a, mask=mask), (x,))


# ---------------------------------------------------------------- dropout
def _sigmas(observed, expected, std):
    return abs(observed - expected) / std


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_dropout_kept_fraction_and_mean(rate, device):
    n = 200_000
    y = tm.dropout(tm.Tensor(np.ones(n), device=device), rate, seed=123).numpy()
    keep = 1 - rate
    kept = np.count_nonzero(y)
    assert _sigmas(kept, n * keep, np.sqrt(n * keep * rate)) < 5
    # kept entries are scaled by exactly 1/(1-rate), dropped ones are exactly 0
    np.testing.assert_allclose(y[y != 0], 1 / keep, rtol=1e-12)
    # inverted dropout preserves the mean: each entry has mean 1 and std sqrt(rate/keep)
    assert _sigmas(y.mean(), 1.0, np.sqrt(rate / keep / n)) < 5


def test_dropout_same_int_seed_same_mask(device):
    x = tm.Tensor(np.ones((50, 40)), device=device)
    a = tm.dropout(x, 0.5, seed=7).numpy()
    b = tm.dropout(x, 0.5, seed=7).numpy()
    c = tm.dropout(x, 0.5, seed=8).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_dropout_set_seed_makes_seed_none_reproducible(restore_seed, device):
    x = tm.Tensor(np.ones((50, 40)), device=device)
    tm.set_seed(3)
    a1, a2 = tm.dropout(x, 0.5).numpy(), tm.dropout(x, 0.5).numpy()
    tm.set_seed(3)
    b1, b2 = tm.dropout(x, 0.5).numpy(), tm.dropout(x, 0.5).numpy()
    np.testing.assert_array_equal(a1, b1)
    np.testing.assert_array_equal(a2, b2)
    assert not np.array_equal(a1, a2)  # the shared stream moves on between calls
    tm.set_seed(4)
    assert not np.array_equal(tm.dropout(x, 0.5).numpy(), a1)


def test_dropout_gradient_is_the_mask(device):
    rate = 0.3
    rng = np.random.default_rng(13)
    x_np = rng.standard_normal((30, 20))
    x = tm.Tensor(x_np, requires_grad=True, device=device)
    y = tm.dropout(x, rate, seed=5)
    y.backward(tm.Tensor(np.ones(x.shape), device=device))
    out, grad = y.numpy(), tm.Tensor(x.grad).numpy()
    dropped = out == 0
    assert 0 < dropped.sum() < dropped.size
    assert np.all(grad[dropped] == 0.0)
    np.testing.assert_allclose(grad[~dropped], 1 / (1 - rate), rtol=1e-15)
    np.testing.assert_allclose(out[~dropped], x_np[~dropped] / (1 - rate), rtol=1e-15)
    # a random upstream gradient is masked and scaled the same way
    x.zero_grad()
    g = rng.standard_normal(x.shape)
    tm.dropout(x, rate, seed=5).backward(tm.Tensor(g, device=device))
    np.testing.assert_allclose(tm.Tensor(x.grad).numpy(), np.where(dropped, 0.0, g / (1 - rate)), rtol=1e-15)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_dropout_keeps_dtype(dtype):
    x = tm.Tensor(np.ones((4, 5), dtype=dtype), requires_grad=True)
    y = tm.dropout(x, 0.5, seed=0)
    assert y.dtype == dtype
    y.sum().backward()
    assert x.grad.dtype == dtype


@pytest.mark.parametrize("kwargs", [{"rate": 0.0}, {"rate": 0}, {"rate": 0.5, "training": False}])
def test_dropout_identity_cases(kwargs, device):
    x_np = np.random.default_rng(14).standard_normal((4, 5))
    x = tm.Tensor(x_np, requires_grad=True, device=device)
    y = tm.dropout(x, **kwargs)
    np.testing.assert_array_equal(y.numpy(), x_np)
    y.backward(tm.Tensor(np.ones((4, 5)), device=device))
    np.testing.assert_array_equal(tm.Tensor(x.grad).numpy(), 1.0)


@pytest.mark.parametrize("rate", [-0.1, 1, 1.0, 1.5, "0.5", None, True, [0.5], float("nan")])
def test_dropout_bad_rate(rate):
    with pytest.raises(ValueError, match="rate"):
        tm.dropout(tm.Tensor(np.ones(3)), rate)


def test_dropout_does_not_touch_the_shared_stream_with_an_int_seed(restore_seed):
    from tinygrad_mha import backend
    tm.set_seed(0)
    tm.dropout(tm.Tensor(np.ones(3)), 0.5)  # create the shared generator
    before = backend.get_state()
    tm.dropout(tm.Tensor(np.ones(3)), 0.5, seed=1)
    assert str(backend.get_state()) == str(before)
