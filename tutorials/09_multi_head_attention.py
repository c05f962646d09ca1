# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 09 · `MultiHeadAttention`: projections, heads, axes, masks
#
# Tutorial 08 wrote one attention head by hand. A `MultiHeadAttention` layer runs $H$ of them
# side by side, each on its own learned projection of the inputs, and mixes their results:
#
# $$\mathrm{head}_h = \mathrm{Attention}(X_q W^Q_h + b^Q_h,\; X_k W^K_h + b^K_h,\;
#   X_v W^V_h + b^V_h),
# \qquad \mathrm{out} = \sum_{h=1}^{H} \mathrm{head}_h\, W^O_h + b^O .$$
#
# This tutorial takes `tm.MultiHeadAttention` apart: the kernel shapes (Keras's layout), a
# NumPy re-implementation from its weights, `output_shape`, `attention_axes` for 2-D
# attention over an image, every kind of mask, the all-zero row of a query that may see
# nothing, gradients by finite differences, and how the layer is checked against Keras.

# %%
import inspect
import math
import os

import numpy as np

import tinygrad_mha as tm
from tinygrad_mha.layers.einsum_dense import tensordot_axes
from tinygrad_mha.plotting import attention_heatmaps, show

SMALL = os.environ.get("TINYGRAD_MHA_SMALL", "0") not in ("", "0")
print("small mode" if SMALL else "full size")
rng = np.random.default_rng(0)
tm.set_seed(0)

# %% [markdown]
# ## 1. Projections and kernel shapes
#
# Inputs are `(batch, *index_dims, features)`. The layer is built lazily on its first call,
# when the feature sizes are known. We use different feature sizes for query (16) and value
# (12) so that every shape below tells where it comes from.

# %%
B, T, S = (2, 4, 5) if SMALL else (4, 9, 11)
F_Q, F_V, HEADS, KEY_DIM, VALUE_DIM = 16, 12, 4, 8, 6
query = rng.standard_normal((B, T, F_Q))
value = rng.standard_normal((B, S, F_V))

layer = tm.MultiHeadAttention(num_heads=HEADS, key_dim=KEY_DIM, value_dim=VALUE_DIM,
                              bias_initializer="random_normal", dtype="float64")
out, scores = layer(query, value, return_attention_scores=True)
print("output", out.shape, " scores", scores.shape)
for w in layer.weights:
    print(f"  {w.name:26s} {str(w.shape):14s}")

# %% [markdown]
# The layout is Keras's, so weights move between the two libraries unchanged:
#
# | weight | shape | meaning |
# |---|---|---|
# | query kernel | `(F_q, H, key_dim)` | $W^Q$: one `(F_q, key_dim)` matrix per head |
# | key kernel | `(F_k, H, key_dim)` | $W^K$ |
# | value kernel | `(F_v, H, value_dim)` | $W^V$ |
# | output kernel | `(H, value_dim, F_out)` | $W^O$: contracts heads *and* value_dim |
#
# Keeping the head axis separate (instead of a `(F, H*key_dim)` matrix that is reshaped)
# makes each projection a single einsum. The projections are `EinsumDense` sub-layers:

# %%
for sub in (layer.query_dense, layer.key_dense, layer.value_dense, layer.output_dense):
    print(f"  {sub.name:18s} {sub.equation:18s} bias axes {sub.bias_axes!r}  "
          f"tensordot over {tensordot_axes(sub.equation)} axes")

