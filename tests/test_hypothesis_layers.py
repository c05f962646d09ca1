"""Property-based tests: random shapes, attention axes, masks and configurations of
MultiHeadAttention against a compact NumPy implementation written here from ``get_weights()``;
random einsum equations against ``numpy.einsum``; three-way broadcasting in ``where`` and
broadcast masks in the joint softmax. Every family is also gradient-checked at tiny sizes.

The NumPy reference works differently from the layer on purpose: it moves the attention axes
to the back, flattens them, and does plain batched matmuls, instead of building einsum
equations.
"""

import math

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_mha as tm

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GRAD = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- a NumPy MultiHeadAttention
def np_mha(query, value, key, weights, *, num_heads, use_bias, use_gate, axes, attention_mask=None,
           query_mask=None, value_mask=None, key_mask=None, causal=False, window=None):
    """(output, scores) of Keras' MultiHeadAttention for float64 arrays, from the layer's weights."""
    w = list(weights)

    def projection():
        kernel = w.pop(0)
        return kernel, (w.pop(0) if use_bias else 0.0)

    (wq, bq), (wk, bk) = projection(), projection()
    wg, bg = projection() if use_gate else (None, None)
    (wv, bv), (wo, bo) = projection(), projection()
    rank = query.ndim
    q = np.tensordot(query, wq, axes=([-1], [0])) + bq   # (B, *index, H, D)
    k = np.tensordot(key, wk, axes=([-1], [0])) + bk
    v = np.tensordot(value, wv, axes=([-1], [0])) + bv
    others = [a for a in range(1, rank - 1) if a not in axes]
    perm = [0] + others + [rank - 1] + list(axes) + [rank]  # (batch..., H, attended..., D)
    q, k, v = q.transpose(perm), k.transpose(perm), v.transpose(perm)
    n = 1 + len(others)
    batch, t_shape, s_shape = q.shape[:n], q.shape[n + 1:-1], k.shape[n + 1:-1]
    T, S = math.prod(t_shape), math.prod(s_shape)
    qf = q.reshape(batch + (num_heads, T, q.shape[-1]))
    kf = k.reshape(batch + (num_heads, S, k.shape[-1]))
    vf = v.reshape(batch + (num_heads, S, v.shape[-1]))
    logits = qf @ kf.swapaxes(-1, -2) / np.sqrt(q.shape[-1])

    keep = np.ones(batch + (1, T, S), bool)
    by_axes = [0] + others + list(axes)  # an input mask (B, *index) in scores order
    if attention_mask is not None:
        keep = keep & np.broadcast_to(attention_mask, batch + t_shape + s_shape).reshape(batch + (1, T, S))
    if query_mask is not None:
        keep = keep & query_mask.transpose(by_axes).reshape(batch + (1, T, 1))
    for m in (value_mask, key_mask):
        if m is not None:
            keep = keep & m.transpose(by_axes).reshape(batch + (1, 1, S))
    t_pos, s_pos = np.arange(T)[:, None], np.arange(S)[None, :]
    if causal:
        keep = keep & (t_pos >= s_pos)
    if window is not None:
        keep = keep & (np.abs(t_pos - s_pos) < window)

    logits = np.where(keep, logits, -np.inf)
    top = logits.max(-1, keepdims=True)
    e = np.exp(logits - np.where(np.isneginf(top), 0.0, top))
    total = e.sum(-1, keepdims=True)
    probs = e / np.where(total == 0, 1.0, total)   # a row with nothing kept is all zeros

    context = (probs @ vf).reshape(batch + (num_heads,) + t_shape + (vf.shape[-1],))
    context = context.transpose(np.argsort(perm))   # back to (B, *index, H, Dv)
    if use_gate:
        context = context / (1 + np.exp(-(np.tensordot(query, wg, axes=([-1], [0])) + bg)))
    out = np.tensordot(context, wo, axes=([-2, -1], [0, 1])) + (bo if use_bias else 0.0)
    return out, probs.reshape(batch + (num_heads,) + t_shape + s_shape)


