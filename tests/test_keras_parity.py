"""Parity of ``tm.MultiHeadAttention`` with ``keras.layers.MultiHeadAttention`` (Keras 3.15).

Keras is the reference throughout: every expected value here is computed by Keras (or, for
initializer bounds, by the Keras formula written out independently), never by our code.

The session's Keras backend is jax (set in conftest.py before anything imports keras), so
gradients can be taken through Keras with ``jax.grad`` over ``stateless_call``. All Keras
tests skip cleanly when keras (or jax) is not installed.

Tolerances: float32 throughout. "Relative 1e-5" means |ours - keras| <= 1e-5 * (|keras| +
max|keras|), i.e. relative to each element and to the scale of the whole array (elements that
happen to be ~0 cannot be compared purely relatively in float32).

Documented differences from Keras (by design, not bugs):
* A query row that may attend to nothing: Keras' explicit-softmax path (return_attention_scores
  =True, or dropout > 0, or rank > 3 inputs) gives all-zero probabilities, as we do everywhere;
  its fused path (``ops.dot_product_attention``: rank-3 inputs, dropout=0, no scores) gives a
  uniform row instead. ``test_fully_masked_row_on_keras_fused_path_differs_by_design`` pins it.
* ``query_mask``: Keras 3.15 ignores the call argument and reads the Keras mask attached to the
  tensor; we take it as an argument, and compare with Keras given the equivalent attention_mask.
* Causal / sliding-window masks on several attention axes: Keras builds them from axis 1 only;
  we use row-major flattened positions. Only single-axis (rank-3) cases are compared here.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

import tinygrad_mha as tm

os.environ.setdefault("KERAS_BACKEND", "jax")  # normally already set by conftest.py

# Keras 3.15's Variable.__array__ predates NumPy 2's copy keyword (noise, not ours).
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

RTOL = 1e-5
GRAD_RTOL = 1e-4
B = 2


@pytest.fixture(scope="module")
def keras():
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "jax":
        yield keras
        return
    # These graphs are tiny and each runs once or twice: XLA's optimisation passes cost far
    # more than they save (they made this file ~1.6x slower). Restored after the module.
    import jax

    try:
        before = jax.config.read("jax_disable_most_optimizations")
        jax.config.update("jax_disable_most_optimizations", True)
    except (AttributeError, KeyError):  # a jax without the flag: just slower
        before = None
    yield keras
    if before is not None:
        jax.config.update("jax_disable_most_optimizations", before)


@pytest.fixture(scope="module")
def jax_keras(keras):
    if keras.backend.backend() != "jax":
        pytest.skip(f"gradient parity needs the jax Keras backend, got {keras.backend.backend()!r}")
    jax = pytest.importorskip("jax")
    return keras, jax


def keras_call(klayer, q, v, k=None, scores=False, **kw):
    """Keras' forward pass. On jax: ``stateless_call`` under ``jax.jit`` with the layer's own
    variables, one XLA compile per call instead of one per op and shape in eager mode (a bit
    faster). On another backend: a plain call."""
    import keras

    flags = {n: kw.pop(n) for n in ("use_causal_mask", "training") if n in kw}
    arrays = {n: a for n, a in dict(key=k, **kw).items() if a is not None}
    if keras.backend.backend() == "jax":
        import jax

        ntv = [w.value for w in klayer.non_trainable_variables]

        def run(tv, q, v, arrays):
            out, _ = klayer.stateless_call(tv, ntv, q, v, return_attention_scores=scores, **flags, **arrays)
            return out

        out = jax.jit(run)([w.value for w in klayer.trainable_variables], q, v, arrays)
    else:
        out = klayer(q, v, return_attention_scores=scores, **flags, **arrays)
    return tuple(keras.ops.convert_to_numpy(o) for o in out) if scores else keras.ops.convert_to_numpy(out)


def assert_close(ours, ref, rtol=RTOL, what=""):
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != keras {ref.shape}"
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=rtol * max(scale, 1e-12), err_msg=what)


def random_weights(shapes, seed):
    """Non-default weights: kernels ~ N(0, 0.3^2), biases ~ N(0, 0.5^2) (so biases are non-zero)."""
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(s) * (0.3 if len(s) >= 3 else 0.5)).astype(np.float32) for s in shapes]


def random_mask(rng, shape, p=0.7):
    return rng.random(shape) < p


# ------------------------------------------------------------------ configurations
# Each case: constructor kwargs, (query, value, key-or-None) shapes, a function rng -> extra call
# kwargs shared by both layers, and optionally a function turning those kwargs into Keras' own
# (for query_mask). Cases with fully masked query rows are compared on Keras' explicit path
# only, see the module docstring.
def _mask_bts_with_empty_row(rng):
    m = random_mask(rng, (B, 6, 5))
    m[0, 2, :] = False  # query 2 of batch 0 may see nothing
    m[1, :, 0] = True
    return {"attention_mask": m}


def _mask_bhts_with_empty_rows(rng):
    m = random_mask(rng, (B, 3, 6, 5))  # H = 3
    m[1, 2, 4, :] = False  # one head of one query sees nothing
    m[0, :, 0, :] = False  # query 0 of batch 0 sees nothing in any head
    return {"attention_mask": m}


def _value_and_key_masks(rng):
    vm, km = random_mask(rng, (B, 5), 0.8), random_mask(rng, (B, 5), 0.8)
    vm[:, 0] = km[:, 0] = True  # every query keeps at least key 0
    return {"value_mask": vm, "key_mask": km}


def _value_mask_empty_batch(rng):
    vm = random_mask(rng, (B, 5))
    vm[1, :] = False  # batch 1 sees no key at all
    return {"value_mask": vm}


def _query_mask(rng):
    qm = random_mask(rng, (B, 6))
    qm[0, 1] = False
    return {"query_mask": qm}


def _query_mask_as_attention_mask(kw, S=5):
    qm = kw.pop("query_mask")
    # Keras' _compute_attention_mask: query mask (B, T) -> (B, T, 1), ANDed with the rest.
    qm3 = np.broadcast_to(qm[:, :, None], qm.shape + (S,))
    kw["attention_mask"] = qm3 if "attention_mask" not in kw else (kw["attention_mask"] & qm3)
    return kw


def _all_masks(rng):
    am = random_mask(rng, (B, 6, 6), 0.8)
    am[:, :, 0] = True
    qm = random_mask(rng, (B, 6), 0.8)
    vm = random_mask(rng, (B, 6), 0.9)
    vm[:, 0] = True
    return {"attention_mask": am, "query_mask": qm, "value_mask": vm, "use_causal_mask": True}


def _rank5_mask(rng):
    m = random_mask(rng, (B, 5, 3, 4, 3, 4), 0.8)
    m[0, 1, 2, 3] = False  # one query position (of one non-attended index) sees nothing
    return {"attention_mask": m}


# Most rank-3 cases share one geometry (H heads of size 4; T=6 queries, S=5 keys, 8 features)
# so that jax's per-op compilation cache is reused across cases: it keeps the file fast.
H3 = dict(num_heads=3, key_dim=4)
QV = ((B, 6, 8), (B, 5, 8), None)
SELF = ((B, 6, 8), (B, 6, 8), None)


def _mask_bts(rng):
    m = random_mask(rng, (B, 6, 5))
    m[..., 0] = True
    return {"attention_mask": m}


CASES = {
    # the seed document's example: (B, 8, 16) queries on (B, 4, 16) values
    "doc_example": (dict(num_heads=2, key_dim=2), ((B, 8, 16), (B, 4, 16), None), None),
    # the seed document's 2-D attention example: self-attention over axes 2 and 3 of rank 5
    "doc_axes_2_3_rank5": (dict(num_heads=2, key_dim=2, attention_axes=(2, 3)),
                           ((B, 5, 3, 4, 16), (B, 5, 3, 4, 16), None), None),
    "plain": (H3, QV, None),
    "value_dim_ne_key_dim": (dict(H3, value_dim=7), ((B, 6, 8), (B, 5, 9), None), None),
    "separate_key": (dict(H3, value_dim=5), ((B, 6, 8), (B, 5, 7), (B, 5, 11)), None),
    "separate_key_same_dims": (H3, ((B, 6, 8), (B, 5, 8), (B, 5, 11)), None),
    "output_shape_int": (dict(H3, output_shape=13), QV, None),
    "output_shape_tuple": (dict(H3, output_shape=(3, 5)), QV, None),
    "no_bias": (dict(H3, use_bias=False), QV, None),
    "axes_1_rank4": (dict(num_heads=2, key_dim=3, attention_axes=(1,)), ((B, 4, 3, 6), (B, 5, 3, 6), None), None),
    "axes_2_rank4": (dict(num_heads=2, key_dim=3, attention_axes=(2,)), ((B, 3, 4, 6), (B, 3, 5, 6), None), None),
    "axes_neg2_rank5": (dict(num_heads=2, key_dim=3, attention_axes=-2), ((B, 2, 3, 4, 6), (B, 2, 3, 5, 6), None), None),
    "axes_3_2_rank5": (dict(num_heads=2, key_dim=3, attention_axes=(3, 2)), ((B, 2, 3, 4, 6), (B, 2, 5, 2, 6), None), None),
    "axes_2_3_rank5_mask": (dict(num_heads=2, key_dim=2, attention_axes=(2, 3)),
                            ((B, 5, 3, 4, 16), (B, 5, 3, 4, 16), None), _rank5_mask),
    "gate": (dict(H3, value_dim=5, use_gate=True), ((B, 6, 8), (B, 5, 7), None), None),
    "gate_no_bias": (dict(H3, use_gate=True, use_bias=False), QV, None),
    "sliding_window": (dict(H3, sliding_window=2), SELF, None),
    "sliding_window_causal": (dict(H3, sliding_window=3), SELF, lambda rng: {"use_causal_mask": True}),
    "causal_T_gt_S": (H3, QV, lambda rng: {"use_causal_mask": True}),
    "causal_T_lt_S": (H3, ((B, 5, 8), (B, 6, 8), None), lambda rng: {"use_causal_mask": True}),
    "mask_BTS": (H3, QV, _mask_bts),
    "mask_BTS_empty_row": (H3, QV, _mask_bts_with_empty_row),
    "mask_1TS": (H3, QV, lambda rng: {"attention_mask": random_mask(rng, (1, 6, 5))}),
    "mask_TS": (H3, QV, lambda rng: {"attention_mask": random_mask(rng, (6, 5))}),
    "mask_B1S": (H3, QV, lambda rng: {"attention_mask": random_mask(rng, (B, 1, 5))}),
    "mask_BHTS_empty_rows": (H3, QV, _mask_bhts_with_empty_rows),
    "mask_int01_and_causal": (H3, SELF, lambda rng: {"attention_mask": random_mask(rng, (B, 6, 6)).astype(np.int32),
                                                     "use_causal_mask": True}),
    "value_and_key_mask": (H3, ((B, 6, 8), (B, 5, 8), (B, 5, 9)), _value_and_key_masks),
    "value_mask_empty_batch": (H3, QV, _value_mask_empty_batch),
    "query_mask": (H3, QV, _query_mask, _query_mask_as_attention_mask),
    "all_masks": (dict(H3, use_gate=True), SELF, _all_masks, lambda kw: _query_mask_as_attention_mask(kw, S=6)),
}


def make_case(name, keras, seed=0, direction="keras_to_ours"):
    ctor, (qs, vs, ks), extra, *to_keras = CASES[name]
    rng = np.random.default_rng(seed)
    q = rng.standard_normal(qs).astype(np.float32)
    v = rng.standard_normal(vs).astype(np.float32)
    k = None if ks is None else rng.standard_normal(ks).astype(np.float32)
    kw = extra(rng) if extra else {}
    keras_kw = dict(kw)
    if to_keras:
        keras_kw = to_keras[0](keras_kw)

    # Same constructor arguments on both sides. Every weight is overwritten below, so the
    # initializer is "zeros": jax would otherwise compile a random kernel for every new shape.
    ctor = {**ctor, "kernel_initializer": "zeros"}
    klayer = keras.layers.MultiHeadAttention(**ctor)
    ours = tm.MultiHeadAttention(**ctor)
    klayer.build(qs, vs, ks)
    ours.build(qs, vs, ks)
    assert [w.shape for w in ours.get_weights()] == [tuple(w.shape) for w in klayer.get_weights()]
    if direction == "keras_to_ours":
        klayer.set_weights(random_weights([w.shape for w in klayer.get_weights()], seed + 1))
        ours.set_weights(klayer.get_weights())
    else:
        ours.set_weights(random_weights([w.shape for w in ours.get_weights()], seed + 1))
        klayer.set_weights(ours.get_weights())
    return klayer, ours, q, v, k, kw, keras_kw


# ------------------------------------------------------------------ 1. forward parity
def on_keras_fused_path(name):
    """Whether Keras 3.15 computes this case with ``ops.dot_product_attention`` when no scores
    are asked for: rank-3 inputs (projected rank 4) and dropout 0. On the jax backend that
    kernel also needs value_dim == key_dim (jax.nn.dot_product_attention checks it, and Keras
    then fails to reshape: a Keras-on-jax limitation), so such cases use the explicit path only."""
    ctor, shapes = CASES[name][:2]
    return len(shapes[0]) == 3 and ctor.get("value_dim", ctor["key_dim"]) == ctor["key_dim"]


@pytest.mark.parametrize("name", list(CASES))
def test_forward_parity(keras, name):
    """Outputs and attention scores on Keras' explicit-softmax path (scores requested); then,
    where Keras has one, its fused path (no scores: ops.dot_product_attention).

    On the fused path, queries that may see no key differ by design (see the module docstring
    and the test below); they are found from Keras' own explicit-path scores and left out."""
    klayer, ours, q, v, k, kw, keras_kw = make_case(name, keras)
    k_out, k_scores = keras_call(klayer, q, v, k, scores=True, **keras_kw)
    o_out, o_scores = ours(q, v, key=k, return_attention_scores=True, **kw)
    assert_close(o_out.numpy(), k_out, what=f"{name}: output")
    assert_close(o_scores.numpy(), k_scores, what=f"{name}: attention scores")
    # without scores, ours is the same computation
    np.testing.assert_array_equal(ours(q, v, key=k, **kw).numpy(), o_out.numpy())
    if on_keras_fused_path(name):
        k_fused = keras_call(klayer, q, v, k, **keras_kw)
        seen = (k_scores.sum(axis=-1) > 0.5).all(axis=1)  # (B, T): every head sees some key
        assert seen.any()
        assert_close(o_out.numpy()[seen], k_fused[seen], what=f"{name}: output, Keras fused path")