# %% [markdown]
# `abc,cde->abde` maps `(B, T, F)` to `(B, T, H, D)`; the output projection
# `abcd,cde->abe` sums over heads `c` and value features `d` at once: that sum *is* the
# "concatenate the heads and multiply by $W^O$" of the paper.
#
# All four equations have one shape: the input's last letters are the kernel's first, and
# the output keeps the rest of each in order. That is `tm.tensordot(x, kernel, n)` with n = 1
# or 2, and `EinsumDense` runs such equations that way (`tensordot_axes` decides; any other
# equation goes to einsum). Its reference is an einsum plus the bias; its kernel
# (`tinygrad_mha/kernels/tensordot.py`) is a single `(B*T, F) @ (F, H*D)` matrix product on
# reshaped views.
#
# ## 2. The layer, re-done in NumPy from its weights
#
# An independent reference: plain NumPy, the formula above, the layer's weights. The
# scores are `(B, H, T, S)`, one $T\times S$ attention matrix per head.

# %%
def mha_numpy(q, v, weights, mask=None, k=None):
    """Multi-head attention for rank-3 inputs, written from the formula (no tinygrad_mha)."""
    k = v if k is None else k
    wq, bq, wk, bk, wv, bv, wo, bo = weights
    Q = np.einsum("btf,fhd->bthd", q, wq) + bq
    K = np.einsum("bsf,fhd->bshd", k, wk) + bk
    V = np.einsum("bsf,fhd->bshd", v, wv) + bv
    s = np.einsum("bthd,bshd->bhts", Q, K) / math.sqrt(wq.shape[-1])
    if mask is not None:
        mask = np.broadcast_to(mask[:, None] if mask.ndim == 3 else mask, s.shape)
        s = np.where(mask, s, -np.inf)
    s_max = s.max(-1, keepdims=True)
    e = np.exp(s - np.where(np.isfinite(s_max), s_max, 0.0))
    total = e.sum(-1, keepdims=True)
    p = e / np.where(total == 0, 1.0, total)          # a row with nothing kept stays all zero
    context = np.einsum("bhts,bshd->bthd", p, V)
    return np.einsum("bthd,hdo->bto", context, wo) + bo, p


ref_out, ref_scores = mha_numpy(query, value, layer.get_weights())
plain_error = max(np.abs(out.numpy() - ref_out).max(), np.abs(scores.numpy() - ref_scores).max())
print("max |layer - numpy|:", plain_error)

# %% [markdown]
# ## 3. `output_shape`
#
# By default the output has the query's feature size (16 here), so the layer can sit in a
# residual connection `x + mha(x, x)`. `output_shape` projects to anything else, even several
# axes: the output kernel becomes `(H, value_dim, *output_shape)`.

# %%
shaped = tm.MultiHeadAttention(num_heads=HEADS, key_dim=KEY_DIM, output_shape=(2, 5),
                               dtype="float64")
shaped_out = shaped(query, value)
print("output_shape=(2, 5):", shaped_out.shape, " output kernel", shaped.output_dense.kernel.shape)
print("compute_output_shape:", shaped.compute_output_shape(query.shape, value.shape))

# %% [markdown]
# ## 4. `attention_axes`: 2-D attention over an image
#
# Inputs may have several index axes, e.g. an image `(B, height, width, channels)`.
# `attention_axes` says which of them attention runs over; all others act like batch axes.
#
# * `attention_axes=(1, 2)`: every pixel attends to every pixel. The scores are
#   `(B, H, height, width, height, width)` and the softmax is taken **jointly** over the last
#   two axes. This is exactly 1-D attention over the flattened sequence of
#   `height * width` pixels, which we verify below.
# * `attention_axes=(2,)`: each pixel attends only within its own row. The height axis
#   becomes a batch axis: scores `(B, height, H, width, width)`. Equivalent to folding
#   height into the batch.
#
# The projections act on the channel axis only, so the weights have the same shapes in all
# three layers and can be copied between them. (The default, `attention_axes=None`, attends
# over every index axis: the same as `(1, 2)` here.)

# %%
IMG_H, IMG_W, CH = (3, 4, 6) if SMALL else (6, 6, 8)
image = rng.standard_normal((2, IMG_H, IMG_W, CH))

full2d = tm.MultiHeadAttention(num_heads=2, key_dim=4, attention_axes=(1, 2),
                               bias_initializer="random_normal", dtype="float64")
