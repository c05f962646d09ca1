"""The blocked (flash) attention kernel against the dense reference and finite differences.

Blocks are made tiny (2-4 positions) so that every edge case is crossed: T and S not
multiples of the block, T != S, blocks skipped by causal/window bands or by masks, rows with
no key at all.
"""

import math
import tracemalloc

import numpy as np
import pytest

import tinygrad_mha as tm
from tinygrad_mha.kernels import blocked_attention as ba
from tinygrad_mha.kernels import use_kernels


@pytest.fixture(autouse=True)
def kernels_on():
    """These tests are about the kernel: they run it also when CI's second pass turns kernels
    off for the process (TINYGRAD_MHA_KERNELS=0), where the dense reference is what runs."""
    with use_kernels(True):
        yield


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(ba, "BLOCK_Q", 3)
    monkeypatch.setattr(ba, "BLOCK_K", 4)
    monkeypatch.setattr(ba, "BLOCK_ELEMENTS", 24)  # two groups per work item: several items


def _tensors(rng, device, shapes, dtype=np.float64):
    return [tm.Tensor(rng.normal(size=s).astype(dtype), requires_grad=True, device=device) for s in shapes]


def _grads(fn, inputs, rng):
    out = fn(*inputs)
    R = tm.Tensor(rng.normal(size=out.shape).astype(out.dtype), device=out.device)
    for t in inputs:
        t.zero_grad()
    (out * R).sum().backward()
    return [out.numpy()] + [tm.Tensor(t.grad).numpy() for t in inputs]


def _close(a, b, dtype):
    """Each array within rtol of its own largest entry. An array that is zero up to rounding
    (e.g. the key projection's bias gradient: softmax ignores a per-row shift) must just be
    that small on both sides."""
    rtol = 1e-10 if dtype == np.float64 else 1e-5
    largest = max(np.abs(y).max() for y in b)
    for i, (x, y) in enumerate(zip(a, b)):
        scale = np.abs(y).max()
        if scale < 1e-4 * largest:
            assert np.abs(x).max() < 1e-4 * largest, i
            continue
        assert np.abs(x - y).max() <= rtol * scale, (i, np.abs(x - y).max(), scale)


# ------------------------------------------------------------------ dot_product_attention
DPA_CASES = [
    dict(),
    dict(is_causal=True),
    dict(mask="random"),
    dict(mask="random", is_causal=True, bias="keys"),
    dict(bias="full"),
    dict(bias="heads_keys"),
    dict(mask="empty_rows"),
]


def _dpa_inputs(rng, device, case, dtype=np.float64, T=7, S=10, B=2, N=3, H=4):
    inputs = _tensors(rng, device, [(B, T, N, H), (B, S, N, H), (B, S, N, H + 1)], dtype)
    kw = {k: v for k, v in case.items() if k == "is_causal"}
    if "bias" in case:
        shape = {"keys": (1, 1, 1, S), "full": (B, N, T, S), "heads_keys": (N, 1, S)}[case["bias"]]
        inputs.append(_tensors(rng, device, [shape], dtype)[0])
    if case.get("mask") == "random":
        kw["mask"] = rng.random((B, 1, T, S)) > 0.4
    elif case.get("mask") == "empty_rows":
        m = rng.random((B, N, T, S)) > 0.3
        m[0, 1, 2] = False  # a query row with no key
        m[1, :, 4] = False
        kw["mask"] = m
    return inputs, kw


def _dpa(flash, kw):
    def fn(q, k, v, *bias):
        return tm.dot_product_attention(q, k, v, bias=bias[0] if bias else None, flash_attention=flash, **kw)
    return fn


@pytest.mark.parametrize("case", DPA_CASES)
def test_dot_product_attention_gradcheck_blocked(case, small_blocks):
    rng = np.random.default_rng(0)
    inputs, kw = _dpa_inputs(rng, "cpu", case, B=2, N=2, H=2, T=7, S=9)
    assert tm.gradcheck(_dpa(True, kw), tuple(inputs))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", DPA_CASES)