@pytest.mark.parametrize("name", ["doc_example", "separate_key", "gate", "output_shape_tuple",
                                  "axes_3_2_rank5", "mask_BHTS_empty_rows"])
def test_forward_parity_ours_to_keras(keras, name):
    """Weights copied the other way: ours (random) -> Keras."""
    klayer, ours, q, v, k, kw, keras_kw = make_case(name, keras, seed=5, direction="ours_to_keras")
    k_out, k_scores = keras_call(klayer, q, v, k, scores=True, **keras_kw)
    o_out, o_scores = ours(q, v, key=k, return_attention_scores=True, **kw)
    assert_close(o_out.numpy(), k_out, what=f"{name}: output")
    assert_close(o_scores.numpy(), k_scores, what=f"{name}: scores")


def test_seed_document_examples_shapes(keras):
    """The seed document's examples, shapes checked against Keras' own results."""
    klayer, ours, q, v, k, kw, _ = make_case("doc_example", keras)
    out, scores = ours(q, v, return_attention_scores=True)
    k_out, k_scores = keras_call(klayer, q, v, scores=True)
    assert out.shape == k_out.shape == (B, 8, 16) and scores.shape == k_scores.shape == (B, 2, 8, 4)
    klayer, ours, q, v, k, kw, _ = make_case("doc_axes_2_3_rank5", keras)
    out, scores = ours(q, q, return_attention_scores=True)
    k_out, k_scores = keras_call(klayer, q, q, scores=True)
    assert out.shape == k_out.shape == (B, 5, 3, 4, 16)
    assert scores.shape == k_scores.shape == (B, 5, 2, 3, 4, 3, 4)