out2d, scores2d = full2d(image, image, return_attention_scores=True)
print("2-D attention: output", out2d.shape, " scores", scores2d.shape)

flat = tm.MultiHeadAttention(num_heads=2, key_dim=4, dtype="float64")
flat.build((2, IMG_H * IMG_W, CH), (2, IMG_H * IMG_W, CH))
flat.set_weights(full2d.get_weights())
flat_in = image.reshape(2, IMG_H * IMG_W, CH)
out_flat, scores_flat = flat(flat_in, flat_in, return_attention_scores=True)
error_2d = max(np.abs(out2d.numpy().reshape(out_flat.shape) - out_flat.numpy()).max(),
               np.abs(scores2d.numpy().reshape(scores_flat.shape) - scores_flat.numpy()).max())
print("2-D attention vs flattened 1-D attention:", error_2d)

rows = tm.MultiHeadAttention(num_heads=2, key_dim=4, attention_axes=(2,), dtype="float64")
rows.build(image.shape, image.shape)
rows.set_weights(full2d.get_weights())
out_rows, scores_rows = rows(image, image, return_attention_scores=True)
folded = image.reshape(2 * IMG_H, IMG_W, CH)
out_folded = flat(folded, folded)
error_rows = np.abs(out_rows.numpy().reshape(out_folded.shape) - out_folded.numpy()).max()
print("row attention: scores", scores_rows.shape, " vs folded batch:", error_rows)
print("einsum for 2-D scores:", full2d._dot_equation, "  softmax over axes", full2d._softmax_axes)

# %% [markdown]
# A picture: `plotting.attention_heatmaps` understands the 2-D layout and flattens it
# row-major, so each head is a $(h w) \times (h w)$ matrix: query pixels down, key pixels
# across (with random weights the pattern means nothing yet, but the shape is the point).

# %%
pixels_figure = attention_heatmaps(scores2d, title=f"2-D attention over a {IMG_H}x{IMG_W} image")
show(pixels_figure, "pixel_attention")

# %% [markdown]
# ## 5. Masks
#
# A boolean mask says which (query, key) pairs may interact (True = keep). The layer accepts
# several and ANDs them into one array shaped like the scores, then hands it to
# `tm.softmax(..., mask=...)`:
#
# * `attention_mask`: `(B, T, S)` (or with a head axis, `(B, H, T, S)`; missing leading axes
#   broadcast);
# * `value_mask` / `key_mask`: `(B, S)`, e.g. padding at the end of shorter sequences;
# * `query_mask`: `(B, T)`, queries that are padding;
# * `use_causal_mask=True`: query $t$ sees keys $s \le t$ (lower triangle, aligned top-left).
#
# Masked pairs get probability exactly 0: $p_{ts} = \frac{m_{ts} e^{s_{ts}}}{\sum_{s'}
# m_{ts'} e^{s_{ts'}}}$. Here is how the layer builds the combined mask:

# %%
print(inspect.getsource(type(layer)._attention_mask))

# %% [markdown]
# Padding plus causality, given two ways: as the layer's flags, and as one explicit
# `attention_mask` built by hand. Both must give the same result, and the NumPy reference
# must agree.

# %%
lengths = np.array([S - 2, S][:B] + [S - 1] * max(0, B - 2))
value_mask = np.arange(S)[None, :] < lengths[:, None]                  # (B, S)
causal = np.tril(np.ones((T, S), dtype=bool))                          # (T, S)
explicit = causal[None] & value_mask[:, None, :]                       # (B, T, S)

out_flags, scores_flags = layer(query, value, value_mask=value_mask, use_causal_mask=True,
                                return_attention_scores=True)
out_explicit, scores_explicit = layer(query, value, attention_mask=explicit,
                                      return_attention_scores=True)
