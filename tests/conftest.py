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
def device(request):
    """Run a test once per device; the CUDA run skips cleanly without CuPy and a GPU."""
    if request.param == "cuda" and "cuda" not in DEVICES:
        pytest.skip("CUDA device not available (needs cupy and a GPU)")
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(0)
