"""Numerics: half, single and double precision through the whole layer; huge logits; fully
masked rows; NaN and inf propagating exactly as NumPy would; float32 gradients against float64.

References are independent: the float64 layer for the dtype sweep (same weights), and a
compact NumPy implementation of the attention for the NaN/inf patterns.
"""

import warnings

import numpy as np
import pytest

import tinygrad_mha as tm
from tinygrad_mha import constraints, regularizers
from tinygrad_mha.layers import LayerNormalization

MHA = tm.MultiHeadAttention
DTYPES = ["float16", "float32", "float64"]
# (rtol, atol) against the float64 result, for values of order one
TOL = {"float16": (1e-2, 1e-2), "float32": (2e-5, 2e-6), "float64": (1e-12, 1e-13)}


class _NoWarnings:
    """Inside, any warning (overflow, invalid value ...) is an error: our arithmetic made it."""

    def __enter__(self):
        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def random_weights(layer, rng, scale=1.0):
    return [(rng.standard_normal(w.shape) * scale / np.sqrt(max(1, w.shape[0]))).astype(np.float64)
            for w in layer.weights]


def make_layers(config, q_shape, v_shape, rng):
    """One layer per dtype, all with the same (float64-drawn) weights."""
    layers = {}
    for dtype in DTYPES:
        layer = MHA(**config, dtype=dtype)
        layer.build(q_shape, v_shape)
        layers[dtype] = layer
    weights = random_weights(layers["float64"], rng)
    for layer in layers.values():
        layer.set_weights(weights)
    return layers


CONFIGS = {
    "rank3": (dict(num_heads=2, key_dim=4), (2, 5, 6), (2, 7, 6)),
    "rank3_value_dim_output_shape": (dict(num_heads=3, key_dim=2, value_dim=5, output_shape=(2, 3)),
                                     (2, 4, 6), (2, 3, 5)),
    "rank4_2d_axes": (dict(num_heads=2, key_dim=3, attention_axes=(1, 2)), (2, 3, 2, 4), (2, 2, 3, 4)),
    "rank4_axis2_gate": (dict(num_heads=2, key_dim=3, attention_axes=(2,), use_gate=True),
                         (2, 3, 4, 5), (2, 3, 2, 5)),
}


# ---------------------------------------------------------------- dtypes through the layer
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_float_dtype_through_the_layer_matches_float64(name):
    config, q_shape, v_shape = CONFIGS[name]
    rng = np.random.default_rng(0)
    layers = make_layers(config, q_shape, v_shape, rng)
    query, value = rng.standard_normal(q_shape), rng.standard_normal(v_shape)
    mask = rng.random(q_shape[:1] + q_shape[1:-1] + v_shape[1:-1]) < 0.8 if name == "rank3" else None
    want, want_scores = layers["float64"](query, value, attention_mask=mask, return_attention_scores=True)
    for dtype, layer in layers.items():
        with _NoWarnings():
            out, scores = layer(tm.Tensor(query.astype(dtype)), tm.Tensor(value.astype(dtype)),
                                attention_mask=mask, return_attention_scores=True)
        assert out.dtype == dtype and scores.dtype == dtype
        assert np.isfinite(out.numpy()).all() and np.isfinite(scores.numpy()).all()
        rtol, atol = TOL[dtype]
        np.testing.assert_allclose(out.numpy().astype(np.float64), want.numpy(), rtol=rtol, atol=atol,
                                   err_msg=f"{name} {dtype} output")
        np.testing.assert_allclose(scores.numpy().astype(np.float64), want_scores.numpy(), rtol=rtol,
                                   atol=atol, err_msg=f"{name} {dtype} scores")


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_float32_and_float16_gradients_agree_with_float64(name):
    config, q_shape, v_shape = CONFIGS[name]
    rng = np.random.default_rng(1)
    layers = make_layers(config, q_shape, v_shape, rng)
    query, value = rng.standard_normal(q_shape), rng.standard_normal(v_shape)
    upstream = rng.standard_normal(layers["float64"].compute_output_shape(q_shape, v_shape))
    grads = {}
    for dtype, layer in layers.items():
        qt = tm.Tensor(query.astype(dtype), requires_grad=True)
        vt = tm.Tensor(value.astype(dtype), requires_grad=True)
        with _NoWarnings():
            layer(qt, vt).backward(upstream.astype(dtype))
        grads[dtype] = [qt.grad, vt.grad] + [w.grad for w in layer.weights]
        for g, w in zip(grads[dtype], [qt, vt] + layer.weights):
            assert g.dtype == dtype and g.shape == w.shape and np.isfinite(g).all()
    for dtype, (rtol, atol) in (("float32", (1e-4, 1e-5)), ("float16", (5e-2, 5e-2))):
        for i, (g, ref) in enumerate(zip(grads[dtype], grads["float64"])):
            scale = max(1.0, np.abs(ref).max())
            np.testing.assert_allclose(g.astype(np.float64) / scale, ref / scale, rtol=rtol, atol=atol,
                                       err_msg=f"{name} {dtype} gradient {i}")


