"""Shared fixtures: the device list (CPU always, CUDA when CuPy and a GPU are present)."""

import os

# One Keras backend for the whole session, chosen before anything imports keras: jax, so
# the parity tests can take gradients through Keras (jax.grad over stateless_call).
os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pytest

import tinygrad_mha as tm

DEVICES = ["cpu"] + (["cuda"] if tm.cuda_available() else [])


@pytest.fixture(params=["cpu", "cuda"])
def device(request, monkeypatch):
    """Run a test once per device. Without CuPy and a GPU, the "cuda" run uses the NumPy-made
    stand-in of ``fake_cupy`` (so the CUDA code path still runs), or skips when
    TM_FAKE_CUDA=0."""
    if request.param == "cuda" and "cuda" not in DEVICES:
        if os.environ.get("TM_FAKE_CUDA", "1") == "0":
            pytest.skip("CUDA device not available (needs cupy and a GPU)")
        from fake_cupy import install
        install(monkeypatch)
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(0)