def test_inputs_as_tensors_and_arrays_agree(keras):
    klayer, ours, q, v, k, kw, _ = make_case("separate_key", keras)
    a = ours(q, v, key=k).numpy()
    b = ours(tm.Tensor(q), tm.Tensor(v), key=tm.Tensor(k)).numpy()
    np.testing.assert_array_equal(a, b)
    c = ours(q.astype(np.float64), v.astype(np.float64), key=k).numpy()  # cast to the layer dtype
    assert c.dtype == np.float32
    np.testing.assert_array_equal(a, c)
    assert_close(a, keras_call(klayer, q, v, k, scores=True)[0])


def test_fully_masked_row_on_keras_fused_path_differs_by_design(keras):
    """Keras' fused path (rank 3, dropout 0, no scores) gives a fully masked query a uniform
    row; we give all-zero probabilities, so that query's output is exactly the output bias."""
    klayer, ours, q, v, k, kw, keras_kw = make_case("mask_BTS_empty_row", keras)
    empty = ~kw["attention_mask"].any(axis=-1)  # (B, T)
    assert empty.sum() == 1
    out_ours = ours(q, v, **kw).numpy()
    out_keras = keras_call(klayer, q, v, **keras_kw)
    out_bias = klayer.get_weights()[-1]
    # ours: the output bias, exactly
    np.testing.assert_array_equal(out_ours[empty], np.broadcast_to(out_bias, out_ours[empty].shape))
    # Keras fused: uniform attention over all S keys, i.e. the mean projected value, projected out
    wv, bv, wo, bo = klayer.get_weights()[4:8]
    uniform_context = np.einsum("bsf,fhd->bshd", v, wv).mean(axis=1) + bv  # (B, H, Dv)
    expected_keras_row = np.einsum("bhd,hdo->bo", uniform_context, wo) + bo
    b = np.nonzero(empty)[0][0]
    assert_close(out_keras[empty][0], expected_keras_row[b], rtol=1e-4)
    assert not np.allclose(out_keras[empty], out_ours[empty], atol=1e-3)
    # every other query agrees with Keras' fused path
    assert_close(out_ours[~empty], out_keras[~empty])
    # and Keras' explicit path (scores requested) agrees with us on the empty row too
    assert_close(out_ours, keras_call(klayer, q, v, scores=True, **keras_kw)[0])