def test_float32_layer_casts_float64_inputs_and_sends_float64_gradients_back():
    layer = MHA(2, 3)
    x = tm.Tensor(np.random.default_rng(0).standard_normal((2, 3, 4)), requires_grad=True)
    out = layer(x, x)
    assert out.dtype == np.float32
    out.sum().backward()
    assert x.grad.dtype == np.float64 and np.isfinite(x.grad).all()


# ---------------------------------------------------------------- huge logits
def np_softmax(x, axis=-1):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1e4, -1e4, 1e3])
def test_softmax_and_log_softmax_with_logits_up_to_1e4(dtype, scale):
    rng = np.random.default_rng(2)
    raw = rng.uniform(-1, 1, (3, 4, 5)) * scale
    raw[0, 0] = scale  # a row of equal extreme logits
    raw[1, 1, 2] = abs(scale)  # one dominant logit
    x = tm.Tensor(raw.astype(dtype), requires_grad=True)
    mask = rng.random((3, 4, 5)) < 0.7
    mask[..., 0] = True
    u = rng.standard_normal(raw.shape).astype(dtype)
    with _NoWarnings():
        for axis in (-1, (1, 2)):
            x.zero_grad()
            y = tm.softmax(x, axis=axis)
            ly = tm.log_softmax(x, axis=axis)
            ym = tm.softmax(x, axis=axis, mask=mask)
            (y * u).sum().backward()
            ly.backward(u)
            (ym * u).sum().backward()
            for t in (y, ly, ym):
                assert t.dtype == dtype and np.isfinite(t.numpy()).all()
            assert np.isfinite(x.grad).all()
            x64 = x.numpy().astype(np.float64)
            np.testing.assert_allclose(y.numpy().astype(np.float64), np_softmax(x64, axis=axis),
                                       atol=TOL[dtype][1] * 10)
            shifted = x64 - x64.max(axis=axis, keepdims=True)
            want_log = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
            np.testing.assert_allclose(ly.numpy().astype(np.float64), want_log,
                                       rtol={"float16": 2e-3, "float32": 1e-6, "float64": 1e-12}[dtype],
                                       atol=TOL[dtype][1] * 10)
            assert np.all(ym.numpy()[~np.broadcast_to(mask, raw.shape)] == 0)


def extreme_layer(dtype, big):
    """One head, key_dim 1, features 1: every score is exactly query * key * big**2."""
    layer = MHA(1, 1, dtype=dtype)
    layer.build((1, 3, 1), (1, 4, 1))
    layer.set_weights([np.full((1, 1, 1), big), np.zeros((1, 1)), np.full((1, 1, 1), big), np.zeros((1, 1)),
                       np.ones((1, 1, 1)), np.zeros((1, 1)), np.ones((1, 1, 1)), np.zeros(1)])
    return layer


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_with_scores_of_plus_and_minus_1e4_stays_finite(dtype):
    layer = extreme_layer(dtype, 10.0)  # scores = q * k * 100, q and k up to 10
    query = tm.Tensor(np.array([[[10.0], [-10.0], [0.5]]], dtype), requires_grad=True)
    value = tm.Tensor(np.array([[[10.0], [-10.0], [3.0], [-2.0]]], dtype), requires_grad=True)
    with _NoWarnings():
        out, scores = layer(query, value, return_attention_scores=True)
        out.sum().backward()
    logits = 100.0 * query.numpy().astype(np.float64)[0, :, 0, None] * value.numpy().astype(np.float64)[0, None, :, 0]
    assert np.abs(logits).max() == 1e4
    np.testing.assert_allclose(scores.numpy()[0, 0].astype(np.float64), np_softmax(logits), atol=TOL[dtype][1])
    for t in (out.numpy(), scores.numpy(), query.grad, value.grad, *[w.grad for w in layer.weights]):
        assert np.isfinite(t).all()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layer_with_huge_inputs_and_weights_stays_finite(dtype):
    rng = np.random.default_rng(3)
    layer = MHA(2, 4, dtype=dtype, kernel_initializer=tm.initializers.RandomNormal(stddev=30.0, seed=1))
    x = tm.Tensor((rng.standard_normal((2, 5, 8)) * 100).astype(dtype), requires_grad=True)
    with _NoWarnings():
        out, scores = layer(x, x, return_attention_scores=True)
        (out * 1e-6).sum().backward()
    assert np.abs(out.numpy()).max() > 1e5  # it really is huge
    for t in (out.numpy(), scores.numpy(), x.grad, *[w.grad for w in layer.weights]):
        assert np.isfinite(t).all()
    np.testing.assert_allclose(scores.numpy().sum(-1), 1.0, rtol=1e-5)


