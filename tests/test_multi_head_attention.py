"""MultiHeadAttention: float64 gradient checks of every input and weight, semantics against a
plain NumPy reference (and Keras when installed), masks, dropout, seeds, regularizers,
constraints, and a small training run on every available device.

The reference below never looks inside the layer: it reads the weights with ``get_weights``
(Keras order: query, key, [gate], value, output; kernel then bias) and redoes the whole
computation with ``np.tensordot``, transposes and reshapes.
"""

import math

import numpy as np
import pytest

import tinygrad_mha as tm
from tinygrad_mha import constraints, initializers, regularizers

MHA = tm.MultiHeadAttention


# ---------------------------------------------------------------- NumPy reference
def np_masked_softmax(x, keep):
    """Softmax over the last axis; dropped entries are 0 and a row with nothing kept is all 0."""
    big = np.where(keep, x, -np.inf)
    top = big.max(axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    e = np.where(keep, np.exp(np.where(keep, x, 0.0) - top), 0.0)
    total = e.sum(axis=-1, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0)


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference_mha(weights, query, value, key=None, *, attention_axes=None, mask=None,
                  use_bias=True, use_gate=False, causal=False, window=None, keep=None):
    """Multi-head attention in NumPy; returns (output, scores) with scores laid out as
    (B, non-attended index axes, heads, query attention dims, key attention dims).

    ``mask`` must already broadcast to that scores shape; ``keep`` (same layout, optional)
    multiplies the probabilities used for the output (a dropout mask, already scaled).
    """
    key = value if key is None else key
    w = [np.asarray(a, dtype=np.float64) for a in weights]

    def dense():
        kernel = w.pop(0)
        bias = w.pop(0) if use_bias else 0.0
        return kernel, bias

    wq, bq = dense()
    wk, bk = dense()
    if use_gate:
        wg, bg = dense()
    wv, bv = dense()
    wo, bo = dense()
    assert not w, "reference_mha: unexpected number of weights"

    rank = query.ndim
    if attention_axes is None:
        axes = list(range(1, rank - 1))
    else:
        given = (attention_axes,) if isinstance(attention_axes, int) else attention_axes
        axes = [a % rank for a in given]
    batch = [a for a in range(rank - 1) if a not in axes]  # B and non-attended index axes
    key_dim = wq.shape[-1]

    q = np.tensordot(query, wq, axes=([-1], [0])) + bq  # (B, *index, H, D)
    k = np.tensordot(key, wk, axes=([-1], [0])) + bk
    v = np.tensordot(value, wv, axes=([-1], [0])) + bv
    perm = batch + [rank - 1] + axes + [rank]  # (batch dims, H, attention dims, D)

    def heads_first(x):
        x = x.transpose(perm)
        lead = len(batch) + 1
        return x.reshape(x.shape[:lead] + (-1, x.shape[-1]))

    qh, kh, vh = heads_first(q) / math.sqrt(key_dim), heads_first(k), heads_first(v)
    logits = qh @ np.swapaxes(kh, -1, -2)  # (..., H, T, S) with T, S flattened
    t_dims = tuple(query.shape[a] for a in axes)
    s_dims = tuple(value.shape[a] for a in axes)
    full = logits.shape[:-2] + t_dims + s_dims
    allowed = np.ones(full, dtype=bool)
    if mask is not None:
        allowed = allowed & np.broadcast_to(np.asarray(mask, dtype=bool), full)
    allowed = allowed.reshape(logits.shape)
    n_t, n_s = logits.shape[-2:]
    rows, cols = np.indices((n_t, n_s))
    if causal:
        allowed = allowed & (rows >= cols)
    if window is not None:
        allowed = allowed & (np.abs(rows - cols) < window)
    probs = np_masked_softmax(logits, allowed)
    used = probs if keep is None else probs * np.asarray(keep).reshape(probs.shape)
    ctx = used @ vh  # (..., H, T, Dv)
    ctx = ctx.reshape(ctx.shape[:-2] + t_dims + ctx.shape[-1:]).transpose(np.argsort(perm))
    if use_gate:
        ctx = ctx * np_sigmoid(np.tensordot(query, wg, axes=([-1], [0])) + bg)
    out = np.tensordot(ctx, wo, axes=([-2, -1], [0, 1])) + bo
    return out, probs.reshape(full)


def randn(rng, *shape):
    return rng.standard_normal(shape)


RANDOM_BIAS = {"class_name": "RandomNormal", "config": {"stddev": 0.5, "seed": 3}}


def layer64(num_heads=2, key_dim=2, **kwargs):
    """A float64 layer whose biases are random too, so bias mistakes cannot hide behind zeros."""
    kwargs.setdefault("bias_initializer", RANDOM_BIAS)
    return MHA(num_heads, key_dim, dtype="float64", **kwargs)


# ---------------------------------------------------------------- gradient checks
def gradcheck_layer(layer, arrays, *, scores=False, losses=False, before=None, **call_kwargs):
    """gradcheck of ``layer(*arrays)`` w.r.t. every input array and every weight."""
    inputs = [tm.Tensor(a, requires_grad=True) for a in arrays]
    layer(*inputs, **call_kwargs)  # builds
    weights = layer.weights
    assert weights and all(isinstance(w, tm.layers.Parameter) and w.requires_grad for w in weights)
    n = len(inputs)

    def fn(*args):
        if before is not None:
            before()
        result = layer(*args[:n], return_attention_scores=scores, **call_kwargs)
        if scores:
            out, probs = result
            result = tm.concatenate([out.reshape(-1), probs.reshape(-1)])
        if losses:
            total = result.sum()
            for loss in layer.losses:
                total = total + loss
            result = total
        return result

    assert tm.gradcheck(fn, (*inputs, *weights))


GRAD_CASES = {
    # name: (layer kwargs, input shapes (query, value[, key]), call kwargs)
    "rank3_self": ({}, [(2, 3, 4), (2, 3, 4)], {}),
    "rank3_cross": ({}, [(2, 3, 4), (2, 4, 3)], {}),
    "rank4_default_axes": ({}, [(1, 2, 3, 3), (1, 3, 2, 3)], {}),
    "rank4_axis1": ({"attention_axes": (1,)}, [(2, 3, 2, 3), (2, 2, 2, 3)], {}),
    "rank4_axis2": ({"attention_axes": 2}, [(2, 2, 3, 3), (2, 2, 2, 3)], {}),
    "rank4_negative_axis": ({"attention_axes": (-2,)}, [(1, 2, 3, 3), (1, 2, 2, 3)], {}),
    "rank5_axes_12": ({"attention_axes": (1, 2)}, [(1, 2, 2, 2, 3), (1, 2, 1, 2, 3)], {}),
    "rank5_axes_23": ({"attention_axes": (2, 3)}, [(1, 2, 2, 2, 3), (1, 2, 2, 1, 3)], {}),
    "rank5_axes_negative": ({"attention_axes": (-4, -2), "num_heads": 1},
                            [(1, 2, 2, 2, 2), (1, 1, 2, 2, 2)], {}),
    "output_shape_int": ({"output_shape": 5}, [(2, 3, 4), (2, 2, 4)], {}),
    "output_shape_tuple": ({"output_shape": (2, 3)}, [(2, 3, 4), (2, 2, 4)], {}),
    "value_dim": ({"key_dim": 2, "value_dim": 3}, [(2, 3, 4), (2, 2, 4)], {}),
    "separate_key": ({"value_dim": 3}, [(2, 3, 4), (2, 2, 3), (2, 2, 5)], {}),
    "no_bias": ({"use_bias": False}, [(2, 3, 4), (2, 2, 3)], {}),
    "causal": ({}, [(2, 4, 3), (2, 4, 3)], {"use_causal_mask": True}),
    "causal_cross": ({}, [(1, 3, 3), (1, 4, 3)], {"use_causal_mask": True}),
    "gate": ({"use_gate": True, "value_dim": 3}, [(2, 3, 4), (2, 2, 4)], {}),
    "sliding_window": ({"sliding_window": 2}, [(2, 4, 3), (2, 4, 3)], {}),
    "sliding_window_causal": ({"sliding_window": 2}, [(1, 4, 3), (1, 4, 3)],
                              {"use_causal_mask": True}),
}


@pytest.mark.parametrize("name", sorted(GRAD_CASES))
def test_gradcheck_output(name):
    layer_kwargs, shapes, call_kwargs = GRAD_CASES[name]
    layer_kwargs = dict(layer_kwargs)
    heads = layer_kwargs.pop("num_heads", 2)
    kdim = layer_kwargs.pop("key_dim", 2)
    rng = np.random.default_rng(sum(map(ord, name)))
    layer = layer64(heads, kdim, **layer_kwargs)
    gradcheck_layer(layer, [randn(rng, *s) for s in shapes], **call_kwargs)


@pytest.mark.parametrize("name", ["rank3_cross", "rank4_axis2", "rank5_axes_12", "gate", "causal"])
def test_gradcheck_output_and_scores(name):
    layer_kwargs, shapes, call_kwargs = GRAD_CASES[name]
    rng = np.random.default_rng(1)
    layer = layer64(**layer_kwargs)
    gradcheck_layer(layer, [randn(rng, *s) for s in shapes], scores=True, **call_kwargs)


def attention_masks(rng, b, h, t, s):
    """One random mask of every accepted shape, with at least one key per query row."""
    def draw(*shape):
        m = rng.random(shape) < 0.6
        m[..., 0] = True
        return m
    return {"TS": draw(t, s), "BTS": draw(b, t, s), "1TS": draw(1, t, s),
            "B1S": draw(b, 1, s), "BHTS": draw(b, h, t, s)}


@pytest.mark.parametrize("kind", ["TS", "BTS", "1TS", "B1S", "BHTS"])
def test_gradcheck_attention_mask_shapes(kind):
    rng = np.random.default_rng(7)
    mask = attention_masks(rng, 2, 2, 3, 4)[kind]
    layer = layer64()
    gradcheck_layer(layer, [randn(rng, 2, 3, 4), randn(rng, 2, 4, 3)], scores=True,
                    attention_mask=mask)


def test_gradcheck_with_fully_masked_rows():
    rng = np.random.default_rng(8)
    mask = rng.random((2, 3, 4)) < 0.6
    mask[..., 0] = True
    mask[0, 1] = False
    mask[1, 2] = False
    gradcheck_layer(layer64(), [randn(rng, 2, 3, 4), randn(rng, 2, 4, 3)], scores=True,
                    attention_mask=mask)


def test_fully_masked_rows_are_finite_give_the_output_bias_and_no_gradient():
    rng = np.random.default_rng(9)
    layer = layer64()
    mask = np.ones((2, 3, 4), dtype=bool)
    mask[0, 1] = False
    mask[1, 2] = False
    q = tm.Tensor(randn(rng, 2, 3, 4), requires_grad=True)
    v = tm.Tensor(randn(rng, 2, 4, 3), requires_grad=True)
    k = tm.Tensor(randn(rng, 2, 4, 5), requires_grad=True)
    out, scores = layer(q, v, k, attention_mask=mask, return_attention_scores=True)
    assert np.all(np.isfinite(out.numpy())) and np.all(np.isfinite(scores.numpy()))
    output_bias = layer.get_weights()[-1]
    np.testing.assert_allclose(out.numpy()[0, 1], output_bias, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out.numpy()[1, 2], output_bias, rtol=0, atol=1e-12)
    assert np.all(scores.numpy()[0, :, 1] == 0) and np.all(scores.numpy()[1, :, 2] == 0)

    # Only the masked rows feed the loss: value, key and every projection get zero gradient.
    (out[0, 1].sum() * 3.0 + out[1, 2].sum()).backward()
    for t in (v, k, q):
        assert t.grad is not None and np.all(np.isfinite(t.grad))
        np.testing.assert_array_equal(t.grad, 0.0)
    weights = layer.weights
    for w in weights[:6]:  # query, key and value kernels and biases
        np.testing.assert_array_equal(w.grad, 0.0)
    np.testing.assert_allclose(weights[-1].grad, np.full(4, 4.0))  # output bias: 3 + 1 per feature


def test_gradcheck_dropout_with_layer_seed_in_training():
    rng = np.random.default_rng(10)
    layer = layer64(dropout=0.4, seed=123)

    def reset():  # the layer's own generator advances each call; restart it for determinism
        layer._dropout_rng = None

    gradcheck_layer(layer, [randn(rng, 2, 3, 4), randn(rng, 2, 4, 3)], before=reset,
                    scores=True, training=True)


def test_gradcheck_dropout_unseeded_with_set_seed():
    rng = np.random.default_rng(11)
    layer = layer64(dropout=0.3)
    gradcheck_layer(layer, [randn(rng, 2, 3, 4), randn(rng, 2, 4, 3)],
                    before=lambda: tm.set_seed(2024), training=True)


def test_gradcheck_dropout_actually_drops_something():
    """The dropout gradchecks above would be vacuous if no probability were ever dropped."""
    rng = np.random.default_rng(10)
    layer = layer64(dropout=0.4, seed=123)
    q, v = randn(rng, 2, 3, 4), randn(rng, 2, 4, 3)
    train = layer(q, v, training=True).numpy()
    assert not np.allclose(train, layer(q, v, training=False).numpy())


@pytest.mark.parametrize("use_gate", [False, True])
def test_gradcheck_regularization_losses(use_gate):
    rng = np.random.default_rng(12)
    layer = layer64(kernel_regularizer=regularizers.L2(0.05),
                    bias_regularizer=regularizers.L1L2(l1=0.02, l2=0.03),
                    activity_regularizer=regularizers.L2(0.01), use_gate=use_gate)
    gradcheck_layer(layer, [randn(rng, 2, 3, 4), randn(rng, 2, 2, 3)], losses=True)
    assert len(layer.losses) == (5 if use_gate else 4) * 3  # activity + kernel + bias each


# ---------------------------------------------------------------- semantics vs the reference
SEMANTIC_CASES = {
    "rank3_cross_key": (dict(num_heads=2, key_dim=3, value_dim=2),
                        [(2, 3, 4), (2, 5, 3), (2, 5, 6)], {}),
    "rank4_2d_axes": (dict(num_heads=2, key_dim=2), [(2, 3, 2, 4), (2, 2, 3, 4)], {}),
    "rank4_axis2": (dict(num_heads=3, key_dim=2, attention_axes=(2,)),
                    [(2, 3, 4, 5), (2, 3, 2, 5)], {}),
    "rank4_axis1": (dict(num_heads=2, key_dim=2, attention_axes=1),
                    [(2, 4, 3, 5), (2, 2, 3, 5)], {}),
    "rank5_axes_13": (dict(num_heads=2, key_dim=2, attention_axes=(1, 3)),
                      [(2, 3, 2, 2, 3), (2, 2, 2, 3, 3)], {}),
    "rank4_reversed_axes": (dict(num_heads=2, key_dim=2, attention_axes=(2, 1)),
                            [(1, 3, 2, 4), (1, 2, 3, 4)], {}),
    "gate_output_shape": (dict(num_heads=2, key_dim=2, value_dim=3, use_gate=True,
                               output_shape=(2, 3)), [(2, 3, 4), (2, 4, 4)], {}),
    "no_bias": (dict(num_heads=2, key_dim=3, use_bias=False), [(2, 3, 4), (2, 4, 4)], {}),
    "causal_window": (dict(num_heads=2, key_dim=2, sliding_window=2), [(2, 5, 3), (2, 5, 3)],
                      {"use_causal_mask": True}),
}


def run_case(name, seed=0):
    layer_kwargs, shapes, call_kwargs = SEMANTIC_CASES[name]
    rng = np.random.default_rng(seed)
    arrays = [randn(rng, *s) for s in shapes]
    layer = layer64(**layer_kwargs)
    out, scores = layer(*arrays, return_attention_scores=True, **call_kwargs)
    ref_out, ref_scores = reference_mha(
        layer.get_weights(), *arrays, attention_axes=layer_kwargs.get("attention_axes"),
        use_bias=layer_kwargs.get("use_bias", True), use_gate=layer_kwargs.get("use_gate", False),
        causal=call_kwargs.get("use_causal_mask", False),
        window=layer_kwargs.get("sliding_window"))
    return layer, arrays, out.numpy(), scores.numpy(), ref_out, ref_scores


@pytest.mark.parametrize("name", sorted(SEMANTIC_CASES))
def test_outputs_and_scores_match_numpy_reference(name):
    _, _, out, scores, ref_out, ref_scores = run_case(name)
    assert out.shape == ref_out.shape and scores.shape == ref_scores.shape
    np.testing.assert_allclose(out, ref_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name, out_shape, scores_shape", [
    ("rank3_cross_key", (2, 3, 4), (2, 2, 3, 5)),
    ("rank4_2d_axes", (2, 3, 2, 4), (2, 2, 3, 2, 2, 3)),
    ("rank4_axis2", (2, 3, 4, 5), (2, 3, 3, 4, 2)),
    ("rank4_axis1", (2, 4, 3, 5), (2, 3, 2, 4, 2)),
    ("rank5_axes_13", (2, 3, 2, 2, 3), (2, 2, 2, 3, 2, 2, 3)),
    ("rank4_reversed_axes", (1, 3, 2, 4), (1, 2, 2, 3, 3, 2)),
    ("gate_output_shape", (2, 3, 2, 3), (2, 2, 3, 4)),
])
def test_output_and_scores_shapes(name, out_shape, scores_shape):
    _, _, out, scores, _, _ = run_case(name)
    assert out.shape == out_shape
    assert scores.shape == scores_shape