# ------------------------------------------------------------------ 2. gradient parity
# (case, Keras path): "explicit" asks for the scores (explicit softmax), "fused" does not
# (rank-3 inputs then go through ops.dot_product_attention, differentiated by jax).
GRAD_CASES = [("doc_example", "explicit"), ("separate_key", "explicit"), ("gate", "explicit"),
              ("axes_3_2_rank5", "explicit"), ("mask_BHTS_empty_rows", "explicit"),
              ("value_and_key_mask", "explicit"), ("sliding_window_causal", "fused"),
              ("causal_T_gt_S", "fused"), ("gate_no_bias", "fused")]


@pytest.mark.parametrize("name, path", GRAD_CASES)
def test_gradient_parity(jax_keras, name, path):
    """d sum(out * R) / d (query, value, key, every weight): jax.grad through Keras vs ours."""
    keras, jax = jax_keras
    explicit = path == "explicit"
    assert explicit or on_keras_fused_path(name)
    klayer, ours, q, v, k, kw, keras_kw = make_case(name, keras, seed=7)
    out_shape = ours.compute_output_shape(q.shape, v.shape, None if k is None else k.shape)
    R = np.random.default_rng(11).standard_normal(out_shape).astype(np.float32)

    assert [w.path.split("/", 1)[1] for w in klayer.trainable_variables] == \
           [w.path.split("/", 1)[1] for w in klayer.weights]
    tv = [w.value for w in klayer.trainable_variables]
    ntv = [w.value for w in klayer.non_trainable_variables]
    flags = {n: keras_kw.pop(n) for n in ("use_causal_mask",) if n in keras_kw}

    def keras_loss(tv, q, v, k, masks):
        out, _ = klayer.stateless_call(tv, ntv, q, v, key=k, return_attention_scores=explicit,
                                       **flags, **masks)
        return ((out[0] if explicit else out) * R).sum()

    k_grads = jax.jit(jax.grad(keras_loss, argnums=(0, 1, 2, 3)))(tv, q, v, k, keras_kw)

    qt, vt = tm.Tensor(q, requires_grad=True), tm.Tensor(v, requires_grad=True)
    kt = None if k is None else tm.Tensor(k, requires_grad=True)
    out = ours(qt, vt, key=kt, return_attention_scores=explicit, **kw)
    ((out[0] if explicit else out) * R).sum().backward()

    assert len(ours.weights) == len(k_grads[0])
    for w, g, kvar in zip(ours.weights, k_grads[0], klayer.trainable_variables):
        if kvar.path.endswith("key/bias"):
            # The key bias adds the same q . b_k to every key's score, which softmax ignores:
            # its true gradient is 0 and both sides hold only rounding noise.
            noise = GRAD_RTOL * float(np.abs(k_grads[0][2]).max())
            assert np.abs(w.grad).max() <= noise and np.abs(np.asarray(g)).max() <= noise
            continue
        assert_close(w.grad, g, rtol=GRAD_RTOL, what=f"{name}: d/d {kvar.path}")
    assert_close(qt.grad, k_grads[1], rtol=GRAD_RTOL, what=f"{name}: d/d query")
    assert_close(vt.grad, k_grads[2], rtol=GRAD_RTOL, what=f"{name}: d/d value")
    if k is not None:
        assert_close(kt.grad, k_grads[3], rtol=GRAD_RTOL, what=f"{name}: d/d key")