def test_sigmoid_tanh_and_layer_norm_at_extremes_are_finite():
    with _NoWarnings():
        for dtype in DTYPES:
            x = tm.Tensor(np.array([-1e4, -50.0, 0.0, 50.0, 1e4], dtype), requires_grad=True)
            (x.sigmoid().sum() + x.tanh().sum()).backward()
            assert np.isfinite(x.grad).all()
            np.testing.assert_array_equal(x.sigmoid().numpy()[[0, -1]], [0.0, 1.0])
        # a constant row has variance 0; epsilon keeps LayerNormalization finite
        norm = LayerNormalization(dtype="float64")
        x = tm.Tensor(np.full((2, 4), 3.0), requires_grad=True)
        y = norm(x)
        (y * np.arange(4.0)).sum().backward()
        assert np.isfinite(y.numpy()).all() and np.isfinite(x.grad).all()
        # zero weights: regularizers and constraints divide by norms guarded with epsilon
        w = tm.Tensor(np.zeros((3, 4)), requires_grad=True)
        regularizers.OrthogonalRegularizer(0.1)(w).backward()
        assert np.isfinite(w.grad).all()
        for c in (constraints.MaxNorm(1.0), constraints.UnitNorm(), constraints.MinMaxNorm(0.5, 1.0)):
            assert np.isfinite(c(np.zeros((3, 4)))).all()