# ---------------------------------------------------------------- random configurations
@st.composite
def mha_cases(draw, max_side=3, max_batch=2, max_features=3):
    rank = draw(st.integers(3, 5))
    index_axes = list(range(1, rank - 1))
    if draw(st.booleans()):
        attention_axes, axes = None, index_axes
    else:  # any non-empty subset, in any order, each spelled positive or negative
        axes = draw(st.lists(st.sampled_from(index_axes), min_size=1, max_size=len(index_axes), unique=True))
        attention_axes = tuple(a - rank if draw(st.booleans()) else a for a in axes)
    side = st.integers(1, max_side)
    batch = draw(st.integers(1, max_batch))
    q_index = [draw(side) for _ in index_axes]
    v_index = [draw(side) if a in axes else q_index[i] for i, a in enumerate(index_axes)]
    features = st.integers(1, max_features)
    q_shape = (batch, *q_index, draw(features))
    v_shape = (batch, *v_index, draw(features))
    k_shape = (batch, *v_index, draw(features)) if draw(st.booleans()) else None
    output_shape = draw(st.none() | st.integers(1, 3) | st.tuples(st.integers(1, 2), st.integers(1, 2)))
    config = dict(num_heads=draw(st.integers(1, 3)), key_dim=draw(st.integers(1, 3)),
                  value_dim=draw(st.none() | st.integers(1, 3)), use_bias=draw(st.booleans()),
                  use_gate=draw(st.sampled_from([False, False, True])), output_shape=output_shape,
                  attention_axes=attention_axes, sliding_window=draw(st.sampled_from([None, None, 1, 2])))

    others = [a for a in index_axes if a not in axes]
    scores_batch = (batch,) + tuple(q_shape[a] for a in others)
    t_shape, s_shape = tuple(q_shape[a] for a in axes), tuple(v_shape[a] for a in axes)

    def maybe_mask(shape):
        if not draw(st.booleans()):
            return None
        shape = tuple(1 if draw(st.integers(0, 3)) == 0 else n for n in shape)  # some axes broadcast
        return draw(hnp.arrays(bool, shape))

    masks = dict(attention_mask=maybe_mask(scores_batch + t_shape + s_shape),
                 query_mask=maybe_mask(q_shape[:-1]) if draw(st.booleans()) else None,
                 value_mask=maybe_mask(v_shape[:-1]) if draw(st.booleans()) else None,
                 key_mask=maybe_mask(v_shape[:-1]) if draw(st.booleans()) else None,
                 use_causal_mask=draw(st.booleans()))
    # input masks need their full shape (Keras); only attention_mask may broadcast
    for name, shape in (("query_mask", q_shape), ("value_mask", v_shape), ("key_mask", v_shape)):
        if masks[name] is not None:
            masks[name] = np.broadcast_to(masks[name], shape[:-1]).copy()
    return dict(config=config, axes=tuple(axes), q_shape=q_shape, v_shape=v_shape, k_shape=k_shape,
                masks=masks, seed=draw(st.integers(0, 2 ** 16)))


def make(case):
    rng = np.random.default_rng(case["seed"])
    layer = tm.MultiHeadAttention(**case["config"], dtype="float64")
    layer.build(case["q_shape"], case["v_shape"], case["k_shape"])
    layer.set_weights([rng.standard_normal(w.shape) * 0.7 for w in layer.weights])
    query = rng.standard_normal(case["q_shape"])
    value = rng.standard_normal(case["v_shape"])
    key = None if case["k_shape"] is None else rng.standard_normal(case["k_shape"])
    return layer, query, value, key


def reference(case, layer, query, value, key):
    c, m = case["config"], case["masks"]
    return np_mha(query, value, value if key is None else key, layer.get_weights(), num_heads=c["num_heads"],
                  use_bias=c["use_bias"], use_gate=c["use_gate"], axes=case["axes"],
                  attention_mask=m["attention_mask"], query_mask=m["query_mask"], value_mask=m["value_mask"],
                  key_mask=m["key_mask"], causal=m["use_causal_mask"], window=c["sliding_window"])


@FAST
@given(case=mha_cases())
def test_multi_head_attention_matches_the_numpy_reference(case):
    layer, query, value, key = make(case)
    out, scores = layer(query, value, key, return_attention_scores=True, **case["masks"])
    want, want_scores = reference(case, layer, query, value, key)
    assert out.shape == want.shape == layer.compute_output_shape(case["q_shape"], case["v_shape"], case["k_shape"])
    assert scores.shape == want_scores.shape
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(scores.numpy(), want_scores, rtol=1e-10, atol=1e-12)
    assert np.isfinite(out.numpy()).all() and np.isfinite(scores.numpy()).all()


@GRAD
@given(case=mha_cases(max_side=2, max_batch=1, max_features=2))
def test_multi_head_attention_gradcheck(case):
    layer, query, value, key = make(case)
    inputs = [tm.Tensor(query, requires_grad=True), tm.Tensor(value, requires_grad=True)]
    if key is not None:
        inputs.append(tm.Tensor(key, requires_grad=True))
    n = len(inputs)

    def fn(*args):
        out, scores = layer(*args[:n], return_attention_scores=True, **case["masks"])
        return tm.concatenate([out.reshape(-1), scores.reshape(-1)])

    assert tm.gradcheck(fn, (*inputs, *layer.weights))


