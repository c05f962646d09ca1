"""gradcheck and gradgradcheck themselves: they pass correct ops and catch wrong ones."""

import re
import warnings

import numpy as np
import pytest

import tinygrad_mha as tm
from tinygrad_mha.tensor import Function, Tensor


class WrongSquare(Function):
    """x^2 with a wrong derivative (x instead of 2x) for the entries with index >= 2."""

    def forward(self, a):
        return a * a

    def backward(self, g):
        x = self.inputs[0]
        xp = x.xp
        factor = xp.full(x.shape, 2.0, dtype=x.dtype)
        factor.reshape(-1)[2:] = 1.0
        return g * x * Tensor._wrap(factor)


class DetachedSquare(Function):
    """x^2 whose first derivative is right but built from raw arrays (not differentiable)."""

    def forward(self, a):
        return a * a

    def backward(self, g):
        return g * Tensor._wrap(2 * self.inputs[0].data)  # the x-dependence is invisible


class GoodSquare(Function):
    """x^2 with its backward written in Tensor ops: right to every order."""

    def forward(self, a):
        return a * a

    def backward(self, g):
        return g * 2 * self.inputs[0]


def _x(shape=(2, 3), seed=0, device="cpu"):
    return tm.Tensor(np.random.default_rng(seed).uniform(0.5, 2.0, shape), requires_grad=True, device=device)


@pytest.mark.parametrize("fn", [
    lambda a, b: a * b + a.exp(),
    lambda a, b: (a / b).tanh().sum(axis=0),
    lambda a, b: tm.softmax(a @ b.T, axis=-1),
    lambda a, b: tm.einsum("ij,kj->ik", a.sqrt(), b.log()),
    lambda a, b: tm.where(a > b, a, b ** 2),
])
def test_passes_for_correct_ops(fn, device):
    a, b = _x(seed=1, device=device), _x(seed=2, device=device)
    assert tm.gradcheck(fn, (a, b)) is True
    assert tm.gradcheck(fn, (a, b), fast=True) is True
    assert tm.gradgradcheck(fn, (a, b)) is True


def test_inputs_without_requires_grad_are_not_checked():
    a, b = _x(seed=1), tm.Tensor(np.ones((2, 3)))
    assert tm.gradcheck(lambda a, b: a * b, (a, b))
    assert tm.gradcheck(lambda a: (a * 3).sum(), a)  # a single Tensor is accepted too


def test_inputs_are_left_unchanged():
    a = _x(seed=3)
    before = a.numpy().copy()
    tm.gradcheck(lambda t: (t ** 3).sum(), (a,))
    tm.gradcheck(lambda t: (t ** 3).sum(), (a,), fast=True)
    tm.gradgradcheck(lambda t: (t ** 3).sum(), (a,))
    np.testing.assert_array_equal(a.numpy(), before)
    assert a.grad is None


def test_fails_for_a_wrong_backward_and_names_everything(device):
    x = _x(device=device)
    with pytest.raises(tm.GradcheckError) as info:
        tm.gradcheck(WrongSquare.apply, (x,))
    message = str(info.value)
    assert "input 0" in message
    match = re.search(r"index \((\d+), (\d+)\)", message)
    assert match, message
    worst = (int(match.group(1)), int(match.group(2)))
    assert np.ravel_multi_index(worst, x.shape) >= 2  # the worst element is one of the wrong ones
    assert "analytic" in message and "numeric" in message
    # the numbers it reports: numeric = 2 x u, analytic = x u (u: gradcheck's random weights)
    analytic = float(re.search(r"analytic ([-+\d.eE]+)", message).group(1))
    numeric = float(re.search(r"numeric ([-+\d.eE]+)", message).group(1))
    assert numeric == pytest.approx(2 * analytic, rel=1e-4)


def test_names_the_failing_input():
    good, bad = _x(seed=4), _x(seed=5)
    with pytest.raises(tm.GradcheckError, match=r"input 1\b"):
        tm.gradcheck(lambda a, b: a + WrongSquare.apply(b), (good, bad))


def test_raise_exception_false_returns_false():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no warning on float64 inputs
        assert tm.gradcheck(WrongSquare.apply, (_x(),), raise_exception=False) is False
        assert tm.gradcheck(GoodSquare.apply, (_x(),), raise_exception=False) is True


def test_fast_mode_catches_the_wrong_gradient():
    with pytest.raises(tm.GradcheckError, match=r"input 0.*random direction"):
        tm.gradcheck(WrongSquare.apply, (_x(),), fast=True)
    assert tm.gradcheck(WrongSquare.apply, (_x(),), fast=True, raise_exception=False) is False
    assert tm.gradcheck(GoodSquare.apply, (_x(),), fast=True)


def test_fast_mode_on_a_larger_input_is_cheap():
    x = tm.Tensor(np.random.default_rng(6).standard_normal((40, 50)), requires_grad=True)
    assert tm.gradcheck(lambda a: tm.softmax(a).log() * a, (x,), fast=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_warns_on_low_precision_inputs(dtype):
    x = tm.Tensor(np.random.default_rng(7).uniform(0.5, 2.0, (3,)).astype(dtype), requires_grad=True)
    with pytest.warns(UserWarning, match=str(np.dtype(dtype))):
        tm.gradcheck(lambda a: a * 2, (x,), eps=1e-2, atol=1e-1, rtol=1e-1, raise_exception=False)


def test_gradgradcheck_catches_a_non_differentiable_backward():
    x = _x(seed=8)
    assert tm.gradcheck(DetachedSquare.apply, (x,))  # first order is right
    with pytest.raises(tm.GradcheckError, match="input 0"):
        tm.gradgradcheck(DetachedSquare.apply, (x,))
    assert tm.gradgradcheck(DetachedSquare.apply, (x,), raise_exception=False) is False
    assert tm.gradgradcheck(GoodSquare.apply, (x,))


def test_gradgradcheck_with_explicit_grad_outputs():
    x = _x(seed=9)
    v = np.random.default_rng(10).standard_normal((2, 3))
    assert tm.gradgradcheck(lambda a: a.exp() * a, (x,), grad_outputs=v)


def test_bad_arguments():
    with pytest.raises(ValueError, match="requires_grad"):
        tm.gradcheck(lambda a: a * 2, (tm.Tensor(np.ones(3)),))
    with pytest.raises(TypeError, match="Tensor"):
        tm.gradcheck(lambda a: a * 2, (np.ones(3),))
    with pytest.raises(TypeError, match="Tensor"):
        tm.gradcheck(lambda a: a.numpy(), (_x(),))


def test_gradcheck_error_is_an_assertion_error():
    assert issubclass(tm.GradcheckError, AssertionError)