@pytest.mark.parametrize("name", ["rank3_cross_key", "rank4_2d_axes", "rank5_axes_13", "rank4_axis1"])
def test_softmax_is_joint_over_the_attention_axes(name):
    layer_kwargs = SEMANTIC_CASES[name][0]
    _, arrays, _, scores, _, _ = run_case(name)
    given = layer_kwargs.get("attention_axes")
    n_axes = arrays[0].ndim - 2 if given is None else len(np.atleast_1d(given))
    sums = scores.sum(axis=tuple(range(scores.ndim - n_axes, scores.ndim)))
    np.testing.assert_allclose(sums, 1.0, rtol=0, atol=1e-12)
    assert np.all(scores > 0)  # nothing masked: every key gets some weight


def test_negative_attention_axes_equal_positive_ones():
    rng = np.random.default_rng(3)
    q, v = randn(rng, 2, 3, 4, 5), randn(rng, 2, 3, 2, 5)
    positive, negative = layer64(attention_axes=(2,)), layer64(attention_axes=(-2,))
    positive(q, v)
    negative(q, v)
    negative.set_weights(positive.get_weights())
    a, sa = positive(q, v, return_attention_scores=True)
    b, sb = negative(q, v, return_attention_scores=True)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(sa.numpy(), sb.numpy())