ref_masked_out, ref_masked_scores = mha_numpy(query, value, layer.get_weights(), mask=explicit)
mask_error = max(np.abs(out_flags.numpy() - out_explicit.numpy()).max(),
                 np.abs(out_flags.numpy() - ref_masked_out).max(),
                 np.abs(scores_flags.numpy() - ref_masked_scores).max())
print("flags vs explicit mask vs numpy:", mask_error)
print("batch 0, head 0 probabilities (padding hides the last keys, causality the upper triangle):")
print(np.array2string(scores_flags.numpy()[0, 0], precision=2, suppress_small=True))
heads_figure = attention_heatmaps(scores_flags, title="padding + causal mask, batch 0, every head")
show(heads_figure, "masked_heads")

# %% [markdown]
# ## 6. A query that may see nothing
#
# What if a query row has **no** kept key, e.g. a padding query (`query_mask` False)? The
# formula above becomes $0/0$. A naive implementation (fill masked logits with $-\infty$)
# produces NaN, and NaN in one row poisons every gradient. tinygrad_mha defines the row as
# all zeros: the query attends to nothing, its context vector is 0, so its output is just
# the output bias $b^O$, and no gradient flows to or from that row. (Keras gives the same
# zeros on its explicit-softmax path but a uniform row on its fused path; see the README.)

# %%
q_t = tm.Tensor(query, requires_grad=True)
query_mask = np.ones((B, T), dtype=bool)
query_mask[0, 1] = False                                    # batch 0, query 1: padding
out_q, scores_q = layer(q_t, value, query_mask=query_mask, return_attention_scores=True)
(out_q * tm.Tensor(rng.standard_normal(out_q.shape))).sum().backward()
output_bias = layer.output_dense.bias.numpy()
print("probabilities of the masked query (every head):", scores_q.numpy()[0, :, 1].max())
print("its output minus the output bias:", np.abs(out_q.numpy()[0, 1] - output_bias).max())
print("gradient reaching its input row:", np.abs(q_t.grad[0, 1]).max(),
      " any NaN anywhere:", bool(np.isnan(q_t.grad).any()))

# %% [markdown]
# ## 7. Gradients, proven
#
# The layer is built from differentiable ops only, so `gradcheck` (tutorial 07) applies
# directly, also to the weights: a layer's weights are `Parameter`s (Tensors), and gradcheck
# perturbs them in place like any input. We use a tiny float64 layer with a causal mask.

# %%
tiny = tm.MultiHeadAttention(num_heads=2, key_dim=3, bias_initializer="random_normal",
                             dtype="float64")
x_small = tm.Tensor(rng.standard_normal((1, 3, 4)), requires_grad=True)
tiny(x_small, x_small)  # build


def self_attention(x, *weights):
    return tiny(x, x, use_causal_mask=True)


grads_ok = tm.gradcheck(self_attention, (x_small, *tiny.weights))
print("gradcheck of the input and all", len(tiny.weights), "weights:", grads_ok)

# %% [markdown]
# ## 8. Keras parity: the idea
#
# `tm.MultiHeadAttention` promises Keras 3's outputs for Keras's weights. The test is simple
# and needs no trust in either side: build both layers on the same shapes, copy the weights
# with `ours.set_weights(keras_layer.get_weights())` (same order, same shapes), and compare
# outputs and scores on the same inputs, with and without masks, for many shapes and
# `attention_axes` (see `tests/test_keras_parity.py`, which also compares gradients).
#
# Importing Keras takes seconds, so in small mode this cell only says what it would do; at
# full size it runs when Keras is installed (`pip install -e ".[dev]"`).

# %%
keras_error = None
if SMALL:
    print("small mode: Keras comparison skipped")
