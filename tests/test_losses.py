"""Losses: values against NumPy (and Keras when installed), gradients by finite differences."""


import numpy as np
import pytest

import tinygrad_mha as tm
from tinygrad_mha.losses import mean_squared_error, softmax_cross_entropy


def keras_reference():
    """Keras 3 as an independent reference, on whichever backend the session chose, or skip."""
    return pytest.importorskip("keras")


def cross_entropy_by_hand(logits, one_hot, axis=-1):
    """-sum(p * log softmax) with log softmax = z - log(sum(exp(z))) on shifted logits."""
    z = logits - logits.max(axis=axis, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=axis, keepdims=True))
    return -(one_hot * log_probs).sum(axis=axis).mean()


def one_hot(labels, classes, axis=-1):
    out = np.eye(classes)[labels]
    return np.moveaxis(out, -1, axis)


rng = np.random.default_rng(0)
LOGITS = rng.standard_normal((6, 5)) * 2
LABELS = rng.integers(0, 5, size=6)


def test_mse_matches_numpy():
    y_true, y_pred = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    out = mean_squared_error(y_true, tm.Tensor(y_pred))
    assert out.shape == () and out.item() == pytest.approx(((y_pred - y_true) ** 2).mean(), rel=1e-12)


def test_mse_gradcheck():
    y_true = tm.Tensor(rng.standard_normal((4, 3)), requires_grad=True)
    y_pred = tm.Tensor(rng.standard_normal((4, 3)), requires_grad=True)
    assert tm.gradcheck(mean_squared_error, (y_true, y_pred))


def test_mse_keeps_float32_and_checks_shapes():
    out = mean_squared_error(np.zeros((2, 2)), tm.Tensor(np.ones((2, 2), "float32")))
    assert out.dtype == np.float32 and out.item() == 1.0
    with pytest.raises(ValueError, match="shape"):
        mean_squared_error(np.zeros((2, 3)), tm.Tensor(np.zeros((3, 2))))


def test_cross_entropy_with_integer_labels():
    out = softmax_cross_entropy(tm.Tensor(LOGITS), LABELS)
    assert out.shape == ()
    assert out.item() == pytest.approx(cross_entropy_by_hand(LOGITS, one_hot(LABELS, 5)), rel=1e-12)


def test_cross_entropy_one_hot_and_integer_agree():
    by_index = softmax_cross_entropy(tm.Tensor(LOGITS), LABELS).item()
    by_vector = softmax_cross_entropy(tm.Tensor(LOGITS), one_hot(LABELS, 5)).item()
    assert by_index == pytest.approx(by_vector, rel=1e-14)


def test_cross_entropy_soft_labels_and_other_axis():
    logits = rng.standard_normal((3, 4, 2))
    probs = rng.uniform(size=(3, 4, 2))
    probs /= probs.sum(axis=1, keepdims=True)
    out = softmax_cross_entropy(tm.Tensor(logits), probs, axis=1)
    assert out.item() == pytest.approx(cross_entropy_by_hand(logits, probs, axis=1), rel=1e-12)
    labels = rng.integers(0, 4, size=(3, 2))
    out = softmax_cross_entropy(tm.Tensor(logits), labels, axis=1)
    expected = cross_entropy_by_hand(logits, one_hot(labels, 4, axis=1), axis=1)
    assert out.item() == pytest.approx(expected, rel=1e-12)


def test_cross_entropy_gradient_is_softmax_minus_labels():
    logits = tm.Tensor(LOGITS, requires_grad=True)
    softmax_cross_entropy(logits, LABELS).backward()
    probs = np.exp(LOGITS) / np.exp(LOGITS).sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(logits.grad, (probs - one_hot(LABELS, 5)) / len(LABELS), rtol=1e-10)


def test_cross_entropy_gradcheck():
    logits = tm.Tensor(LOGITS, requires_grad=True)
    assert tm.gradcheck(lambda z: softmax_cross_entropy(z, LABELS), (logits,))
    soft = tm.Tensor(rng.uniform(size=(6, 5)), requires_grad=True)  # gradient for the labels too
    assert tm.gradcheck(softmax_cross_entropy, (logits, soft))


def test_cross_entropy_is_finite_for_huge_logits():
    logits = tm.Tensor(np.array([[1000.0, -1000.0, 0.0]]), requires_grad=True)
    out = softmax_cross_entropy(logits, np.array([1]))
    assert out.item() == pytest.approx(2000.0)
    out.backward()
    assert np.all(np.isfinite(logits.grad))


def test_cross_entropy_checks_labels():
    with pytest.raises(ValueError, match="class indices"):
        softmax_cross_entropy(tm.Tensor(LOGITS), LABELS + 5)
    with pytest.raises(ValueError, match="shape"):
        softmax_cross_entropy(tm.Tensor(LOGITS), LABELS[:3])
    with pytest.raises(ValueError, match="shape"):
        softmax_cross_entropy(tm.Tensor(LOGITS), np.ones((6, 4)))


def test_losses_on_each_device(device):
    logits = tm.Tensor(LOGITS, device=device, requires_grad=True)
    out = softmax_cross_entropy(logits, LABELS)  # host labels follow the logits to the device
    assert out.device == device
    assert out.item() == pytest.approx(cross_entropy_by_hand(LOGITS, one_hot(LABELS, 5)), rel=1e-12)
    out.backward()
    assert tm.backend.device_of(logits.grad) == device
    assert mean_squared_error(np.zeros((6, 5)), logits).item() == pytest.approx((LOGITS ** 2).mean())


def test_match_keras():
    keras = keras_reference()
    theirs = keras.losses.CategoricalCrossentropy(from_logits=True)(one_hot(LABELS, 5), LOGITS)
    # (float32 inside Keras on JAX, hence rel=1e-5)
    assert softmax_cross_entropy(tm.Tensor(LOGITS), LABELS).item() == pytest.approx(float(theirs), rel=1e-5)
    y_true, y_pred = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    theirs = keras.losses.MeanSquaredError()(y_true, y_pred)
    assert mean_squared_error(y_true, tm.Tensor(y_pred)).item() == pytest.approx(float(theirs), rel=1e-5)