# ------------------------------------------------------------------ 3. dropout
def test_dropout_inference_equals_no_dropout(keras):
    """Dropout masks can't match bitwise (different RNGs); everything else about dropout can."""
    ctor = dict(num_heads=2, key_dim=4, dropout=0.4, seed=3, kernel_initializer="zeros")
    rng = np.random.default_rng(0)
    q, v = rng.standard_normal((B, 6, 8)).astype(np.float32), rng.standard_normal((B, 5, 8)).astype(np.float32)
    klayer, ours = keras.layers.MultiHeadAttention(**ctor), tm.MultiHeadAttention(**ctor)
    k_plain = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, kernel_initializer="zeros")
    for layer in (klayer, ours, k_plain):
        layer.build(q.shape, v.shape)
    weights = random_weights([w.shape for w in klayer.get_weights()], 1)
    for layer in (klayer, ours, k_plain):
        layer.set_weights(weights)
    ref_out, ref_scores = keras_call(k_plain, q, v, scores=True)  # Keras without dropout
    for training in (False, None):
        k_out, k_scores = keras_call(klayer, q, v, scores=True, training=training)
        assert_close(k_out, ref_out)  # (Keras itself: inference == no dropout)
        o_out, o_scores = ours(q, v, return_attention_scores=True, training=training)
        assert_close(o_out.numpy(), ref_out, what=f"training={training}")
        assert_close(o_scores.numpy(), ref_scores, what=f"training={training}")
        assert_close(ours(q, v, training=training).numpy(), ref_out)

    # training=True: the output changes, the returned scores are the pre-dropout probabilities
    # (as in Keras), and a fresh layer with the same seed reproduces the same dropout masks.
    k_out_t, k_scores_t = keras_call(klayer, q, v, scores=True, training=True)
    assert not np.allclose(k_out_t, ref_out, atol=1e-3)
    assert_close(k_scores_t, ref_scores)
    out_t, scores_t = ours(q, v, return_attention_scores=True, training=True)
    assert not np.allclose(out_t.numpy(), ref_out, atol=1e-3)
    assert_close(scores_t.numpy(), ref_scores)

    fresh = tm.MultiHeadAttention(**ctor)
    fresh.build(q.shape, v.shape)
    fresh.set_weights(weights)
    np.testing.assert_array_equal(fresh(q, v, training=True).numpy(), out_t.numpy())
    # the stream advances call by call (like Keras' SeedGenerator), and the fresh layer follows it
    second = ours(q, v, training=True).numpy()
    assert not np.array_equal(second, out_t.numpy())
    np.testing.assert_array_equal(fresh(q, v, training=True).numpy(), second)
    # and inference after training is still exact
    assert_close(ours(q, v).numpy(), ref_out)