else:
    os.environ.setdefault("KERAS_BACKEND", "numpy")
    try:
        import keras
    except Exception as exc:  # not installed, or its backend is missing
        print(f"Keras not available ({type(exc).__name__}: {exc}); comparison skipped")
    else:
        k_layer = keras.layers.MultiHeadAttention(num_heads=HEADS, key_dim=KEY_DIM,
                                                  value_dim=VALUE_DIM)
        q32, v32 = query.astype("float32"), value.astype("float32")
        k_out, k_scores = k_layer(q32, v32, return_attention_scores=True, use_causal_mask=True)
        ours = tm.MultiHeadAttention(num_heads=HEADS, key_dim=KEY_DIM, value_dim=VALUE_DIM)
        ours.build(q32.shape, v32.shape)
        ours.set_weights(k_layer.get_weights())
        o_out, o_scores = ours(q32, v32, return_attention_scores=True, use_causal_mask=True)
        keras_error = max(np.abs(o_out.numpy() - np.asarray(k_out)).max(),
                          np.abs(o_scores.numpy() - np.asarray(k_scores)).max())
        print(f"Keras {keras.__version__} ({keras.backend.backend()} backend) vs tinygrad_mha, "
              f"float32: max difference {keras_error:.2e}")

# %% [markdown]
# ## Check: what this tutorial taught

# %%
# kernel shapes follow Keras's layout
assert [w.shape for w in layer.weights] == [
    (F_Q, HEADS, KEY_DIM), (HEADS, KEY_DIM), (F_V, HEADS, KEY_DIM), (HEADS, KEY_DIM),
    (F_V, HEADS, VALUE_DIM), (HEADS, VALUE_DIM), (HEADS, VALUE_DIM, F_Q), (F_Q,)]
assert out.shape == (B, T, F_Q) and scores.shape == (B, HEADS, T, S)
# the layer is the formula: agreement with an independent NumPy implementation
assert plain_error < 1e-12
# output_shape
assert shaped_out.shape == (B, T, 2, 5)
assert shaped.output_dense.kernel.shape == (HEADS, KEY_DIM, 2, 5)
# 2-D attention is attention over the flattened pixels; row attention folds rows into the batch
assert scores2d.shape == (2, 2, IMG_H, IMG_W, IMG_H, IMG_W)
np.testing.assert_allclose(scores2d.numpy().sum(axis=(-2, -1)), 1.0, atol=1e-12)
assert error_2d < 1e-12 and error_rows < 1e-12
assert scores_rows.shape == (2, IMG_H, 2, IMG_W, IMG_W)
# masks: flags == explicit mask == NumPy, masked pairs exactly zero
assert mask_error < 1e-12
assert np.all(scores_flags.numpy().transpose(1, 0, 2, 3)[:, ~explicit] == 0.0)
# the fully masked query: zero probabilities, output = bias, zero and finite gradients
assert np.all(scores_q.numpy()[0, :, 1] == 0.0)
np.testing.assert_allclose(out_q.numpy()[0, 1], output_bias, atol=1e-12)
assert np.all(q_t.grad[0, 1] == 0.0) and np.isfinite(q_t.grad).all()
assert np.abs(q_t.grad[0, 0]).max() > 0
# every projection is a tensordot: one matrix product, the same numbers as the einsum
for sub in (layer.query_dense, layer.key_dense, layer.value_dense, layer.output_dense):
    n = tensordot_axes(sub.equation)
    assert n in (1, 2)
    k_sub = np.random.default_rng(5).standard_normal(sub.kernel.shape[:n] + (2,))
    x_sub = np.random.default_rng(6).standard_normal((3,) + sub.kernel.shape[:n])
    np.testing.assert_allclose(tm.tensordot(tm.Tensor(x_sub), tm.Tensor(k_sub), n).numpy(),
                               np.tensordot(x_sub, k_sub, n), rtol=1e-12)
# gradients of the input and every weight match finite differences
assert grads_ok
# Keras parity (when it ran)
assert keras_error is None or keras_error < 1e-5
assert pixels_figure.axes and heads_figure.axes  # both figures were drawn
print("all checks passed")