# ---------------------------------------------------------------- fully masked rows
@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_softmax_gives_masked_logits_no_gradient_even_when_they_are_inf_or_nan(dtype):
    raw = np.array([[1.0, np.inf, 2.0, np.nan], [np.nan, -np.inf, np.inf, 5.0], [0.0, 1.0, 2.0, 3.0]], dtype)
    mask = np.array([[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 1, 0]], bool)
    x = tm.Tensor(raw, requires_grad=True)
    u = np.random.default_rng(0).standard_normal(raw.shape).astype(dtype)
    with _NoWarnings():
        y = tm.softmax(x, mask=mask)
        (y * u).sum().backward()
    assert np.isfinite(y.numpy()).all() and np.isfinite(x.grad).all()
    assert np.all(y.numpy()[~mask] == 0) and np.all(x.grad[~mask] == 0)
    np.testing.assert_array_equal(y.numpy()[1], 0.0)  # nothing kept: all zeros
    np.testing.assert_allclose(y.numpy()[0, [0, 2]], np_softmax([1.0, 2.0]), rtol=TOL[dtype][0] * 10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fully_masked_rows_through_the_layer_are_finite_with_zero_gradients_into_masked_values(dtype):
    rng = np.random.default_rng(4)
    layer = MHA(2, 3, dtype=dtype, bias_initializer=tm.initializers.RandomNormal(seed=2))
    query = tm.Tensor(rng.standard_normal((2, 3, 4)).astype(dtype), requires_grad=True)
    value = tm.Tensor(rng.standard_normal((2, 5, 4)).astype(dtype), requires_grad=True)
    key = tm.Tensor(rng.standard_normal((2, 5, 4)).astype(dtype), requires_grad=True)
    key_mask = np.ones((2, 5), bool)
    key_mask[0, 3:] = False    # keys 3, 4 of example 0 are hidden from every query
    key_mask[1, :] = False     # example 1 sees nothing at all
    query_mask = np.array([[True, False, True], [True, True, True]])
    with _NoWarnings():
        out, scores = layer(query, value, key, key_mask=key_mask, query_mask=query_mask,
                            return_attention_scores=True)
        (out * rng.standard_normal(out.shape).astype(dtype)).sum().backward()
    for t in (out.numpy(), scores.numpy(), query.grad, value.grad, key.grad):
        assert np.isfinite(t).all()
    bias = layer.weights[-1].numpy()
    np.testing.assert_array_equal(out.numpy()[1], np.broadcast_to(bias, (3, 4)))  # the output bias, exactly
    np.testing.assert_array_equal(out.numpy()[0, 1], bias)
    np.testing.assert_array_equal(scores.numpy()[1], 0.0)
    np.testing.assert_array_equal(scores.numpy()[0, :, :, 3:], 0.0)
    # no gradient reaches a masked key or value, nor a query that sees nothing
    for g in (value.grad, key.grad):
        np.testing.assert_array_equal(g[0, 3:], 0.0)
        np.testing.assert_array_equal(g[1], 0.0)
    np.testing.assert_array_equal(query.grad[1], 0.0)
    np.testing.assert_array_equal(query.grad[0, 1], 0.0)
    assert np.abs(value.grad[0, :3]).min() > 0 and np.abs(query.grad[0, 0]).min() > 0


# ---------------------------------------------------------------- NaN and inf propagate as in NumPy
def np_attention(query, value, weights, mask=None):
    """Rank-3 MultiHeadAttention in plain NumPy (float64), from the layer's weights."""
    qk, qb, kk, kb, vk, vb, ok, ob = weights
    q = np.einsum("btf,fhd->bthd", query, qk) + qb
    k = np.einsum("bsf,fhd->bshd", value, kk) + kb
    v = np.einsum("bsf,fhd->bshd", value, vk) + vb
    s = np.einsum("bthd,bshd->bhts", q / np.sqrt(qk.shape[-1]), k)
    if mask is not None:
        s = np.where(mask[:, None], s, -np.inf)
    top = s.max(-1, keepdims=True)
    top = np.where(top == -np.inf, 0.0, top)
    e = np.exp(s - top)
    total = e.sum(-1, keepdims=True)
    p = e / np.where(total == 0, 1.0, total)
    return np.einsum("bthd,hdo->bto", np.einsum("bhts,bshd->bthd", p, v), ok) + ob


def assert_same_nan_pattern(got, want, what):
    assert np.array_equal(np.isnan(got), np.isnan(want)), f"{what}: NaN pattern differs"
    assert np.array_equal(np.isposinf(got), np.isposinf(want)), f"{what}: +inf pattern differs"
    assert np.array_equal(np.isneginf(got), np.isneginf(want)), f"{what}: -inf pattern differs"
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-10, atol=1e-12, err_msg=what)


ELEMENTWISE = {
    "add": (lambda x: x + 1.5, lambda a: a + 1.5),
    "mul": (lambda x: x * -2.0, lambda a: a * -2.0),
    "div": (lambda x: 1.0 / (x + 10.0), lambda a: 1.0 / (a + 10.0)),
    "exp": (lambda x: x.exp(), np.exp),
    "tanh": (lambda x: x.tanh(), np.tanh),
    "sigmoid": (lambda x: x.sigmoid(), lambda a: 1 / (1 + np.exp(-a))),
    "relu": (lambda x: x.relu(), lambda a: np.maximum(a, 0)),
    "abs": (lambda x: abs(x), np.abs),
    "sum": (lambda x: x.sum(axis=1), lambda a: a.sum(axis=1)),
    "max": (lambda x: x.max(axis=1), lambda a: a.max(axis=1)),
    "min": (lambda x: x.min(axis=0), lambda a: a.min(axis=0)),
    "mean": (lambda x: x.mean(axis=1), lambda a: a.mean(axis=1)),
    "softmax": (lambda x: tm.softmax(x), np_softmax),
    "softmax_all_kept": (lambda x: tm.softmax(x, mask=np.ones(x.shape, bool)), np_softmax),
    "log_softmax": (lambda x: tm.log_softmax(x), lambda a: np.log(np_softmax(a))),
    "matmul": (lambda x: x @ np.full((4, 2), 0.5), lambda a: a @ np.full((4, 2), 0.5)),
}


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_nan_inputs_propagate_like_numpy_without_warnings(name):
    ours, reference = ELEMENTWISE[name]
    raw = np.array([[1.0, np.nan, 3.0, -2.0], [0.5, 4.0, -3.0, 2.0], [np.nan, np.nan, 0.0, 1.0]])
    x = tm.Tensor(raw, requires_grad=True)
    with _NoWarnings():  # NaN arithmetic raises no floating point flags in NumPy; neither may we
        y = ours(x)
        y.backward(np.ones(y.shape))
    assert_same_nan_pattern(y.numpy(), reference(raw), name)
    assert np.isfinite(x.grad[1]).all(), name  # the clean row's gradient stays clean


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_inf_inputs_propagate_like_numpy(name):
    ours, reference = ELEMENTWISE[name]
    raw = np.array([[1.0, np.inf, 3.0, -2.0], [0.5, -np.inf, 2.0, 2.0], [np.inf, -np.inf, 0.0, 1.0]])
    with np.errstate(all="ignore"):  # inf - inf warns in NumPy too; what matters is the values
        want = reference(raw)
        got = ours(tm.Tensor(raw)).numpy()
    assert_same_nan_pattern(got, want, name)


