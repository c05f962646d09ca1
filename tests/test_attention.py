"""tm.ops.attention: the fused node (a kernel) agrees with the same steps recorded one by one
(the reference composition)."""

import numpy as np
import pytest

import tinygrad_mha as tm
from tinygrad_mha.kernels.fused_attention import Attention

DOT, COMBINE = "bshd,bthd->bhts", "bhts,bshd->bthd"


def _inputs(rng, B=2, T=3, S=4, H=2, D=3, Dv=2, device="cpu"):
    shapes = ((B, T, H, D), (B, S, H, D), (B, S, H, Dv))
    return [tm.Tensor(rng.standard_normal(s), requires_grad=True, device=device) for s in shapes]


def _run(inputs, create_graph=False, **kw):
    """Output and the gradients of sum(out * R) for query, key and value."""
    out = tm.ops.attention(*inputs, DOT, COMBINE, **kw)
    if isinstance(out, tuple):
        out = out[0]
    R = tm.Tensor(np.random.default_rng(9).standard_normal(out.shape), device=out.device)
    grads = tm.grad((out * R).sum(), inputs, create_graph=create_graph)
    return out.numpy(), [g.numpy() for g in grads]


def _manual(q, k, v, scale, mask, keep):
    """The same attention in plain NumPy (float64)."""
    scores = scale * np.einsum(DOT, k, q)
    scores = np.where(mask, scores, -np.inf) if mask is not None else scores
    shifted = scores - np.max(np.where(np.isfinite(scores), scores, -1e300), axis=-1, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(-1, keepdims=True)
    probs = e / np.where(total == 0, 1, total)
    return np.einsum(COMBINE, probs * (1 if keep is None else keep), v), probs


MASK = np.array([[True, True, False, True], [False, False, False, False], [True, False, True, True]])


@pytest.mark.parametrize("mask", [None, MASK], ids=["nomask", "mask"])
def test_matches_numpy(mask, device):
    q, k, v = _inputs(np.random.default_rng(0), device=device)
    out, probs = tm.ops.attention(q, k, v, DOT, COMBINE, scale=0.4, mask=mask, return_probs=True)
    fused = tm.ops.attention(q, k, v, DOT, COMBINE, scale=0.4, mask=mask)
    want, want_probs = _manual(q.numpy(), k.numpy(), v.numpy(), 0.4, mask, None)
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fused.numpy(), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(probs.numpy(), want_probs, rtol=1e-12, atol=1e-12)
    if mask is not None:  # the query with nothing to attend to: zero probabilities, zero output
        assert not probs.numpy()[:, :, 1].any() and not fused.numpy()[:, 1].any()


@pytest.mark.parametrize("kw", [{}, {"scale": 0.5, "mask": MASK}, {"mask": MASK, "dropout_rate": 0.4, "seed": 3}],
                         ids=["plain", "scale-mask", "mask-dropout"])
def test_fused_and_separate_paths_agree(kw, device):
    inputs = _inputs(np.random.default_rng(1), device=device)
    fused_out, fused_grads = _run(inputs, **kw)
    separate_out, separate_grads = _run(inputs, return_probs=True, **kw)
    np.testing.assert_allclose(fused_out, separate_out, rtol=1e-12, atol=1e-12)
    for a, b in zip(fused_grads, separate_grads):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_dropout_draws_the_same_mask_as_dropout():
    """The fused node's multiplier is the one tm.dropout would draw from the same seed."""
    q, k, v = _inputs(np.random.default_rng(2))
    out = tm.ops.attention(q, k, v, DOT, COMBINE, dropout_rate=0.5, seed=11)
    _, probs = _manual(q.numpy(), k.numpy(), v.numpy(), 1.0, None, None)
    keep = tm.dropout(tm.Tensor(np.ones(probs.shape)), 0.5, seed=11).numpy()
    assert 0 < (keep == 0).mean() < 1
    np.testing.assert_allclose(out.numpy(), np.einsum(COMBINE, probs * keep, v.numpy()), rtol=1e-12)


@pytest.mark.parametrize("kw", [{"scale": 0.7, "mask": MASK}, {"mask": MASK, "dropout_rate": 0.3, "seed": 4}],
                         ids=["scale-mask", "mask-dropout"])
def test_recorded_and_plain_backward_agree(kw):
    inputs = _inputs(np.random.default_rng(3))
    _, plain = _run(inputs, **kw)
    _, recorded = _run(inputs, create_graph=True, **kw)
    for a, b in zip(plain, recorded):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("wanted", [(0,), (1,), (2,), (0, 2)])
def test_gradients_for_some_inputs_only(wanted):
    rng = np.random.default_rng(4)
    inputs = _inputs(rng)
    for i, t in enumerate(inputs):
        t.requires_grad = i in wanted
    fn = lambda *ts: tm.ops.attention(*[ts[wanted.index(i)] if i in wanted else inputs[i] for i in range(3)],  # noqa: E731
                                      DOT, COMBINE, mask=MASK)
    assert tm.gradcheck(fn, [inputs[i] for i in wanted])


@tm.use_kernels(True)
def test_fused_node_keeps_probabilities_not_scores():
    q, k, v = _inputs(np.random.default_rng(5))
    out = tm.ops.attention(q, k, v, DOT, COMBINE, mask=MASK)
    node = out._ctx
    assert isinstance(node, Attention)
    assert node.probs.shape == (2, 2, 3, 4) and node.keep is None


@tm.use_kernels(True)
def test_equation_outside_the_fused_form_uses_separate_ops():
    """A letter summed inside the key alone (e) has a gradient that is broadcast, not contracted:
    the separate einsums handle it, and the result is still right."""
    rng = np.random.default_rng(6)
    q = tm.Tensor(rng.standard_normal((2, 3, 2, 1)), requires_grad=True)
    k = tm.Tensor(rng.standard_normal((2, 4, 2, 3)), requires_grad=True)
    v = tm.Tensor(rng.standard_normal((2, 4, 2, 2)), requires_grad=True)
    fn = lambda q, k, v: tm.ops.attention(q, k, v, "bshe,bthd->bhts", COMBINE)  # noqa: E731
    out = fn(q, k, v)
    assert not isinstance(out._ctx, Attention)
    want = np.einsum(COMBINE, _softmax(np.einsum("bshe,bthd->bhts", k.numpy(), q.numpy())), v.numpy())
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-12)
    assert tm.gradcheck(fn, [q, k, v])


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_low_precision_stays_in_its_dtype(dtype):
    q, k, v = (tm.Tensor(t.numpy().astype(dtype), requires_grad=True) for t in _inputs(np.random.default_rng(7)))
    out = tm.ops.attention(q, k, v, DOT, COMBINE, scale=0.5, mask=MASK, dropout_rate=0.2, seed=1)
    out.sum().backward()
    assert out.dtype == dtype and all(t.grad.dtype == dtype for t in (q, k, v))
    assert all(np.isfinite(t.grad).all() for t in (q, k, v))


