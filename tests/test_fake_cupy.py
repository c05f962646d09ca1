"""The NumPy-made CuPy stand-in is strict where it must be: host arrays are refused, like CuPy."""

import warnings

import numpy as np
import pytest

import tinygrad_mha as tm
from fake_cupy import DeviceArray, install


def test_fake_device_refuses_host_arrays(monkeypatch):
    fake = install(monkeypatch)
    device_array = fake.ones(3)
    assert isinstance(device_array, DeviceArray) and tm.backend.device_of(device_array) == "cuda"
    with pytest.raises(TypeError, match="Unsupported type"):
        device_array + np.ones(3)  # an operator mixing devices
    with pytest.raises(TypeError, match="Unsupported type"):
        np.ones(3) * device_array  # the same, from the host side (__array_ufunc__)
    with pytest.raises(TypeError, match="Unsupported type"):
        fake.matmul(np.ones((2, 3)), fake.ones((3, 2)))  # a module function given a host array
    with pytest.raises(TypeError, match="Unsupported type"):
        fake.concatenate([fake.ones(2), np.ones(2)])
    with pytest.raises(TypeError, match="Unsupported type"):
        device_array + [1.0, 2.0, 3.0]  # CuPy ufuncs take no lists either
    moved = fake.asarray(np.ones(2))
    assert isinstance(moved, DeviceArray)  # moving data on purpose is fine
    assert float(device_array.sum()) == 3.0 and device_array * np.float32(2) is not None  # scalars are fine


def test_fake_device_array_is_not_a_numpy_array(monkeypatch):
    fake = install(monkeypatch)
    x = fake.arange(6.0).reshape(2, 3)
    assert not isinstance(x, np.ndarray)
    for implicit in (np.asarray, np.array, lambda a: np.ones(3) + a.get() + np.asarray(a)):
        with pytest.raises(TypeError, match="Implicit conversion"):
            implicit(x)
    np.testing.assert_array_equal(x.get(), np.arange(6.0).reshape(2, 3))  # .get() is the way out
    assert isinstance(x.get(), np.ndarray) and isinstance(fake.asnumpy(x), np.ndarray)
    total = x.sum()
    assert isinstance(total, DeviceArray) and total.ndim == 0  # reductions: 0-d device arrays
    assert isinstance(np.sum(x), DeviceArray)  # NumPy functions dispatch to CuPy's (NEP 18)
    with pytest.raises(TypeError):
        np.histogram_bin_edges(x)  # a NumPy function CuPy does not have: no silent host fallback


def test_fake_module_has_only_cupy_names(monkeypatch):
    fake = install(monkeypatch)
    assert callable(fake.einsum) and fake.float32 is np.float32
    for missing in ("histogram_bin_edges", "asmatrix", "nditer", "errstate"):
        with pytest.raises(AttributeError):
            getattr(fake, missing)
    with pytest.raises(AttributeError):
        fake.random.default_rng(0).normal  # cupy.random.Generator has standard_normal, no normal


def test_fake_device_wraps_integer_array_indices_like_cupy(monkeypatch):
    fake = install(monkeypatch)
    x = fake.asarray(np.array([10.0, 11.0, 12.0]))
    assert float(x[[5]][0]) == 12.0 and float(x[fake.asarray(np.array([-4]))][0]) == 12.0  # wraps
    with pytest.raises(IndexError):
        x[5]  # a plain int index still raises
    out = fake.zeros(3)
    fake.add.at(out, fake.asarray(np.array([4, 4])), 1.0)
    np.testing.assert_array_equal(out.get(), [0.0, 2.0, 0.0])


def test_fake_device_emits_no_floating_point_warnings(monkeypatch):
    fake = install(monkeypatch)
    x = fake.asarray(np.array([0.0, 1.0, 1e300]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = (fake.ones(3) / x) * x * 1e300
        fake.log(x - 1.0)
    assert np.isnan(y.get()[0]) or np.isinf(y.get()[0])


def test_fake_random_stream_is_not_numpys(monkeypatch):
    fake = install(monkeypatch)
    on_device = fake.random.default_rng(0).random(5)
    assert isinstance(on_device, DeviceArray)
    assert not np.allclose(on_device.get(), np.random.default_rng(0).random(5))


def test_attention_training_step_on_the_fake_device_matches_cpu(monkeypatch):
    # The whole path a user takes: a layer moved to "cuda", masks, backward, an optimizer
    # step; every result must stay a device array and equal the CPU run.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 8))
    mask = rng.random((2, 5, 5)) > 0.3
    results = {}
    for device in ("cpu", "cuda"):
        if device == "cuda":
            install(monkeypatch)
        tm.set_seed(1)
        layer = tm.MultiHeadAttention(num_heads=2, key_dim=4, dtype="float64")
        layer.build((2, 5, 8), (2, 5, 8))
        layer.to(device)
        xt = tm.Tensor(x, requires_grad=True, device=device)
        out, scores = layer(xt, xt, attention_mask=mask, use_causal_mask=True, return_attention_scores=True)
        ((out * out).sum() + scores.sum()).backward()
        tm.optimizers.Adam(layer.weights, learning_rate=0.1).step()
        arrays = [out.data, scores.data, xt.grad] + [w.data for w in layer.weights]
        assert all(tm.backend.device_of(a) == device for a in arrays)
        results[device] = [tm.backend.to_numpy(a) for a in arrays]
    for on_cpu, on_fake in zip(results["cpu"], results["cuda"]):
        np.testing.assert_allclose(on_fake, on_cpu, rtol=1e-12, atol=1e-12)