# ---------------------------------------------------------------- masks
@pytest.mark.parametrize("kind, expand", [
    ("TS", lambda m: m[None, None]), ("BTS", lambda m: m[:, None]), ("1TS", lambda m: m[:, None]),
    ("B1S", lambda m: m[:, None]), ("BHTS", lambda m: m),
])
def test_attention_mask_shapes_match_reference(kind, expand):
    rng = np.random.default_rng(4)
    mask = attention_masks(rng, 2, 2, 3, 4)[kind]
    q, v = randn(rng, 2, 3, 4), randn(rng, 2, 4, 3)
    layer = layer64()
    out, scores = layer(q, v, attention_mask=mask, return_attention_scores=True)
    ref_out, ref_scores = reference_mha(layer.get_weights(), q, v, mask=expand(mask))
    np.testing.assert_allclose(out.numpy(), ref_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(scores.numpy(), ref_scores, rtol=1e-10, atol=1e-12)
    assert np.all(scores.numpy()[~np.broadcast_to(expand(mask), scores.shape)] == 0)


def test_two_dimensional_attention_mask_and_input_masks_match_reference():
    rng = np.random.default_rng(5)
    q, v = randn(rng, 2, 3, 2, 4), randn(rng, 2, 2, 3, 4)
    am = rng.random((2, 3, 2, 2, 3)) < 0.7
    qm = rng.random((2, 3, 2)) < 0.8
    vm = rng.random((2, 2, 3)) < 0.8
    layer = layer64()
    out, scores = layer(q, v, attention_mask=am, query_mask=qm, value_mask=vm,
                        return_attention_scores=True)
    full = am[:, None] & qm[:, None, :, :, None, None] & vm[:, None, None, None, :, :]
    ref_out, ref_scores = reference_mha(layer.get_weights(), q, v, mask=full)
    np.testing.assert_allclose(out.numpy(), ref_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(scores.numpy(), ref_scores, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("axis", [1, 2])
def test_input_masks_on_a_single_attention_axis_of_rank4_inputs(axis):
    rng = np.random.default_rng(6)
    q, v = randn(rng, 2, 3, 3, 4), randn(rng, 2, 3, 3, 4)
    qm = rng.random((2, 3, 3)) < 0.7
    vm = rng.random((2, 3, 3)) < 0.7
    layer = layer64(attention_axes=(axis,))
    out, scores = layer(q, v, query_mask=qm, value_mask=vm, return_attention_scores=True)
    # scores: (B, other index axis, H, T, S); move the masks' attended axis last.
    other = 3 - axis
    qm_b = np.moveaxis(qm, axis, 2)  # (B, other, T)
    vm_b = np.moveaxis(vm, axis, 2)  # (B, other, S)
    full = qm_b[:, :, None, :, None] & vm_b[:, :, None, None, :]
    assert other in (1, 2)
    ref_out, ref_scores = reference_mha(layer.get_weights(), q, v, attention_axes=(axis,), mask=full)
    np.testing.assert_allclose(out.numpy(), ref_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(scores.numpy(), ref_scores, rtol=1e-10, atol=1e-12)


def test_query_value_key_and_attention_masks_are_anded():
    rng = np.random.default_rng(7)
    q, v, k = randn(rng, 2, 4, 3), randn(rng, 2, 5, 3), randn(rng, 2, 5, 2)
    am = rng.random((2, 4, 5)) < 0.8
    qm = np.array([[1, 1, 0, 1], [1, 0, 1, 1]], dtype=bool)
    vm = np.array([[1, 1, 1, 0, 1], [0, 1, 1, 1, 1]], dtype=bool)
    km = np.array([[1, 0, 1, 1, 1], [1, 1, 1, 1, 0]], dtype=bool)
    layer = layer64()
    out, scores = layer(q, v, k, attention_mask=am, query_mask=qm, value_mask=vm, key_mask=km,
                        use_causal_mask=True, return_attention_scores=True)
    combined = am & qm[:, :, None] & vm[:, None, :] & km[:, None, :]
    same, same_scores = layer(q, v, k, attention_mask=combined, use_causal_mask=True,
                              return_attention_scores=True)
    np.testing.assert_array_equal(out.numpy(), same.numpy())
    np.testing.assert_array_equal(scores.numpy(), same_scores.numpy())
    ref_out, ref_scores = reference_mha(layer.get_weights(), q, v, k, mask=combined[:, None], causal=True)
    np.testing.assert_allclose(out.numpy(), ref_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(scores.numpy(), ref_scores, rtol=1e-10, atol=1e-12)
    # a query masked out attends to nothing
    assert np.all(scores.numpy()[0, :, 2] == 0) and np.all(scores.numpy()[1, :, 1] == 0)


@pytest.mark.parametrize("t, s", [(3, 5), (5, 3), (4, 4)])
def test_causal_mask_is_lower_triangular_aligned_top_left(t, s):
    rng = np.random.default_rng(8)
    q, v = randn(rng, 2, t, 3), randn(rng, 2, s, 3)
    layer = layer64()
    out, scores = layer(q, v, use_causal_mask=True, return_attention_scores=True)
    allowed = np.tril(np.ones((t, s), dtype=bool))  # row i sees keys 0..i
    scores = scores.numpy()
    assert np.all(scores[..., ~allowed] == 0)
    assert np.all(scores[..., allowed] > 0)
    ref_out, ref_scores = reference_mha(layer.get_weights(), q, v, mask=allowed)
    np.testing.assert_allclose(out.numpy(), ref_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-10, atol=1e-12)


def test_sliding_window_is_a_symmetric_band():
    rng = np.random.default_rng(9)
    x = randn(rng, 1, 6, 3)
    layer = layer64(sliding_window=2)
    _, scores = layer(x, x, return_attention_scores=True)
    i, j = np.indices((6, 6))
    band = np.abs(i - j) <= 1
    assert np.all(scores.numpy()[..., ~band] == 0) and np.all(scores.numpy()[..., band] > 0)
    _, causal = layer(x, x, use_causal_mask=True, return_attention_scores=True)
    lower_band = band & (j <= i)
    assert np.all(causal.numpy()[..., ~lower_band] == 0) and np.all(causal.numpy()[..., lower_band] > 0)


@pytest.mark.parametrize("as_type", [
    lambda m: m.astype(np.int64), lambda m: m.astype(np.int32), lambda m: m.astype(np.float32),
    lambda m: m.astype(np.float64) * 2.5, lambda m: tm.Tensor(m.astype(np.float64)),
])
def test_numeric_masks_mean_nonzero_attends(as_type):
    rng = np.random.default_rng(10)
    q, v = randn(rng, 2, 3, 4), randn(rng, 2, 4, 4)
    mask = rng.random((2, 3, 4)) < 0.6
    mask[..., 1] = True
    qm = np.array([[1, 0, 1], [1, 1, 1]], dtype=bool)
    layer = layer64()
    want_out, want_scores = layer(q, v, attention_mask=mask, query_mask=qm, return_attention_scores=True)
    out, scores = layer(q, v, attention_mask=as_type(mask), query_mask=as_type(qm),
                        return_attention_scores=True)
    np.testing.assert_array_equal(out.numpy(), want_out.numpy())
    np.testing.assert_array_equal(scores.numpy(), want_scores.numpy())


# ---------------------------------------------------------------- dropout and seeds
def test_no_dropout_unless_training_is_true():
    rng = np.random.default_rng(11)
    q, v = randn(rng, 2, 3, 4), randn(rng, 2, 4, 4)
    layer = layer64(dropout=0.9, seed=1)
    out_none = layer(q, v).numpy()
    ref, _ = reference_mha(layer.get_weights(), q, v)
    for training in (None, False):
        for _ in range(2):
            np.testing.assert_allclose(layer(q, v, training=training).numpy(), ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out_none, ref, rtol=1e-10, atol=1e-12)
    assert not np.allclose(layer(q, v, training=True).numpy(), ref)


def identity_readout_layer(s, rate, seed):
    """A layer whose output is exactly the (dropped-out) attention weights.

    value = one-hot key positions, value kernel = identity, output kernel = identity over
    (heads, value_dim): out[b, t, h, j] = weights[b, h, t, j].
    """
    heads = 2
    layer = MHA(heads, s, dropout=rate, seed=seed, use_bias=False, output_shape=(heads, s),
                dtype="float64")
    rng = np.random.default_rng(0)
    q = randn(rng, 3, 4, 3)
    v = np.broadcast_to(np.eye(s), (3, s, s)).copy()
    layer(q, v)
    wq, wk, wv, wo = layer.get_weights()
    wq, wk = randn(rng, *wq.shape), randn(rng, *wk.shape)
    wv = np.broadcast_to(np.eye(s)[:, None, :], wv.shape).copy()
    wo = np.einsum("hH,dD->hdHD", np.eye(heads), np.eye(s))
    layer.set_weights([wq, wk, wv, wo])
    return layer, q, v


def test_dropout_acts_on_the_probabilities_and_scores_are_pre_dropout():
    rate, s = 0.5, 6
    layer, q, v = identity_readout_layer(s, rate, seed=5)
    eval_out, eval_scores = layer(q, v, return_attention_scores=True)
    probs = eval_scores.numpy()  # (B, H, T, S)
    np.testing.assert_allclose(eval_out.numpy(), probs.transpose(0, 2, 1, 3), rtol=1e-12, atol=1e-14)

    out, scores = layer(q, v, training=True, return_attention_scores=True)
    np.testing.assert_array_equal(scores.numpy(), probs)  # returned scores: before dropout
    used = out.numpy().transpose(0, 2, 1, 3)  # the weights that actually mixed the values
    kept = used != 0
    np.testing.assert_allclose(used[kept], probs[kept] / (1 - rate), rtol=1e-12)
    assert 0.3 < 1 - kept.mean() < 0.7  # about `rate` of the probabilities dropped


def test_layer_seed_makes_dropout_reproducible_and_advancing():
    rng = np.random.default_rng(12)
    q, v = randn(rng, 2, 3, 4), randn(rng, 2, 5, 4)
    layers = []
    for _ in range(2):
        tm.set_seed(77)
        layer = layer64(dropout=0.5, seed=42)
        layer(q, v)
        layers.append(layer)
    a, b = layers
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)
    first_a, first_b = a(q, v, training=True).numpy(), b(q, v, training=True).numpy()
    np.testing.assert_array_equal(first_a, first_b)
    second_a, second_b = a(q, v, training=True).numpy(), b(q, v, training=True).numpy()
    np.testing.assert_array_equal(second_a, second_b)
    assert not np.array_equal(first_a, second_a)  # the layer's stream advances, as in Keras
    tm.set_seed(0)
    other = layer64(dropout=0.5, seed=43)
    other(q, v)
    other.set_weights(a.get_weights())
    other._dropout_rng = None
    a._dropout_rng = None
    assert not np.array_equal(other(q, v, training=True).numpy(), a(q, v, training=True).numpy())


def test_set_seed_makes_unseeded_dropout_reproducible():
    rng = np.random.default_rng(13)
    q, v = randn(rng, 2, 3, 4), randn(rng, 2, 5, 4)
    layer = layer64(dropout=0.5)
    layer.build(q.shape, v.shape)
    tm.set_seed(5)
    first = layer(q, v, training=True).numpy()
    tm.set_seed(5)
    np.testing.assert_array_equal(layer(q, v, training=True).numpy(), first)


def test_set_seed_makes_unseeded_initialization_reproducible():
    shapes = ((2, 3, 4), (2, 5, 4))
    built = []
    for seed in (31, 31, 32):
        tm.set_seed(seed)
        layer = MHA(2, 3)
        layer.build(*shapes)
        built.append(layer.get_weights())
    for x, y in zip(built[0], built[1]):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(built[0][0], built[2][0])
    assert not np.array_equal(built[0][0], built[0][2])  # query and key kernels differ


@pytest.mark.parametrize("init", [initializers.GlorotUniform(seed=9),
                                  {"class_name": "HeNormal", "config": {"seed": 9}}])
def test_int_seeded_initializer_repeats_across_sublayers_like_keras(init):
    layer = MHA(2, 3, kernel_initializer=init)
    layer.build((2, 3, 4), (2, 5, 4))
    wq, _, wk, _, wv, _, wo, _ = layer.get_weights()
    np.testing.assert_array_equal(wq, wk)  # same shape, same int seed: same values (Keras)
    np.testing.assert_array_equal(wq, wv)
    assert wo.shape == (2, 3, 4) and np.std(wo) > 0
    again = MHA(2, 3, kernel_initializer=init)
    again.build((2, 3, 4), (2, 5, 4))
    for x, y in zip(layer.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(x, y)


# ---------------------------------------------------------------- regularizers
def dense_outputs(weights, q, v, k, use_gate):
    """Each projection's output (what its activity regularizer sees), in NumPy."""
    w = list(weights)
    names = ["query", "key"] + (["gate"] if use_gate else []) + ["value", "attention_output"]
    params = {n: (w[2 * i], w[2 * i + 1]) for i, n in enumerate(names)}
    proj = lambda x, n: np.tensordot(x, params[n][0], axes=([-1], [0])) + params[n][1]
    outs = {"query": proj(q, "query"), "key": proj(k, "key"), "value": proj(v, "value")}
    if use_gate:
        outs["gate"] = np_sigmoid(proj(q, "gate"))
    return outs


def test_weight_regularization_losses_exist_right_after_build():
    layer = MHA(2, 3, kernel_regularizer=regularizers.L2(0.1), bias_regularizer="l1",
                bias_initializer=RANDOM_BIAS, dtype="float64")
    assert layer.losses == []
    layer.build((2, 3, 4), (2, 5, 6))
    losses = layer.losses
    assert len(losses) == 8
    expected = []
    for i, w in enumerate(layer.get_weights()):
        expected.append(0.1 * np.sum(w ** 2) if i % 2 == 0 else 0.01 * np.sum(np.abs(w)))
    np.testing.assert_allclose([loss.item() for loss in losses], expected, rtol=1e-12)
    for loss in losses:
        assert isinstance(loss, tm.Tensor) and loss.shape == () and loss.requires_grad


def test_only_regularized_weights_add_losses():
    layer = MHA(2, 3, kernel_regularizer="l2", use_gate=True)
    layer.build((2, 3, 4), (2, 5, 4))
    assert len(layer.losses) == 5
    layer = MHA(2, 3, bias_regularizer="l2", use_bias=False)
    layer.build((2, 3, 4), (2, 5, 4))
    assert layer.losses == []


@pytest.mark.parametrize("use_gate", [False, True])
def test_activity_regularizer_divides_each_projection_output_by_the_batch(use_gate):
    rng = np.random.default_rng(14)
    b = 3
    q, v, k = randn(rng, b, 4, 4), randn(rng, b, 5, 3), randn(rng, b, 5, 2)
    factor = 0.02
    layer = layer64(value_dim=3, activity_regularizer=regularizers.L2(factor), use_gate=use_gate)
    out = layer(q, v, k).numpy()
    outs = dense_outputs(layer.get_weights(), q, v, k, use_gate)
    outs["attention_output"] = out
    expected = sorted(factor * np.sum(o ** 2) / b for o in outs.values())
    got = sorted(loss.item() for loss in layer.losses)
    assert len(got) == (5 if use_gate else 4)
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    # the losses are those of the last call only
    layer(q[:1], v[:1], k[:1])
    assert len(layer.losses) == len(got)


def test_regularization_losses_have_gradients():
    rng = np.random.default_rng(15)
    q, v = randn(rng, 2, 3, 4), randn(rng, 2, 5, 4)
    layer = layer64(kernel_regularizer=regularizers.L2(0.5))
    layer.build(q.shape, v.shape)
    total = layer.losses[0]
    for loss in layer.losses[1:]:
        total = total + loss
    total.backward()
    weights = layer.weights
    for i, w in enumerate(weights):
        if i % 2 == 0:
            np.testing.assert_allclose(w.grad, 2 * 0.5 * w.numpy(), rtol=1e-12)
        else:
            assert w.grad is None or np.all(w.grad == 0)
    layer = layer64(activity_regularizer="l2")
    layer(q, v)
    for loss in layer.losses:
        assert isinstance(loss, tm.Tensor) and loss.requires_grad
    layer.losses[0].backward()
    assert layer.weights[0].grad is not None and np.any(layer.weights[0].grad != 0)


# ---------------------------------------------------------------- constraints
def np_max_norm(w, max_value, axis):
    norms = np.sqrt(np.sum(w * w, axis=axis, keepdims=True))
    return w * (np.clip(norms, 0, max_value) / (1e-7 + norms))


def test_constraints_are_attached_and_applied_only_by_the_optimizer():
    rng = np.random.default_rng(16)
    q, v = randn(rng, 2, 3, 4), randn(rng, 2, 5, 4)
    layer = MHA(2, 3, kernel_constraint="non_neg", bias_constraint=constraints.MaxNorm(0.3, axis=0),
                bias_initializer={"class_name": "RandomNormal", "config": {"stddev": 1.0, "seed": 1}},
                dtype="float64")
    layer.build(q.shape, v.shape)
    initial = layer.get_weights()
    for i, w in enumerate(layer.weights):
        if i % 2 == 0:
            assert isinstance(w.constraint, constraints.NonNeg)
        else:
            assert isinstance(w.constraint, constraints.MaxNorm)
    assert any(np.any(w < 0) for w in initial[::2])  # not applied at init
    assert any(np.any(np.abs(w) > 0.3) for w in initial[1::2])

    out = layer(q, v)
    for x, y in zip(initial, layer.get_weights()):  # nor in the forward pass
        np.testing.assert_array_equal(x, y)
    (out * out).sum().backward()
    grads = [w.grad.copy() for w in layer.weights]
    lr = 0.1
    tm.optimizers.SGD(layer.weights, learning_rate=lr).step()
    after = layer.get_weights()
    for i, (w0, g, w1) in enumerate(zip(initial, grads, after)):
        stepped = w0 - lr * g
        want = np.maximum(stepped, 0) if i % 2 == 0 else np_max_norm(stepped, 0.3, axis=0)
        np.testing.assert_allclose(w1, want, rtol=1e-12, atol=1e-15)
    assert all(np.all(w >= 0) for w in after[::2])


# ---------------------------------------------------------------- Keras, when installed
@pytest.mark.filterwarnings("ignore:Explicitly requested dtype float64:UserWarning")
@pytest.mark.parametrize("name", ["rank3_cross_key", "rank5_axes_13", "gate_output_shape",
                                  "causal_window"])
def test_matches_keras(name):
    """Keras 3 on whatever backend is configured (float64 only where the backend has it)."""
    keras = pytest.importorskip("keras")
    layer_kwargs, shapes, call_kwargs = SEMANTIC_CASES[name]
    layer, arrays, out, scores, _, _ = run_case(name)
    mask = None
    if name == "rank3_cross_key":
        mask = np.random.default_rng(1).random((2, 3, 5)) < 0.7
        mask[..., 0] = True
        out, scores = (t.numpy() for t in layer(*arrays, attention_mask=mask,
                                                 return_attention_scores=True))
    theirs = keras.layers.MultiHeadAttention(dtype="float64", **layer_kwargs)
    theirs.build(*(a.shape for a in arrays))
    theirs.set_weights(layer.get_weights())
    k_out, k_scores = theirs(*arrays, attention_mask=mask, return_attention_scores=True,
                             **call_kwargs)
    k_out, k_scores = keras.ops.convert_to_numpy(k_out), keras.ops.convert_to_numpy(k_scores)
    tol = 1e-9 if k_out.dtype == np.float64 else 1e-4  # JAX without x64 computes in float32
    np.testing.assert_allclose(out, k_out, rtol=tol, atol=tol)
    np.testing.assert_allclose(scores, k_scores, rtol=tol, atol=tol)


# ---------------------------------------------------------------- training
def test_training_learns_a_teacher_attention(device):
    rng = np.random.default_rng(0)
    tm.set_seed(0)
    teacher = MHA(2, 4, seed=0)
    x_np = rng.standard_normal((16, 6, 4)).astype(np.float32)
    target_np = teacher(x_np, x_np).numpy()

    tm.set_seed(1)
    student = MHA(2, 4)
    student.build(x_np.shape, x_np.shape)
    student.to(device)
    x = tm.Tensor(x_np, device=device)
    target = tm.Tensor(target_np, device=device)
    opt = tm.optimizers.Adam(student.weights, learning_rate=0.02)
    losses = []
    for _ in range(300):
        opt.zero_grad()
        loss = tm.losses.mean_squared_error(target, student(x, x))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])
    assert all(w.device == device for w in student.weights)
