"""Optimizers: updates against the same formulas written in NumPy, against Keras 3, constraints,
convergence on a quadratic, devices and argument checks."""

import math

import numpy as np
import pytest

import tinygrad_mha as tm
from tinygrad_mha import constraints as C
from tinygrad_mha import optimizers as O
from tinygrad_mha.backend import to_numpy
from tinygrad_mha.layers import Parameter

W0 = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]])
GRADS = [np.array([[0.1, -0.2, 0.3], [0.4, 0.0, -0.5]]),
         np.array([[-0.3, 0.1, 0.2], [0.05, -0.6, 0.2]]),
         np.array([[0.2, 0.2, -0.1], [-0.1, 0.3, 0.4]])]


def keras_reference():
    """Keras 3 as an independent reference, on whichever backend the session chose, or skip."""
    return pytest.importorskip("keras")


def run(make_opt, grads=GRADS, dtype="float64", device="cpu", w0=W0):
    """Feed ``grads`` one step at a time (set by hand, as backward would) and return the weights."""
    p = Parameter(w0.astype(dtype), device=device)
    opt = make_opt([p])
    history = []
    for g in grads:
        opt.zero_grad()
        p.grad = g.astype(dtype)
        opt.step()
        history.append(p.numpy().copy())
    return p, opt, history


# ---------------------------------------------------------------- the formulas, by hand
def sgd_by_hand(lr, momentum=0.0, nesterov=False, wd=None):
    w, m, out = W0.copy(), np.zeros_like(W0), []
    for g in GRADS:
        if wd:
            w = w - lr * wd * w
        if momentum == 0:
            w = w - lr * g
        else:
            m = momentum * m - lr * g
            w = w + (momentum * m - lr * g if nesterov else m)
        out.append(w)
    return out


def adam_by_hand(lr, b1=0.9, b2=0.999, eps=1e-7, amsgrad=False, wd=None):
    """Kingma & Ba with Keras's placement of epsilon: lr_t * m / (sqrt(v) + eps)."""
    w, m, v, vmax, out = W0.copy(), np.zeros_like(W0), np.zeros_like(W0), np.zeros_like(W0), []
    for t, g in enumerate(GRADS, start=1):
        if wd:
            w = w - lr * wd * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        vmax = np.maximum(vmax, v)
        lr_t = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        w = w - lr_t * m / (np.sqrt(vmax if amsgrad else v) + eps)
        out.append(w)
    return out


HAND = [
    ("sgd", lambda ps: O.SGD(ps, learning_rate=0.1), sgd_by_hand(0.1)),
    ("sgd-default", lambda ps: O.SGD(ps), sgd_by_hand(0.01)),
    ("momentum", lambda ps: O.SGD(ps, 0.1, momentum=0.9), sgd_by_hand(0.1, 0.9)),
    ("nesterov", lambda ps: O.SGD(ps, 0.1, momentum=0.9, nesterov=True), sgd_by_hand(0.1, 0.9, True)),
    ("sgd-decay", lambda ps: O.SGD(ps, 0.1, momentum=0.5, weight_decay=0.2), sgd_by_hand(0.1, 0.5, wd=0.2)),
    ("adam", lambda ps: O.Adam(ps, learning_rate=0.05), adam_by_hand(0.05)),
    ("adam-default", lambda ps: O.Adam(ps), adam_by_hand(1e-3)),
    ("adam-betas", lambda ps: O.Adam(ps, 0.02, beta_1=0.5, beta_2=0.9, epsilon=1e-3),
     adam_by_hand(0.02, 0.5, 0.9, 1e-3)),
    ("amsgrad", lambda ps: O.Adam(ps, 0.05, amsgrad=True), adam_by_hand(0.05, amsgrad=True)),
    ("adamw", lambda ps: O.AdamW(ps, learning_rate=0.05), adam_by_hand(0.05, wd=0.004)),
    ("adamw-decay", lambda ps: O.AdamW(ps, 0.05, weight_decay=0.5, amsgrad=True),
     adam_by_hand(0.05, amsgrad=True, wd=0.5)),
]


@pytest.mark.parametrize("name, make, expected", HAND, ids=[h[0] for h in HAND])
def test_steps_match_the_formula(name, make, expected):
    _, opt, history = run(make)
    for got, want in zip(history, expected):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert opt.iterations == len(GRADS)