def test_max_gives_the_gradient_to_the_nan_like_pytorch():
    x = tm.Tensor(np.array([[1.0, np.nan, 3.0], [1.0, 5.0, 5.0]]), requires_grad=True)
    with _NoWarnings():
        x.max(axis=1).sum().backward()
    np.testing.assert_array_equal(x.grad, [[0.0, 1.0, 0.0], [0.0, 0.5, 0.5]])


def attention_case(rng):
    layer = MHA(2, 3, dtype="float64", bias_initializer=tm.initializers.RandomNormal(seed=5))
    query, value = rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 6, 5))
    layer(query, value)
    return layer, query, value


@pytest.mark.parametrize("where", ["query", "value", "masked_value", "query_inf", "value_inf", "weight"])
def test_nan_and_inf_through_the_layer_propagate_like_numpy(where):
    rng = np.random.default_rng(6)
    layer, query, value = attention_case(rng)
    mask = np.ones((3, 4, 6), bool)
    mask[:, :, 5] = False
    clean = layer(query, value, attention_mask=mask).numpy()
    bad = {"query": np.nan, "value": np.nan, "masked_value": np.nan, "query_inf": np.inf,
           "value_inf": -np.inf, "weight": np.nan}[where]
    if where.startswith("query"):
        query = query.copy()
        query[1, 2, 0] = bad
    elif where == "weight":
        weights = layer.get_weights()
        weights[6][1, 2, 0] = bad  # one output kernel entry: one output feature everywhere
        layer.set_weights(weights)
    else:
        value = value.copy()
        value[1, 5 if where == "masked_value" else 2, 3] = bad
    q_t = tm.Tensor(query, requires_grad=True)
    v_t = tm.Tensor(value, requires_grad=True)
    with np.errstate(all="ignore"):
        out = layer(q_t, v_t, attention_mask=mask)
        out.backward(np.ones(out.shape))
        want = np_attention(query, value, layer.get_weights(), mask)
    assert_same_nan_pattern(out.numpy(), want, where)
    assert not np.isfinite(want).all()  # the NaN (or inf) is never hidden ...
    if where != "weight":
        for b in (0, 2):                # ... and never leaks into other examples
            np.testing.assert_array_equal(out.numpy()[b], clean[b])
            assert np.isfinite(q_t.grad[b]).all() and np.isfinite(v_t.grad[b]).all()


def test_the_layer_raises_nothing_on_all_nan_inputs():
    layer = MHA(2, 3)
    x = np.full((2, 3, 4), np.nan, np.float32)
    with _NoWarnings():
        out, scores = layer(x, x, return_attention_scores=True, training=False)
    assert np.isnan(out.numpy()).all() and np.isnan(scores.numpy()).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_nan_logit_makes_its_masked_softmax_row_nan_without_overflowing_the_rest(dtype):
    big = {"float16": 2e4, "float32": 1e4, "float64": 1e4}[dtype]  # exp(big) overflows if unshifted
    raw = np.array([[np.nan, big, 1.0, 2.0], [np.nan, big, 1.0, 2.0], [3.0, big, 1.0, 2.0]], dtype)
    mask = np.array([[1, 1, 1, 0], [0, 1, 1, 1], [1, 1, 1, 1]], bool)
    with _NoWarnings():
        y = tm.softmax(tm.Tensor(raw), mask=mask).numpy()
    assert np.isnan(y[0]).all()                 # a kept NaN: the row is NaN, as unmasked softmax gives
    np.testing.assert_array_equal(y[1], [0.0, 1.0, 0.0, 0.0])  # a masked NaN is simply not there
    np.testing.assert_array_equal(y[2], [0.0, 1.0, 0.0, 0.0])