# ------------------------------------------------------------------ 4. initializer statistics
def glorot_limit(fan_in, fan_out):
    """Keras GlorotUniform = VarianceScaling(1.0, "fan_avg", "uniform"):
    scale = 1 / max(1, (fan_in + fan_out) / 2), limit = sqrt(3 * scale)."""
    return math.sqrt(3.0 / max(1.0, (fan_in + fan_out) / 2.0))


F_Q, F_V, F_K, HEADS, DK, DV, OUT = 300, 200, 150, 4, 32, 48, 100
# kernel index in weights: (shape, fan_in = contracted input axes, fan_out = new output axes)
EINSUM_FANS = {
    0: ((F_Q, HEADS, DK), F_Q, HEADS * DK),   # query
    2: ((F_K, HEADS, DK), F_K, HEADS * DK),   # key
    4: ((F_V, HEADS, DV), F_V, HEADS * DV),   # value
    6: ((HEADS, DV, OUT), HEADS * DV, OUT),   # attention_output
}


def test_keras_uses_einsum_fans(keras):
    """Our expected fans are the ones Keras' EinsumDense hands to VarianceScaling (cheap:
    Keras' own equation analysis on a zeros-initialised layer, no random draws)."""
    try:
        from keras.src.initializers.random_initializers import compute_fans
        from keras.src.layers.core.einsum_dense import _analyze_einsum_string
    except ImportError:  # private helpers; the layout may change in other Keras versions
        pytest.skip("Keras' private einsum helpers are not available")
    shapes = (1, 3, F_Q), (1, 3, F_V), (1, 3, F_K)
    klayer = keras.layers.MultiHeadAttention(HEADS, DK, value_dim=DV, output_shape=OUT,
                                             kernel_initializer="zeros")
    klayer.build(*shapes)
    inputs = {"query": shapes[0], "key": shapes[2], "value": shapes[1], "attention_output": (1, 3, HEADS, DV)}
    subs = [klayer.query_dense, klayer.key_dense, klayer.value_dense, klayer.output_dense]
    for index, sub in zip(sorted(EINSUM_FANS), subs):
        kernel_shape, _, _, in_axes, out_axes = _analyze_einsum_string(
            sub.equation, sub.bias_axes, inputs[sub.name], sub.partial_output_shape)
        shape, fan_in, fan_out = EINSUM_FANS[index]
        assert tuple(kernel_shape) == shape
        assert compute_fans(kernel_shape, in_axes, out_axes) == (fan_in, fan_out), sub.name


