"""The NumPy-made CuPy stand-in is strict where it must be: host arrays are refused, like CuPy."""

import numpy as np
import pytest

import tinygrad_mha as tm
from fake_cupy import DeviceArray, install


def test_fake_device_refuses_host_arrays(monkeypatch):
    fake = install(monkeypatch)
    device_array = fake.ones(3)
    assert isinstance(device_array, DeviceArray) and tm.backend.device_of(device_array) == "cuda"
    with pytest.raises(TypeError, match="host numpy.ndarray"):
        device_array + np.ones(3)  # a ufunc mixing devices
    with pytest.raises(TypeError, match="host numpy.ndarray"):
        fake.matmul(np.ones((2, 3)), fake.ones((3, 2)))  # a module function given a host array
    assert isinstance(fake.asarray(np.ones(2)), DeviceArray)  # moving data on purpose is fine


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
