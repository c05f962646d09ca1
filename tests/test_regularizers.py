"""Regularizers: values against NumPy formulas and Keras, gradients by finite differences, configs."""

import json

import numpy as np
import pytest

import tinygrad_mha as tm
from tinygrad_mha import regularizers as R


def keras_reference():
    """Keras 3 as an independent reference, on whichever backend the session chose, or skip."""
    return pytest.importorskip("keras")


def weights(shape=(5, 4), seed=0):
    """Random float64 weights kept away from 0, where |x| has its kink."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.2, 1.5, size=shape) * rng.choice([-1.0, 1.0], size=shape)
    return w


def orthogonal_penalty_by_loops(w, factor, mode):
    """factor/2 * sum over distinct pairs (i, j), i != j, of |cos(v_i, v_j)|, divided by n(n-1)/2."""
    vectors = w if mode == "rows" else w.T
    n = len(vectors)
    total = 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                norms = np.linalg.norm(vectors[i]) * np.linalg.norm(vectors[j])
                total += abs(vectors[i] @ vectors[j]) / norms
    return factor * 0.5 * total / (n * (n - 1) / 2)


CASES = [
    (R.L1(0.3), lambda w: 0.3 * np.abs(w).sum()),
    (R.L1(), lambda w: 0.01 * np.abs(w).sum()),
    (R.L2(0.2), lambda w: 0.2 * (w ** 2).sum()),  # no 1/2, as in Keras
    (R.L2(), lambda w: 0.01 * (w ** 2).sum()),
    (R.L1L2(0.1, 0.05), lambda w: 0.1 * np.abs(w).sum() + 0.05 * (w ** 2).sum()),
    (R.L1L2(l2=0.05), lambda w: 0.05 * (w ** 2).sum()),
    (R.L1L2(), lambda w: 0.0),
    (R.OrthogonalRegularizer(0.7), lambda w: orthogonal_penalty_by_loops(w, 0.7, "rows")),
    (R.OrthogonalRegularizer(0.2, mode="columns"), lambda w: orthogonal_penalty_by_loops(w, 0.2, "columns")),
    (R.OrthogonalRegularizer(), lambda w: orthogonal_penalty_by_loops(w, 0.01, "rows")),
]
IDS = [repr(reg) for reg, _ in CASES]


@pytest.mark.parametrize("reg, formula", CASES, ids=IDS)
def test_value_matches_numpy(reg, formula):
    w = weights()
    out = reg(tm.Tensor(w))
    assert isinstance(out, tm.Tensor) and out.shape == ()
    assert out.item() == pytest.approx(formula(w), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("reg, formula", CASES, ids=IDS)
def test_gradcheck(reg, formula):
    w = tm.Tensor(weights(seed=1), requires_grad=True)
    out = reg(w)
    if not out.requires_grad:  # L1L2(0, 0) is a constant 0 with nothing to differentiate
        assert out.item() == 0.0
        return
    assert tm.gradcheck(reg, (w,))


def test_gradient_reaches_the_weight_through_backward():
    w = tm.Tensor(weights(), requires_grad=True)
    R.L1L2(0.1, 0.05)(w).backward()
    np.testing.assert_allclose(w.grad, 0.1 * np.sign(w.numpy()) + 0.05 * 2 * w.numpy())


def test_orthogonal_regularizer_of_orthogonal_rows_is_zero():
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((6, 6)))
    assert R.OrthogonalRegularizer(1.0)(tm.Tensor(q * 3.0)).item() == pytest.approx(0.0, abs=1e-12)
    same = np.ones((4, 3))  # identical rows: every |cos| is 1, so the penalty is the factor
    assert R.OrthogonalRegularizer(0.3)(tm.Tensor(same)).item() == pytest.approx(0.3)


def test_orthogonal_regularizer_is_finite_for_a_zero_row():
    w = weights()
    w[2] = 0.0
    x = tm.Tensor(w, requires_grad=True)
    out = R.OrthogonalRegularizer(1.0)(x)
    # the zero row's cosines count as 0, but it still counts in the number of pairs (5*4/2)
    others = orthogonal_penalty_by_loops(np.delete(w, 2, 0), 1.0, "rows")  # over 4*3/2 pairs
    assert out.item() == pytest.approx(others * (4 * 3) / (5 * 4))
    out.backward()
    assert np.all(np.isfinite(x.grad))


def test_orthogonal_regularizer_needs_a_matrix():
    with pytest.raises(ValueError, match="rank-2"):
        R.OrthogonalRegularizer()(tm.Tensor(np.ones((2, 3, 4))))
    assert R.OrthogonalRegularizer()(tm.Tensor(np.ones((1, 3)))).item() == 0.0  # no pairs


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_keeps_dtype(dtype):
    w = tm.Tensor(weights().astype(dtype))
    for reg, _ in CASES:
        assert reg(w).dtype == np.dtype(dtype)


def test_accepts_plain_arrays():
    w = weights()
    assert R.L2(0.5)(w).item() == pytest.approx(0.5 * (w ** 2).sum())


def test_runs_on_each_device(device):
    w = weights()
    for reg, formula in CASES:
        out = reg(tm.Tensor(w, device=device))
        assert out.device == device
        assert out.item() == pytest.approx(formula(w), rel=1e-10, abs=1e-15)


@pytest.mark.parametrize("make, name", [
    (lambda: R.L1(-0.1), "l1"), (lambda: R.L1("0.1"), "l1"), (lambda: R.L2(float("nan")), "l2"),
    (lambda: R.L2(True), "l2"), (lambda: R.L1L2(l1=-1), "l1"), (lambda: R.L1L2(l2=float("inf")), "l2"),
    (lambda: R.OrthogonalRegularizer(-0.5), "factor"), (lambda: R.OrthogonalRegularizer(mode="diag"), "mode"),
])
def test_bad_factors_name_the_argument(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_none_factors_fall_back_to_the_defaults():
    assert R.L1(None).l1 == 0.01 and R.L2(None).l2 == 0.01
    assert R.L1L2(None, None).get_config() == {"l1": 0.0, "l2": 0.0}


# ---------------------------------------------------------------- lookup and configs
ALIASES = {"l1": R.L1, "l2": R.L2, "l1_l2": R.L1L2, "l1l2": R.L1L2,
           "orthogonal_regularizer": R.OrthogonalRegularizer, "L1": R.L1, "L2": R.L2, "L1L2": R.L1L2,
           "OrthogonalRegularizer": R.OrthogonalRegularizer}


@pytest.mark.parametrize("name", ALIASES)
def test_get_by_name(name):
    reg = R.get(name)
    assert type(reg) is ALIASES[name]
    assert reg.get_config() == ALIASES[name]().get_config()  # a name means the default arguments


def test_string_defaults():
    assert R.get("l1").l1 == 0.01 and R.get("l2").l2 == 0.01
    assert R.get("l1_l2").get_config() == {"l1": 0.0, "l2": 0.0}  # Keras's L1L2() defaults


@pytest.mark.parametrize("reg", [c[0] for c in CASES], ids=IDS)
def test_config_round_trips(reg):
    data = json.loads(json.dumps(R.serialize(reg)))
    assert data["class_name"] == type(reg).__name__
    back = R.deserialize(data)
    assert type(back) is type(reg) and back.get_config() == reg.get_config()
    assert R.get(data).get_config() == reg.get_config()
    w = tm.Tensor(weights())
    assert back(w).item() == reg(w).item()


def test_get_passes_through_and_rejects():
    reg = R.L2(0.3)
    assert R.get(reg) is reg and R.get(None) is None

    def penalty(x):
        return (x * x).sum()

    assert R.get(penalty) is penalty
    assert isinstance(R.get(R.L1), R.L1)
    with pytest.raises(ValueError, match="l1_l2"):
        R.get("l3")
    with pytest.raises(TypeError):
        R.get(0.01)
    with pytest.raises(TypeError):
        R.serialize(penalty)


# ---------------------------------------------------------------- against Keras 3
@pytest.mark.parametrize("reg, formula", CASES, ids=IDS)
def test_matches_keras(reg, formula):
    keras = keras_reference()
    theirs = keras.regularizers.deserialize(R.serialize(reg))
    # Keras keeps L1's and OrthogonalRegularizer's factor as a float32 tensor, so its config
    # reports the float32 rounding of the factor.
    assert same_config(theirs.get_config(), reg.get_config())
    assert same_config(R.deserialize(keras.regularizers.serialize(theirs)).get_config(), reg.get_config())
    w = weights().astype("float32")  # float32: every Keras backend has it
    if getattr(reg, "mode", None) == "columns":
        # For NumPy-array inputs Keras's normalize turns axis 0 into -1 (``axis or -1``), so its
        # columns mode fails there; its rows mode on the transpose is the same penalty.
        theirs = keras.regularizers.OrthogonalRegularizer(reg.factor, mode="rows")
        w_keras = w.T
    else:
        w_keras = w
    assert reg(tm.Tensor(w)).item() == pytest.approx(float(np.asarray(theirs(w_keras))), rel=1e-5)


def same_config(a, b):
    """Equal keys; numbers equal up to float32 rounding, everything else exactly."""
    return a.keys() == b.keys() and all(
        a[k] == pytest.approx(b[k], rel=1e-7) if isinstance(b[k], float) else a[k] == b[k] for k in b)