# ---------------------------------------------------------------- einsum equations
@st.composite
def einsum_cases(draw):
    letters = "abcde"
    sizes = {c: draw(st.integers(1, 3)) for c in letters}
    n_ops = draw(st.integers(1, 3))
    ellipsis = draw(st.booleans())
    ell_shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=n_ops, min_dims=0, max_dims=2, max_side=2)
                      ).input_shapes if ellipsis else [()] * n_ops
    terms, shapes = [], []
    for k in range(n_ops):
        term = draw(st.lists(st.sampled_from(letters[:4]), min_size=0, max_size=3))  # repeats = diagonals
        ones = {c for c in set(term) if draw(st.integers(0, 4)) == 0}  # this operand broadcasts letter c
        named = [1 if c in ones else sizes[c] for c in term]
        if ellipsis:
            at = draw(st.integers(0, len(term)))
            terms.append("".join(term[:at]) + "..." + "".join(term[at:]))
            shapes.append(tuple(named[:at]) + tuple(ell_shapes[k]) + tuple(named[at:]))
        else:
            terms.append("".join(term))
            shapes.append(tuple(named))
    used = sorted(set("".join(terms)) - {"."})
    if draw(st.booleans()):
        out = draw(st.permutations(used))[: draw(st.integers(0, len(used)))]
        out = list(out)
        if ellipsis:
            out.insert(draw(st.integers(0, len(out))), "...")
        equation = ",".join(terms) + "->" + "".join(out)
    else:
        equation = ",".join(terms)
    return equation, shapes, draw(st.integers(0, 2 ** 16))


@FAST
@given(case=einsum_cases())
def test_einsum_matches_numpy_and_passes_gradcheck(case):
    equation, shapes, seed = case
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s) for s in shapes]
    try:
        want = np.einsum(equation, *arrays)
    except ValueError:
        assume(False)  # NumPy refuses this combination; nothing to compare with
    tensors = [tm.Tensor(a, requires_grad=True) for a in arrays]
    got = tm.einsum(equation, *tensors)
    assert got.shape == np.shape(want)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-12)
    fast = sum(a.size for a in arrays) > 60
    assert tm.gradcheck(lambda *ts: tm.einsum(equation, *ts), tensors, fast=fast)


# ---------------------------------------------------------------- broadcasts
@FAST
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3, max_side=3),
       seed=st.integers(0, 2 ** 16))
def test_where_broadcasts_condition_and_both_branches(shapes, seed):
    rng = np.random.default_rng(seed)
    cond_shape, a_shape, b_shape = shapes.input_shapes
    cond = rng.random(cond_shape) < 0.5
    a = tm.Tensor(rng.standard_normal(a_shape), requires_grad=True)
    b = tm.Tensor(rng.standard_normal(b_shape), requires_grad=True)
    out = tm.where(cond, a, b)
    np.testing.assert_array_equal(out.numpy(), np.where(cond, a.numpy(), b.numpy()))
    assert tm.gradcheck(lambda a, b: tm.where(cond, a, b), (a, b))


@st.composite
def masked_softmax_cases(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=3))
    kept = shape[draw(st.integers(0, len(shape))):]          # leading axes may be missing ...
    mask_shape = tuple(1 if draw(st.booleans()) else n for n in kept)  # ... and others be 1
    mask = draw(hnp.arrays(bool, mask_shape)) if draw(st.booleans()) else None
    axis = tuple(draw(st.lists(st.integers(-len(shape), len(shape) - 1), min_size=1, max_size=len(shape),
                               unique_by=lambda a: a % len(shape))))
    return shape, mask, axis, draw(st.integers(0, 2 ** 16))


@FAST
@given(case=masked_softmax_cases())
def test_joint_masked_softmax_matches_numpy_and_passes_gradcheck(case):
    shape, mask, axis, seed = case
    x = tm.Tensor(np.random.default_rng(seed).standard_normal(shape) * 3, requires_grad=True)
    raw = x.numpy()
    keep = np.ones(shape, bool) if mask is None else np.broadcast_to(mask, shape)
    logits = np.where(keep, raw, -np.inf)
    top = logits.max(axis=axis, keepdims=True)
    e = np.exp(logits - np.where(np.isneginf(top), 0.0, top))
    total = e.sum(axis=axis, keepdims=True)
    want = e / np.where(total == 0, 1.0, total)
    got = tm.softmax(x, axis=axis if len(axis) > 1 else axis[0], mask=mask)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-15)
    assert tm.gradcheck(lambda t: tm.softmax(t, axis=axis, mask=mask), (x,))