@pytest.mark.parametrize("TS", [(7, 10), (10, 7), (9, 9)])
def test_dot_product_attention_blocked_matches_dense(case, dtype, TS, device, small_blocks):
    rng = np.random.default_rng(1)
    inputs, kw = _dpa_inputs(rng, device, case, dtype, *TS)
    blocked = _grads(_dpa(True, kw), inputs, np.random.default_rng(2))
    dense = _grads(_dpa(False, kw), inputs, np.random.default_rng(2))
    _close(blocked, dense, dtype)
    if case.get("mask") == "empty_rows":
        assert np.all(blocked[0][0, 2, 1] == 0) and np.all(blocked[0][1, 4] == 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_on_wildly_different_scales(dtype, small_blocks):
    """Rows near +1000, 0 and -1000, and scores rising along the keys by more than the
    forward's rescale margin per block, so the running shift moves in every block."""
    rng = np.random.default_rng(16)
    T, S = 7, 13
    bias = np.zeros((1, 1, T, S))
    bias[..., 0, :] += 1000
    bias[..., 1, :] -= 1000
    bias[..., 2, :] += 12.0 * np.arange(S)
    bias[..., 3, :] -= 12.0 * np.arange(S)
    inputs = _tensors(rng, "cpu", [(2, T, 2, 3), (2, S, 2, 3), (2, S, 2, 4)], dtype)
    inputs.append(tm.Tensor(bias.astype(dtype), requires_grad=True))
    for causal in (False, True):
        kw = dict(is_causal=causal)
        blocked = _grads(_dpa(True, kw), inputs, np.random.default_rng(17))
        dense = _grads(_dpa(False, kw), inputs, np.random.default_rng(17))
        assert all(np.isfinite(a).all() for a in blocked)
        if dtype == np.float64:
            _close(blocked, dense, dtype)
        else:  # a float32 score near 1000 carries a rounding error of 6e-5 on either path
            for x, y in zip(blocked, dense):
                np.testing.assert_allclose(x, y, rtol=0, atol=5e-4 * np.abs(y).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_a_block_outrunning_the_shift_is_redone(dtype, rate, small_blocks, monkeypatch, recwarn):
    """After a row's first block the forward tries each block without its max pass. A later
    block whose scores jump far above the shift (e^300 overflows float32; values of exactly
    zero then give inf * 0 in the product) must be redone with the max: the same answer as
    one block holding every key (which never tries), finite, and no floating-point warning
    escapes. Without dropout, also the same as the dense path."""
    rng = np.random.default_rng(21)
    T, S = 6, 13
    bias = np.zeros((1, 1, T, S))
    bias[..., 0, 8:] += 300.0   # the third key block (keys 8-11) outruns the first by 300
    bias[..., 1, 4:8] += 40.0   # past ROWSUM_LIMIT without overflowing
    bias[..., 2, 12:] += 300.0  # only the ragged last block
    q, k, v = _tensors(rng, "cpu", [(2, T, 2, 3), (2, S, 2, 3), (2, S, 2, 4)], dtype)
    v.data[:, 8:10] = 0.0  # zero values meet the overflowed terms in the fast try's product
    b = tm.Tensor(bias.astype(dtype), requires_grad=True)
    perm = (0, 2, 1, 3)
    layout = (perm, perm, perm, (2, 2), (T,), (S,))

    def blocked(q, k, v, b):
        key = tm.backend.random_key(np.random.default_rng(7)) if rate else None
        return ba.blocked_attention(q, k, v, layout, scale=1 / math.sqrt(3), biases=(b,),
                                    rate=rate, random_key=key)
    tried = _grads(blocked, [q, k, v, b], np.random.default_rng(22))
    monkeypatch.setattr(ba, "BLOCK_K", S)  # one key block: the max path only
    whole = _grads(blocked, [q, k, v, b], np.random.default_rng(22))
    assert all(np.isfinite(a).all() for a in tried)
    atol = 1e-10 if dtype == np.float64 else 5e-4
    for x, y in zip(tried, whole):
        np.testing.assert_allclose(x, y, rtol=0, atol=atol * np.abs(y).max())
    if not rate:
        dense = _grads(lambda q, k, v, b: tm.dot_product_attention(
            q, k, v, bias=b, flash_attention=False), [q, k, v, b], np.random.default_rng(22))
        for x, y in zip(tried, dense):
            np.testing.assert_allclose(x, y, rtol=0, atol=atol * np.abs(y).max())
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_dot_product_attention_matches_numpy():
    rng = np.random.default_rng(3)
    q, k, v = rng.normal(size=(1, 5, 2, 3)), rng.normal(size=(1, 6, 2, 3)), rng.normal(size=(1, 6, 2, 3))
    s = np.einsum("btnh,bsnh->bnts", q, k) / math.sqrt(3)
    s = np.where(np.tril(np.ones((5, 6), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    want = np.einsum("bnts,bsnh->btnh", p, v)
    for flash in (True, False):
        got = tm.dot_product_attention(q, k, v, is_causal=True, flash_attention=flash).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_gradcheck_on_device(device, small_blocks):
    rng = np.random.default_rng(0)
    inputs, kw = _dpa_inputs(rng, device, DPA_CASES[3], B=1, N=2, H=2, T=5, S=7)
    assert tm.gradcheck(_dpa(True, kw), tuple(inputs))


def test_float16_runs_in_float16(small_blocks):
    rng = np.random.default_rng(4)
    q, k, v = (tm.Tensor(rng.normal(size=(1, 9, 2, 4)).astype(np.float16)) for _ in range(3))
    a = tm.dot_product_attention(q, k, v, flash_attention=True)
    b = tm.dot_product_attention(q, k, v, flash_attention=False)
    assert a.dtype == np.float16
    np.testing.assert_allclose(a.numpy().astype(np.float32), b.numpy().astype(np.float32), atol=3e-3)


def test_threads_do_not_change_results(small_blocks):
    rng = np.random.default_rng(5)
    inputs = _tensors(rng, "cpu", [(2, 11, 3, 4), (2, 13, 3, 4), (2, 13, 3, 4)])
    results = []
    for threads in (1, 2, 3):
        def fn(q, k, v):
            perm = (0, 2, 1, 3)
            return ba.blocked_attention(q, k, v, (perm, perm, perm, (2, 3), (11,), (13,)), scale=0.5,
                                        causal=True, threads=threads)
        results.append(_grads(fn, inputs, np.random.default_rng(6)))
    for r in results[1:]:
        _close(r, results[0], np.float64)


def test_dot_product_attention_bad_arguments():
    q = np.zeros((1, 4, 2, 3))
    with pytest.raises(ValueError, match="rank 4"):
        tm.dot_product_attention(q[0], q, q)
    with pytest.raises(ValueError, match=r"key \(B, S, N, H\)"):
        tm.dot_product_attention(q, np.zeros((1, 4, 3, 3)), q)
    with pytest.raises(TypeError, match="floating point"):
        tm.dot_product_attention(q.astype(int), q, q)
    with pytest.raises(TypeError, match="one dtype"):
        tm.dot_product_attention(q.astype(np.float32), q, q)
    with pytest.raises(TypeError, match="flash_attention"):
        tm.dot_product_attention(q, q, q, flash_attention="yes")
    with pytest.raises(TypeError, match="is_causal"):
        tm.dot_product_attention(q, q, q, is_causal=1)
    with pytest.raises(ValueError, match="bias of shape"):
        tm.dot_product_attention(q, q, q, bias=np.zeros((3, 4)))
    with pytest.raises(ValueError, match="mask"):
        tm.dot_product_attention(q, q, q, mask=np.ones((3, 4), bool))


def test_no_second_derivatives_through_the_kernel():
    q = tm.Tensor(np.ones((1, 3, 1, 2)), requires_grad=True)
    out = tm.dot_product_attention(q, q, q, flash_attention=True)
    with pytest.raises(NotImplementedError, match="flash_attention=False"):
        tm.grad(out.sum(), [q], create_graph=True)


def test_use_kernels_false_runs_the_reference(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the blocked kernel ran")
    monkeypatch.setattr(ba, "blocked_attention", boom)
    q = np.ones((1, 3, 1, 2))
    with use_kernels(False):
        tm.dot_product_attention(q, q, q, flash_attention=True)
        layer = tm.MultiHeadAttention(1, 2, flash_attention=True)
        layer(q[:, :, 0], q[:, :, 0])
    with pytest.raises(AssertionError, match="blocked kernel ran"):
        tm.dot_product_attention(q, q, q, flash_attention=True)


# ------------------------------------------------------------------ the layer
LAYER_CASES = [
    (dict(), (2, 7, 5), (2, 9, 5), dict()),
    (dict(), (2, 7, 5), (2, 9, 5), dict(use_causal_mask=True)),
    (dict(sliding_window=3), (2, 9, 5), (2, 9, 5), dict(use_causal_mask=True)),
    (dict(sliding_window=2), (2, 10, 5), (2, 8, 5), dict()),
    (dict(), (2, 7, 5), (2, 9, 5), dict(attention_mask="random", query_mask="random", value_mask="random")),
    (dict(), (2, 7, 5), (2, 9, 5), dict(attention_mask="empty_rows")),
    (dict(dropout=0.3), (2, 7, 5), (2, 9, 5), dict(training=True, use_causal_mask=True)),
    (dict(attention_axes=(1, 2)), (2, 3, 4, 5), (2, 3, 4, 5), dict(use_causal_mask=True)),
    (dict(attention_axes=(2,)), (2, 3, 4, 5), (2, 3, 5, 5), dict()),
    (dict(attention_axes=(1, 2), dropout=0.5), (2, 3, 4, 5), (2, 2, 3, 5), dict(training=True)),
]


def _layer_run(flash, cfg, x, y, kw, dtype, device):
    layer = tm.MultiHeadAttention(2, 3, flash_attention=flash, seed=7, dtype=dtype, **cfg)
    layer.build(x.shape, y.shape)
    layer.set_weights([np.random.default_rng(10 + i).normal(size=w.shape) * 0.5
                       for i, w in enumerate(layer.weights)])
    layer.to(device)
    xt = tm.Tensor(x.astype(dtype), requires_grad=True, device=device)
    yt = tm.Tensor(y.astype(dtype), requires_grad=True, device=device)
    out = layer(xt, yt, **kw)
    R = tm.Tensor(np.random.default_rng(11).normal(size=out.shape).astype(dtype), device=device)
    (out * R).sum().backward()
    return [out.numpy(), tm.Tensor(xt.grad).numpy(), tm.Tensor(yt.grad).numpy()] + \
        [tm.Tensor(w.grad).numpy() for w in layer.weights]


def _layer_kw(kw, x, y, rng):
    kw = dict(kw)
    t, s = x.shape[:-1], y.shape[:-1]
    if kw.get("attention_mask") == "random":
        kw["attention_mask"] = rng.random(t + s[1:]) > 0.4
    elif kw.get("attention_mask") == "empty_rows":
        m = rng.random(t + s[1:]) > 0.3
        m[0, 3] = False
        kw["attention_mask"] = m
    if kw.get("query_mask") == "random":
        kw["query_mask"] = rng.random(t) > 0.2
    if kw.get("value_mask") == "random":
        kw["value_mask"] = rng.random(s) > 0.2
    return kw


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cfg, q_shape, v_shape, kw", LAYER_CASES)
def test_layer_blocked_matches_dense(cfg, q_shape, v_shape, kw, dtype, device, small_blocks):
    rng = np.random.default_rng(12)
    x, y = rng.normal(size=q_shape), rng.normal(size=v_shape)
    kw = _layer_kw(kw, x, y, rng)
    blocked = _layer_run(True, cfg, x, y, kw, dtype, device)
    dense = _layer_run(False, cfg, x, y, kw, dtype, device)
    _close(blocked, dense, np.dtype(dtype).type)


def test_layer_gradcheck_blocked(small_blocks):
    rng = np.random.default_rng(13)
    layer = tm.MultiHeadAttention(2, 3, flash_attention=True, dtype="float64", sliding_window=4)
    x = tm.Tensor(rng.normal(size=(2, 7, 4)), requires_grad=True)
    y = tm.Tensor(rng.normal(size=(2, 9, 4)), requires_grad=True)
    mask = rng.random((2, 7, 9)) > 0.3
    layer(x, y)
    assert tm.gradcheck(lambda a, b, *w: layer(a, b, attention_mask=mask, use_causal_mask=True),
                        (x, y, *layer.weights))


def test_dropout_mask_independent_of_blocks(monkeypatch):
    rng = np.random.default_rng(14)
    x = rng.normal(size=(2, 10, 6))
    outs = []
    for bq, bk in ((2, 3), (4, 4), (256, 512)):
        monkeypatch.setattr(ba, "BLOCK_Q", bq)
        monkeypatch.setattr(ba, "BLOCK_K", bk)
        tm.set_seed(0)  # the same weights each time
        layer = tm.MultiHeadAttention(2, 3, dropout=0.4, seed=1, flash_attention=True)
        outs.append(layer(x, x, training=True).numpy())
    tm.set_seed(0)
    dense = tm.MultiHeadAttention(2, 3, dropout=0.4, seed=1, flash_attention=False)(x, x, training=True).numpy()
    for o in outs:
        np.testing.assert_allclose(o, dense, rtol=1e-5, atol=1e-6)
    tm.set_seed(0)
    assert not np.allclose(outs[0], tm.MultiHeadAttention(2, 3, seed=1)(x, x).numpy())  # dropout did act
    tm.set_seed(None)


def test_layer_flash_attention_argument():
    with pytest.raises(TypeError, match="flash_attention"):
        tm.MultiHeadAttention(2, 3, flash_attention="auto")
    layer = tm.MultiHeadAttention(2, 3, flash_attention=True)
    x = np.ones((1, 4, 5), np.float32)
    with pytest.raises(ValueError, match="return_attention_scores"):
        layer(x, x, return_attention_scores=True)
    assert not layer.built  # refused before building anything
    for flash in (None, True, False):
        cfg = tm.MultiHeadAttention(2, 3, flash_attention=flash).get_config()
        assert cfg["flash_attention"] is flash
        assert tm.MultiHeadAttention.from_config(cfg).flash_attention is flash
    # None still returns scores (the dense path runs)
    out, scores = tm.MultiHeadAttention(2, 3)(x, x, return_attention_scores=True)
    assert scores.shape == (1, 2, 4, 4)


def test_auto_picks_blocked_for_long_sequences(monkeypatch):
    calls = []
    real = ba.blocked_attention

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)
    monkeypatch.setattr(ba, "blocked_attention", spy)
    monkeypatch.setattr(ba, "AUTO_MIN_SCORES", 64)
    x = np.ones((1, 8, 4), np.float32)
    tm.MultiHeadAttention(2, 3)(x, x)  # 8 * 8 = 64 scores: blocked
    assert calls == [1]
    tm.MultiHeadAttention(2, 3)(x[:, :7], x[:, :7])  # 49: dense
    tm.MultiHeadAttention(2, 3, flash_attention=False)(x, x)
    assert calls == [1]


def test_memory_is_linear_in_sequence_length():
    """A training step at T = 4096 holds no T x T array: its peak stays under a quarter of one."""
    rng = np.random.default_rng(15)
    T = 4096
    q, k, v = (tm.Tensor(rng.normal(size=(1, T, 1, 16)).astype(np.float32), requires_grad=True)
               for _ in range(3))
    tracemalloc.start()
    out = tm.dot_product_attention(q, k, v, is_causal=True, flash_attention=True)
    out.sum().backward()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 0.25 * T * T * 4, peak


def test_figures(tmp_path):
    pytest.importorskip("matplotlib")
    from tinygrad_mha import plotting
    path = plotting.block_sweep_figure(10, 12, 4, 5, causal=True, window=6, path=tmp_path / "sweep.png")
    assert path.endswith("sweep.png") and (tmp_path / "sweep.png").stat().st_size > 3000
    rows = [{"T": 256, "causal": False, "dense_ms": 9.0, "blocked_ms": 10.0, "dense_mb": 2.0, "blocked_mb": 1.0},
            {"T": 512, "causal": True, "blocked_ms": 20.0, "torch_ms": 5.0, "blocked_mb": 2.0}]
    path = plotting.long_attention_figure(rows, tmp_path / "long.png")
    assert (tmp_path / "long.png").stat().st_size > 3000
    path = plotting.long_attention_figure([{"T": 8, "dense_mb": 1.0, "blocked_mb": 0.5}], tmp_path / "mem.png")
    assert (tmp_path / "mem.png").stat().st_size > 3000



def test_gradients_are_bitwise_reproducible_across_thread_schedules(small_blocks, monkeypatch):
    """dq sums per-lane partials whose terms cancel (softmax gradient rows sum to zero): the
    lanes are fixed before the pool runs and summed in lane order, so thread scheduling never
    changes the rounding. Random sleeps in every block shuffle which thread runs what when."""
    import random
    import time
    monkeypatch.setenv("TINYGRAD_MHA_THREADS", "2")
    real = ba._part_block
    jitter = random.Random(0)

    def slow_part_block(*args):
        time.sleep(jitter.random() / 2000)
        return real(*args)
    monkeypatch.setattr(ba, "_part_block", slow_part_block)
    rng = np.random.default_rng(21)
    inputs = _tensors(rng, "cpu", [(2, 9, 2, 3), (2, 11, 2, 3), (2, 11, 2, 4)], np.float32)
    bias = tm.Tensor(rng.normal(size=(2, 2, 9, 11)).astype(np.float32), requires_grad=True)
    runs = [_grads(_dpa(True, {}), inputs + [bias], np.random.default_rng(22)) for _ in range(4)]
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)