@pytest.mark.parametrize("name, make, expected", HAND, ids=[h[0] for h in HAND])
def test_float32_stays_float32_and_close(name, make, expected):
    p, _, history = run(make, dtype="float32")
    assert p.dtype == np.float32
    np.testing.assert_allclose(history[-1], expected[-1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, make, expected", HAND, ids=[h[0] for h in HAND])
def test_each_device(name, make, expected, device):
    p, _, history = run(make, device=device)
    assert p.device == device
    np.testing.assert_allclose(history[-1], expected[-1], rtol=1e-12, atol=1e-15)


def test_step_is_in_place():
    p = Parameter(W0.copy())
    data = p.data
    opt = O.Adam([p], 0.1)
    p.grad = GRADS[0]
    opt.step()
    assert p.data is data and not np.array_equal(data, W0)


# ---------------------------------------------------------------- against Keras 3
KERAS = [
    ("sgd", lambda ps: O.SGD(ps, 0.1), lambda k: k.optimizers.SGD(0.1)),
    ("momentum", lambda ps: O.SGD(ps, 0.1, momentum=0.9), lambda k: k.optimizers.SGD(0.1, momentum=0.9)),
    ("nesterov", lambda ps: O.SGD(ps, 0.1, momentum=0.9, nesterov=True),
     lambda k: k.optimizers.SGD(0.1, momentum=0.9, nesterov=True)),
    ("sgd-decay", lambda ps: O.SGD(ps, 0.1, momentum=0.5, weight_decay=0.2),
     lambda k: k.optimizers.SGD(0.1, momentum=0.5, weight_decay=0.2)),
    ("adam", lambda ps: O.Adam(ps, 0.05), lambda k: k.optimizers.Adam(0.05)),
    ("adam-decay", lambda ps: O.Adam(ps, 0.05, weight_decay=0.1),
     lambda k: k.optimizers.Adam(0.05, weight_decay=0.1)),
    ("amsgrad", lambda ps: O.Adam(ps, 0.05, amsgrad=True), lambda k: k.optimizers.Adam(0.05, amsgrad=True)),
    ("adamw", lambda ps: O.AdamW(ps, 0.05), lambda k: k.optimizers.AdamW(0.05)),
    ("adamw-decay", lambda ps: O.AdamW(ps, 0.05, weight_decay=0.5, beta_1=0.8),
     lambda k: k.optimizers.AdamW(0.05, weight_decay=0.5, beta_1=0.8)),
]


@pytest.mark.parametrize("name, ours, theirs", KERAS, ids=[k[0] for k in KERAS])
def test_matches_keras(name, ours, theirs):
    keras = keras_reference()
    # float32: Keras keeps its learning rate (and, on NumPy, its constants) in float32 anyway,
    # and JAX has no float64 by default.
    variable = keras.Variable(W0.astype("float32"), dtype="float32")
    optimizer = theirs(keras)
    for g in GRADS:
        optimizer.apply([g.astype("float32")], [variable])
    _, _, history = run(ours, dtype="float32")
    np.testing.assert_allclose(history[-1], np.asarray(variable), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- behaviour
def test_zero_grad_sets_grads_to_none():
    a, b = Parameter(W0.copy()), Parameter(W0.copy())
    opt = O.SGD([a, b])
    (a * b).sum().backward()
    assert a.grad is not None and b.grad is not None
    opt.zero_grad()
    assert a.grad is None and b.grad is None


def test_params_without_grad_are_left_alone():
    a, b = Parameter(W0.copy()), Parameter(W0.copy())
    opt = O.Adam([a, b], 0.1)
    a.grad = GRADS[0]
    opt.step()
    np.testing.assert_array_equal(b.numpy(), W0)
    assert not np.array_equal(a.numpy(), W0) and opt.iterations == 1
    opt.zero_grad()
    opt.step()  # nothing has a gradient: nothing happens, not even the count
    assert opt.iterations == 1


def test_adam_bias_correction_uses_the_optimizer_step_count():
    """As in Keras, a parameter first updated at step 2 is corrected with t = 2."""
    a, b = Parameter(W0.copy()), Parameter(W0.copy())
    opt = O.Adam([a, b], 0.1)
    a.grad = GRADS[0]
    opt.step()
    b.grad = GRADS[1]
    opt.step()
    t, g = 2, GRADS[1]
    m, v = 0.1 * g, 0.001 * g * g
    expected = W0 - 0.1 * math.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t) * m / (np.sqrt(v) + 1e-7)
    np.testing.assert_allclose(b.numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("constraint", [C.NonNeg(), C.MaxNorm(0.5), C.UnitNorm(axis=1)], ids=repr)
def test_constraint_is_applied_after_the_update(constraint, device):
    p = Parameter(W0.copy(), constraint=constraint, device=device)
    opt = O.SGD([p], learning_rate=0.5, momentum=0.9)
    p.grad = GRADS[0]
    opt.step()
    expected = constraint(W0 - 0.5 * GRADS[0])  # update, then project
    np.testing.assert_allclose(p.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(constraint(p.numpy()), p.numpy(), rtol=1e-6, atol=1e-12)  # a fixed point


def test_plain_callable_constraint():
    p = Parameter(W0.copy(), constraint=lambda w: w.clip(-0.1, 0.1))
    opt = O.Adam([p], 1.0)
    p.grad = GRADS[0]
    opt.step()
    assert np.abs(p.numpy()).max() <= 0.1


def test_state_follows_a_parameter_to_another_device():
    if not tm.cuda_available():
        pytest.skip("CUDA device not available (needs cupy and a GPU)")
    p = Parameter(W0.copy())
    opt = O.Adam([p], 0.05)
    p.grad = GRADS[0]
    opt.step()
    p.data = tm.backend.to_device(p.data, "cuda")
    p.grad = tm.backend.to_device(GRADS[1], "cuda")
    opt.step()
    assert p.device == "cuda"
    np.testing.assert_allclose(to_numpy(p.data), adam_by_hand(0.05)[1], rtol=1e-12)


@pytest.mark.parametrize("make", [
    lambda ps: O.SGD(ps, 0.1),
    lambda ps: O.SGD(ps, 0.05, momentum=0.9),
    lambda ps: O.SGD(ps, 0.05, momentum=0.9, nesterov=True),
    lambda ps: O.Adam(ps, 0.1),
    lambda ps: O.AdamW(ps, 0.1, weight_decay=1e-4),
], ids=["sgd", "momentum", "nesterov", "adam", "adamw"])
def test_a_quadratic_converges(make):
    """Least squares: minimise mean((X w - y)^2) through the engine; w should reach w*."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 3))
    w_star = np.array([1.5, -2.0, 0.5])
    y = X @ w_star
    w = Parameter(np.zeros(3))
    opt = make([w])
    for _ in range(600):
        opt.zero_grad()
        loss = tm.losses.mean_squared_error(tm.Tensor(y), tm.Tensor(X) @ w)
        loss.backward()
        opt.step()
    np.testing.assert_allclose(w.numpy(), w_star, atol=5e-3 if "W" in type(opt).__name__ else 1e-3)


# ---------------------------------------------------------------- argument checks
@pytest.mark.parametrize("call, error, name", [
    (lambda p: O.SGD(p, learning_rate=0.0), ValueError, "learning_rate"),
    (lambda p: O.SGD(p, learning_rate=-1), ValueError, "learning_rate"),
    (lambda p: O.Adam(p, learning_rate="fast"), TypeError, "learning_rate"),
    (lambda p: O.Adam(p, learning_rate=float("nan")), ValueError, "learning_rate"),
    (lambda p: O.SGD(p, momentum=1.5), ValueError, "momentum"),
    (lambda p: O.SGD(p, momentum=-0.1), ValueError, "momentum"),
    (lambda p: O.SGD(p, nesterov="yes"), TypeError, "nesterov"),
    (lambda p: O.SGD(p, weight_decay=-0.1), ValueError, "weight_decay"),
    (lambda p: O.Adam(p, beta_1=1.0), ValueError, "beta_1"),
    (lambda p: O.Adam(p, beta_2=-0.5), ValueError, "beta_2"),
    (lambda p: O.Adam(p, epsilon=-1e-7), ValueError, "epsilon"),
    (lambda p: O.AdamW(p, weight_decay=None), ValueError, "weight_decay"),
    (lambda p: O.SGD([]), ValueError, "params"),
    (lambda p: O.SGD(p[0]), TypeError, "params"),
    (lambda p: O.SGD([W0]), TypeError, r"params\[0\]"),
    (lambda p: O.SGD(p + [tm.Tensor(W0)]), ValueError, r"params\[1\]"),
    (lambda p: O.SGD(p + p), ValueError, r"params\[1\]"),
    (lambda p: O.SGD(7), TypeError, "params"),
])
def test_bad_arguments_name_themselves(call, error, name):
    params = [Parameter(W0.copy())]
    with pytest.raises(error, match=name):
        call(params)


def test_params_may_be_any_iterable_of_tensors():
    a = tm.Tensor(W0.copy(), requires_grad=True)
    opt = O.SGD(iter([a]), 0.1)
    a.grad = GRADS[0]
    opt.step()
    np.testing.assert_allclose(a.numpy(), W0 - 0.1 * GRADS[0])