def test_default_glorot_bounds_use_einsum_fans():
    """Default glorot_uniform kernels: bounded by the einsum-fan limit, filling it, with the
    variance limit^2 / 3 of a uniform. (Keras' generic rank-3 fans, which treat leading axes
    as a receptive field, would give limits several times smaller: caught by the bounds.)"""
    tm.set_seed(0)
    ours = tm.MultiHeadAttention(HEADS, DK, value_dim=DV, output_shape=OUT)
    ours.build((1, 3, F_Q), (1, 3, F_V), (1, 3, F_K))
    weights = ours.get_weights()
    for i, (shape, fan_in, fan_out) in EINSUM_FANS.items():
        w, limit = weights[i], glorot_limit(fan_in, fan_out)
        assert w.shape == shape
        assert np.abs(w).max() <= limit * (1 + 1e-6), f"kernel {i}: max {np.abs(w).max()} > {limit}"
        assert np.abs(w).max() >= 0.99 * limit, f"kernel {i} does not fill its range"
        # the sample variance of >= 19,200 uniforms is within ~0.7% (1 sd) of limit^2 / 3
        assert w.var() == pytest.approx(limit ** 2 / 3, rel=0.04), f"kernel {i}"
        assert abs(w.mean()) < 0.02 * limit
    for i in (1, 3, 5, 7):  # default bias initializer: zeros
        assert not weights[i].any()
    # sub-layers draw independently (Keras clones the initializer for each sub-layer)
    assert not np.array_equal(weights[0][:F_K], weights[2])


# ------------------------------------------------------------------ 5. get_config
# Keys Keras' MultiHeadAttention.get_config() has that ours does not (Keras-only):
#   "trainable" (Keras layer trainability flag).
# Keys present in both but with different value formats:
#   "dtype": Keras a DTypePolicy config dict, ours the dtype name string ("float32");
#   initializer / regularizer / constraint dicts: Keras adds "module" and "registered_name";
#   "output_shape"/"attention_axes": Keras tuples, ours lists (JSON); Keras also rewrites
#   "attention_axes" to its normalised tuple once built, ours keeps the constructor value.
# Keras 3.15 does not serialise "flash_attention"; we do (issue 13: "kept in get_config").
KERAS_ONLY_KEYS = {"trainable"}
OURS_ONLY_KEYS = {"flash_attention"}


