"""Constraints: projections against NumPy formulas and Keras, on every device, and their configs."""

import json

import numpy as np
import pytest

import tinygrad_mha as tm
from tinygrad_mha import constraints as C
from tinygrad_mha.backend import to_device, to_numpy

EPS = 1e-7  # Keras's backend.epsilon()


def keras_reference():
    """Keras 3 as an independent reference, on whichever backend the session chose, or skip."""
    return pytest.importorskip("keras")


def kernel(shape=(6, 5), seed=0):
    """Columns with norms from well below 1 to well above 3."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape)
    return w * rng.uniform(0.05, 2.0, size=shape[-1])


def column_norms(w, axis=0):
    return np.sqrt((w ** 2).sum(axis=axis, keepdims=True))


def rescaled(w, target, axis=0):
    """w with each slice's norm changed from n to target(n), Keras's way: w * target / (eps + n)."""
    n = column_norms(w, axis)
    return w * target(n) / (EPS + n)


CASES = [
    (C.MaxNorm(), lambda w: rescaled(w, lambda n: np.minimum(n, 2.0))),
    (C.MaxNorm(1.0, axis=1), lambda w: rescaled(w, lambda n: np.minimum(n, 1.0), axis=1)),
    (C.MinMaxNorm(), lambda w: rescaled(w, lambda n: np.clip(n, 0.0, 1.0))),
    (C.MinMaxNorm(0.8, 1.5, rate=0.25),
     lambda w: rescaled(w, lambda n: 0.25 * np.clip(n, 0.8, 1.5) + 0.75 * n)),
    (C.NonNeg(), lambda w: np.where(w < 0, 0.0, w)),
    (C.UnitNorm(), lambda w: w / (EPS + column_norms(w))),
    (C.UnitNorm(axis=-1), lambda w: w / (EPS + column_norms(w, -1))),
]
IDS = [repr(c) for c, _ in CASES]


@pytest.mark.parametrize("constraint, formula", CASES, ids=IDS)
def test_matches_numpy(constraint, formula):
    w = kernel()
    np.testing.assert_allclose(constraint(w), formula(w), rtol=1e-12, atol=1e-15)


def test_resulting_norms():
    w = kernel((50, 40))
    norms = column_norms(w)
    assert norms.min() < 1.0 and norms.max() > 3.0  # the data covers both sides of each bound
    np.testing.assert_allclose(column_norms(C.MaxNorm(2.0)(w)), np.minimum(norms, 2.0), rtol=1e-6)
    np.testing.assert_allclose(column_norms(C.UnitNorm()(w)), 1.0, rtol=1e-6)
    out = column_norms(C.MinMaxNorm(1.0, 2.0, rate=1.0)(w))
    assert out.min() >= 1.0 - 1e-6 and out.max() <= 2.0 + 1e-6
    half = column_norms(C.MinMaxNorm(1.0, 2.0, rate=0.5)(w))
    np.testing.assert_allclose(half, 0.5 * norms + 0.5 * np.clip(norms, 1.0, 2.0), rtol=1e-6)
    assert (C.NonNeg()(w) >= 0).all()


def test_axis_list_constrains_whole_filters():
    w = kernel((3, 3, 4, 8))  # a conv kernel: each filter is w[..., k]
    out = C.MaxNorm(1.0, axis=[0, 1, 2])(w)
    filter_norms = np.sqrt((out ** 2).sum(axis=(0, 1, 2)))
    assert filter_norms.max() <= 1.0 + 1e-6
    np.testing.assert_allclose(out, rescaled(w, lambda n: np.minimum(n, 1.0), axis=(0, 1, 2)), rtol=1e-12)


def test_zero_slices_stay_zero():
    w = kernel()
    w[:, 1] = 0.0
    for constraint, _ in CASES:
        out = constraint(w)
        assert np.all(np.isfinite(out)) and np.all(out[:, 1] == 0.0)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_keeps_dtype_and_shape(dtype):
    w = kernel().astype(dtype)
    for constraint, formula in CASES:
        out = constraint(w)
        assert out.dtype == np.dtype(dtype) and out.shape == w.shape
        tol = {"float16": 2e-3, "float32": 1e-6, "float64": 1e-12}[dtype]
        np.testing.assert_allclose(out.astype("float64"), formula(w.astype("float64")), rtol=tol, atol=tol)


def test_runs_on_each_device(device):
    w = kernel().astype("float32")
    for constraint, _ in CASES:
        out = constraint(to_device(w, device))
        assert tm.backend.device_of(out) == device
        np.testing.assert_allclose(to_numpy(out), constraint(w), rtol=1e-6, atol=1e-7)


def test_accepts_tensors_and_lists():
    w = kernel()
    np.testing.assert_array_equal(C.NonNeg()(tm.Tensor(w)), C.NonNeg()(w))
    assert C.NonNeg()([[-1.0, 2.0]]).tolist() == [[0.0, 2.0]]


@pytest.mark.parametrize("make, name", [
    (lambda: C.MaxNorm(-1.0), "max_value"), (lambda: C.MaxNorm("2"), "max_value"),
    (lambda: C.MinMaxNorm(min_value=-0.5), "min_value"), (lambda: C.MinMaxNorm(2.0, 1.0), "min_value"),
    (lambda: C.MinMaxNorm(rate=-1), "rate"),
])
def test_bad_values_name_the_argument(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_bad_axis():
    with pytest.raises(TypeError, match="axis"):
        C.UnitNorm(axis=0.5)
    with pytest.raises(TypeError, match="axis"):
        C.MaxNorm(axis=[0, "1"])


# ---------------------------------------------------------------- lookup and configs
ALIASES = {"max_norm": C.MaxNorm, "min_max_norm": C.MinMaxNorm, "non_neg": C.NonNeg,
           "unit_norm": C.UnitNorm, "MaxNorm": C.MaxNorm, "MinMaxNorm": C.MinMaxNorm,
           "NonNeg": C.NonNeg, "UnitNorm": C.UnitNorm}


@pytest.mark.parametrize("name", ALIASES)
def test_get_by_name(name):
    constraint = C.get(name)
    assert type(constraint) is ALIASES[name]
    assert constraint.get_config() == ALIASES[name]().get_config()


def test_defaults_are_keras():
    assert C.MaxNorm().get_config() == {"max_value": 2, "axis": 0}
    assert C.MinMaxNorm().get_config() == {"min_value": 0.0, "max_value": 1.0, "rate": 1.0, "axis": 0}
    assert C.UnitNorm().get_config() == {"axis": 0} and C.NonNeg().get_config() == {}


@pytest.mark.parametrize("constraint", [c for c, _ in CASES] + [C.MaxNorm(3.0, axis=[0, 1])], ids=repr)
def test_config_round_trips(constraint):
    data = json.loads(json.dumps(C.serialize(constraint)))
    assert data["class_name"] == type(constraint).__name__
    back = C.deserialize(data)
    assert type(back) is type(constraint) and back.get_config() == constraint.get_config()
    assert C.get(data).get_config() == constraint.get_config()


def test_get_passes_through_and_rejects():
    constraint = C.UnitNorm(1)
    assert C.get(constraint) is constraint and C.get(None) is None
    clip = np.abs
    assert C.get(clip) is clip
    with pytest.raises(ValueError, match="max_norm"):
        C.get("maxnorm")
    with pytest.raises(TypeError):
        C.get(2.0)


# ---------------------------------------------------------------- against Keras 3
@pytest.mark.parametrize("constraint, formula", CASES, ids=IDS)
def test_matches_keras(constraint, formula):
    keras = keras_reference()
    theirs = keras.constraints.deserialize(C.serialize(constraint))
    assert theirs.get_config() == constraint.get_config()
    assert C.deserialize(keras.constraints.serialize(theirs)).get_config() == constraint.get_config()
    w = kernel().astype("float32")
    np.testing.assert_allclose(constraint(w), np.asarray(theirs(w)), rtol=1e-6, atol=1e-7)