def test_bad_arguments_raise_before_anything_runs():
    q, k, v = _inputs(np.random.default_rng(8))
    with pytest.raises(TypeError, match="attention: query must be a floating point"):
        tm.ops.attention(tm.Tensor(np.ones((2, 3, 2, 3), dtype=int)), k, v, DOT, COMBINE)
    with pytest.raises(ValueError, match=r"attention: mask of shape \(3, 3\) does not broadcast to shape \(2, 2, 3, 4\)"):
        tm.ops.attention(q, k, v, DOT, COMBINE, mask=np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="dropout rate must be a number in"):
        tm.ops.attention(q, k, v, DOT, COMBINE, dropout_rate=1.0)
    with pytest.raises(TypeError, match="seed must be None"):
        tm.ops.attention(q, k, v, DOT, COMBINE, dropout_rate=0.1, seed="x")
    with pytest.raises(ValueError, match="einsum: subscript 'd' has size 2 in one place and 3"):
        tm.ops.attention(q, k[..., :2], v, DOT, COMBINE)


@pytest.mark.parametrize("kw, shapes", [
    ({"num_heads": 2, "key_dim": 3, "value_dim": 2}, [(2, 3, 4), (2, 5, 3)]),
    ({"num_heads": 2, "key_dim": 2, "attention_axes": (1, 2)}, [(2, 2, 3, 4), (2, 3, 2, 4)]),
], ids=["rank3", "rank4-2d-axes"])
def test_layer_paths_agree_with_dropout_and_masks(kw, shapes):
    """MultiHeadAttention uses the fused node unless the scores are asked for; the two paths
    give the same output and gradients (same seed, so the same dropout mask)."""
    rng = np.random.default_rng(12)
    arrays = [rng.standard_normal(s) for s in shapes]
    q_mask = rng.random(shapes[0][:-1]) > 0.2
    results = []
    for scores in (False, True):
        layer = tm.MultiHeadAttention(dropout=0.3, seed=5, dtype="float64", **kw)
        layer.build(*shapes)
        layer.set_weights([np.random.default_rng(i).standard_normal(w.shape) for i, w in enumerate(layer.weights)])
        q, v = (tm.Tensor(a, requires_grad=True) for a in arrays)
        out = layer(q, v, query_mask=q_mask, use_causal_mask=True, training=True,
                    return_attention_scores=scores)
        out = out[0] if scores else out
        (out * tm.Tensor(np.cos(np.arange(out.size)).reshape(out.shape))).sum().backward()
        results.append([out.numpy(), q.grad, v.grad] + [w.grad for w in layer.weights])
    for fused, separate in zip(*results):
        np.testing.assert_allclose(fused, separate, rtol=1e-10, atol=1e-12)
