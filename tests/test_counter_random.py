"""The counter-based uniforms behind dropout: a pure function of (key, position).

Blocked attention redraws the dense path's dropout mask block by block, and a seeded run must
give the same masks on cpu and cuda; both rest on the properties checked here.
"""

import numpy as np
import pytest

import tinygrad_mha as tm
from tinygrad_mha import backend


def test_numbers_lie_in_the_unit_interval_and_look_uniform():
    u = backend.uniform(backend.random_key(7), (1000, 1000))
    assert u.dtype == np.float32 and u.shape == (1000, 1000)
    assert u.min() >= 0.0 and u.max() < 1.0
    # 1e6 draws: the mean of U(0, 1) is 0.5 +- 0.0003 (one sd), each decile holds 10% +- 0.03%
    assert abs(u.mean() - 0.5) < 0.002
    counts = np.histogram(u, bins=10, range=(0, 1))[0] / u.size
    np.testing.assert_allclose(counts, 0.1, atol=0.002)
    # neighbouring positions are not correlated (a weak counter hash would show it here)
    assert abs(np.corrcoef(u.ravel()[:-1], u.ravel()[1:])[0, 1]) < 0.01


def test_any_block_of_positions_gives_the_full_arrays_numbers():
    key = backend.random_key(3)
    full = backend.uniform(key, (2, 3, 7, 5))
    t = np.arange(2, 6)[:, None]
    s = np.arange(1, 4)[None, :]
    b, h = 1, 2
    block = backend.uniform_at(key, ((b * 3 + h) * 7 + t) * 5 + s)
    np.testing.assert_array_equal(block, full[b, h, 2:6, 1:4])


def test_keys_separate_streams_and_int_seeds_are_fixed():
    a, b = backend.random_key(1), backend.random_key(2)
    assert a != b and backend.random_key(1) == a
    ua, ub = backend.uniform(a, (4096,)), backend.uniform(b, (4096,))
    assert np.mean(ua == ub) < 0.01
    rng = backend.make_generator(5)
    assert backend.random_key(rng) != backend.random_key(rng)  # a stream advances per call


def test_seeded_dropout_mask_is_the_same_on_cpu_and_cuda(device):
    x = np.ones((3, 4, 50), dtype=np.float32)
    cpu = tm.dropout(tm.Tensor(x), 0.3, seed=11).numpy()
    other = tm.dropout(tm.Tensor(x, device=device), 0.3, seed=11).numpy()
    np.testing.assert_array_equal(cpu, other)
    tm.set_seed(4)
    cpu = tm.dropout(tm.Tensor(x), 0.3).numpy()
    tm.set_seed(4)
    other = tm.dropout(tm.Tensor(x, device=device), 0.3).numpy()
    np.testing.assert_array_equal(cpu, other)
    kept = np.mean(cpu != 0)
    assert 0.6 < kept < 0.8


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_seeded_layer_dropout_is_the_same_on_cpu_and_cuda(device, dtype):
    rng = np.random.default_rng(0)
    q = rng.standard_normal((2, 5, 6)).astype(dtype)
    outs = []
    for dev in ("cpu", device):
        tm.set_seed(1)
        layer = tm.MultiHeadAttention(2, 3, dropout=0.5, seed=8, dtype=dtype)
        layer(q, q)  # build on the host, then move: the same weights on both runs
        layer.to(dev)
        outs.append([layer(tm.Tensor(q, device=dev), tm.Tensor(q, device=dev),
                           training=True).numpy() for _ in range(2)])
    for a, b in zip(*outs):
        np.testing.assert_allclose(a, b, rtol=1e-3 if dtype == "float16" else 1e-6)
    assert not np.allclose(outs[0][0], outs[0][1])  # the layer's stream advances per call