def test_get_config_keys_match_keras(keras):
    ctor = dict(num_heads=3, key_dim=4, value_dim=6, dropout=0.1, use_bias=False, output_shape=(2, 5),
                attention_axes=(1,), use_gate=True, sliding_window=4, seed=7,
                kernel_initializer="he_normal", bias_initializer="ones", kernel_regularizer="l2")
    kc = keras.layers.MultiHeadAttention(**ctor).get_config()
    oc = tm.MultiHeadAttention(**ctor).get_config()
    assert set(kc) - set(oc) == KERAS_ONLY_KEYS
    assert set(oc) - set(kc) == OURS_ONLY_KEYS
    for key in ("num_heads", "key_dim", "value_dim", "dropout", "use_bias", "use_gate",
                "sliding_window", "seed"):
        assert oc[key] == kc[key], key
    assert list(oc["output_shape"]) == list(kc["output_shape"])
    assert list(oc["attention_axes"]) == list(kc["attention_axes"])
    for key in ("kernel_initializer", "bias_initializer", "kernel_regularizer"):
        assert oc[key]["class_name"] == kc[key]["class_name"], key
        assert set(oc[key]["config"]) == set(kc[key]["config"]), key
    for key in ("bias_regularizer", "activity_regularizer", "kernel_constraint", "bias_constraint"):
        assert oc[key] is None and kc[key] is None

    # defaults agree too (value_dim resolves to key_dim on both sides)
    kd, od = keras.layers.MultiHeadAttention(2, 5).get_config(), tm.MultiHeadAttention(2, 5).get_config()
    for key in set(kd) - KERAS_ONLY_KEYS - {"name", "dtype", "kernel_initializer", "bias_initializer"}:
        assert od[key] == kd[key], key


def test_get_config_round_trip():
    ctor = dict(num_heads=3, key_dim=4, value_dim=6, dropout=0.1, output_shape=(2, 5),
                attention_axes=(-2,), use_gate=True, sliding_window=4, seed=7,
                kernel_initializer={"class_name": "GlorotUniform", "config": {"seed": 3}},
                kernel_regularizer="l2", bias_constraint="non_neg")
    layer = tm.MultiHeadAttention(**ctor)
    cfg = layer.get_config()
    text = json.dumps(cfg)
    again = tm.MultiHeadAttention.from_config(json.loads(text))
    assert again.get_config() == cfg
    # a rebuilt layer computes the same function once given the same weights
    rng = np.random.default_rng(0)
    q, v = rng.standard_normal((B, 3, 6, 8)).astype(np.float32), rng.standard_normal((B, 3, 5, 7)).astype(np.float32)
    layer.build(q.shape, v.shape)
    again.build(q.shape, v.shape)
    again.set_weights(layer.get_weights())
    np.testing.assert_array_equal(again(q, v).numpy(), layer(q, v).numpy())


def test_from_keras_config(keras):
    """A Keras config, less its Keras-only keys, builds an equivalent layer of ours."""
    ctor = dict(num_heads=2, key_dim=3, value_dim=4, output_shape=6, use_gate=True, sliding_window=3,
                kernel_initializer=keras.initializers.GlorotUniform(seed=4), kernel_regularizer="l1")
    cfg = keras.layers.MultiHeadAttention(**ctor).get_config()
    ours = tm.MultiHeadAttention.from_config(
        {k: v for k, v in cfg.items() if k not in KERAS_ONLY_KEYS | {"dtype", "name"}})
    oc = ours.get_config()
    for key in set(cfg) - KERAS_ONLY_KEYS - {"dtype", "name", "output_shape"}:
        if isinstance(cfg[key], dict):
            assert (oc[key]["class_name"], oc[key]["config"]) == (cfg[key]["class_name"], cfg[key]["config"]), key
        else:
            assert oc[key] == cfg[key], key
    # same function as Keras once the weights agree (Keras rebuilt from the same config,
    # zeros-initialised only to spare jax a random-kernel compile; weights are overwritten)
    klayer = keras.layers.MultiHeadAttention.from_config({**cfg, "kernel_initializer": "zeros"})
    rng = np.random.default_rng(0)
    q, v = rng.standard_normal((B, 5, 8)).astype(np.float32), rng.standard_normal((B, 5, 7)).astype(np.float32)
    klayer.build(q.shape, v.shape)
    ours.build(q.shape, v.shape)
    klayer.set_weights(random_weights([w.shape for w in klayer.get_weights()], 2))
    ours.set_weights(klayer.get_weights())
    assert_close(ours(q, v).numpy(), keras_call(klayer, q, v, scores=True)[0])
