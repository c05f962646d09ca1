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
# # 08 · Scaled dot-product attention from scratch
#
# Attention is three tensor operations: a batch of dot products, a softmax, and a weighted
# sum. With the ops from tutorials 04 (einsum) and 05 (softmax) we can write it in four lines,
# let the engine differentiate it, derive the same gradients by hand, and finally find exactly
# this computation inside `tm.MultiHeadAttention`.
#
# $$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left(\frac{Q K^\top}{\sqrt{d}}\right) V,
# \qquad Q \in \mathbb{R}^{T\times d},\; K \in \mathbb{R}^{S\times d},\;
#   V \in \mathbb{R}^{S\times d_v}.$$
#
# Each of the $T$ queries asks "which of the $S$ keys look like me?"; the answer is a
# probability distribution over the keys (one softmax row), and the output is the matching
# average of the values.

# %%
import inspect
import math
import os

import numpy as np

import tinygrad_mha as tm
from tinygrad_mha.kernels.fused_attention import Attention
from tinygrad_mha.plotting import attention_heatmaps, show

SMALL = os.environ.get("TINYGRAD_MHA_SMALL", "0") not in ("", "0")
print("small mode" if SMALL else "full size")

# %% [markdown]
# ## 1. Why divide by $\sqrt{d}$?
#
# If the entries of a query $q$ and a key $k$ are independent with mean 0 and variance 1, the
# dot product $q\cdot k = \sum_{i=1}^{d} q_i k_i$ has mean 0 and variance $d$. With $d = 64$
# the logits have a standard deviation of 8, softmax of such logits is nearly one-hot, and
# its gradient $\partial p_i / \partial s_j = p_i(\delta_{ij} - p_j)$ is nearly zero
# everywhere: the layer cannot learn. Dividing by $\sqrt{d}$ brings the variance back to 1.
# We can watch this with the library's softmax: the entropy of a row (in nats, at most
# $\log S$) collapses without the scale.

# %%
rng = np.random.default_rng(0)
d_big, s_len = 64, 16
q_demo = rng.standard_normal((1000, d_big))
k_demo = rng.standard_normal((s_len, d_big))
logits = q_demo @ k_demo.T
print(f"std of q.k: {logits.std():.2f} (sqrt(d) = {math.sqrt(d_big):.0f})")


def mean_entropy(logits):
    p = tm.softmax(tm.Tensor(logits), axis=-1).numpy()
    return float(-(p * np.log(np.maximum(p, 1e-300))).sum(-1).mean())


entropy_unscaled = mean_entropy(logits)
entropy_scaled = mean_entropy(logits / math.sqrt(d_big))
print(f"mean row entropy: unscaled {entropy_unscaled:.2f}, scaled {entropy_scaled:.2f}, "
      f"uniform {math.log(s_len):.2f} nats")

# %% [markdown]
# ## 2. Attention in four lines
#
# With a batch axis $b$, queries $t$, keys $s$ and features $d$, einsum states each step
# exactly (tutorial 04):
#
# * scores $S_{bts} = \sum_d Q_{btd} K_{bsd} / \sqrt{d}$: `"btd,bsd->bts"`
# * probabilities $P_{bts} = \mathrm{softmax}_s(S_{bts})$, optionally with a boolean mask
#   (True = may attend; masked entries get probability exactly 0, tutorial 05)
# * output $O_{bte} = \sum_s P_{bts} V_{bse}$: `"bts,bse->bte"`

# %%
def attention(q, k, v, mask=None):
    """softmax(q k^T / sqrt(d)) v, built only from tinygrad_mha ops."""
    scores = tm.einsum("btd,bsd->bts", q, k) / math.sqrt(q.shape[-1])
    probs = tm.softmax(scores, axis=-1, mask=mask)
    return tm.einsum("bts,bse->bte", probs, v), probs


B, T, S, D, DV = (2, 4, 5, 8, 3) if SMALL else (4, 10, 12, 16, 6)
q = tm.Tensor(rng.standard_normal((B, T, D)), requires_grad=True)
k = tm.Tensor(rng.standard_normal((B, S, D)), requires_grad=True)
v = tm.Tensor(rng.standard_normal((B, S, DV)), requires_grad=True)
out, probs = attention(q, k, v)
print("output", out.shape, " probabilities", probs.shape, " each row sums to",
      probs.numpy().sum(-1).round(12).min())

# %% [markdown]
# The same thing written in plain NumPy is our independent reference (it shares no code with
# the library):

# %%
def attention_numpy(q, k, v, mask=None):
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    s = s - s.max(-1, keepdims=True)
    p = np.exp(s)
    p = p / p.sum(-1, keepdims=True)
    return p @ v, p


ref_out, ref_probs = attention_numpy(q.numpy(), k.numpy(), v.numpy())
forward_error = float(np.abs(out.numpy() - ref_out).max())
print("max |tm - numpy| of the output:", forward_error)

# %% [markdown]
# ## 3. The backward pass, by hand and by the engine
#
# Take a loss $L$ with upstream gradient $G = \partial L / \partial O$. Walking the three
# steps backwards (one chain-rule step each; $\odot$ is elementwise):
#
# $$\frac{\partial L}{\partial V} = P^\top G, \qquad
#   \frac{\partial L}{\partial P} = G V^\top,$$
# $$\frac{\partial L}{\partial S} = P \odot \Big(\frac{\partial L}{\partial P}
#   - \mathrm{rowsum}\big(\tfrac{\partial L}{\partial P} \odot P\big)\Big)
#   \quad\text{(the softmax VJP of tutorial 05)},$$
# $$\frac{\partial L}{\partial Q} = \frac{1}{\sqrt d}\,\frac{\partial L}{\partial S}\, K, \qquad
#   \frac{\partial L}{\partial K}
#   = \frac{1}{\sqrt d}\,\Big(\frac{\partial L}{\partial S}\Big)^{\!\top} Q.$$
#
# Every one of these is an einsum with the letters moved around: the gradient of an einsum
# with respect to one operand is another einsum of the upstream gradient and the other
# operands (tutorial 04). We compute them in NumPy and compare with `backward()`.

# %%
G = rng.standard_normal((B, T, DV))
out.backward(G)

Qn, Kn, Vn, P = q.numpy(), k.numpy(), v.numpy(), ref_probs
dV = np.einsum("bts,bte->bse", P, G)
dP = np.einsum("bte,bse->bts", G, Vn)
dS = P * (dP - (dP * P).sum(-1, keepdims=True))
dQ = np.einsum("bts,bsd->btd", dS, Kn) / math.sqrt(D)
dK = np.einsum("bts,btd->bsd", dS, Qn) / math.sqrt(D)

by_hand = {"q": dQ, "k": dK, "v": dV}
engine = {"q": q.grad, "k": k.grad, "v": v.grad}
for name in by_hand:
    print(f"d{name}: max |engine - by hand| = {np.abs(engine[name] - by_hand[name]).max():.2e}")

# %% [markdown]
# And the finite-difference proof of tutorial 07, on first and second derivatives (so the
# hand formulas above are themselves differentiable through the engine):

# %%
small = [tm.Tensor(t.numpy()[:1, :3, :], requires_grad=True) for t in (q, k, v)]
first_ok = tm.gradcheck(lambda q, k, v: attention(q, k, v)[0], small)
second_ok = tm.gradgradcheck(lambda q, k, v: attention(q, k, v)[0], small)
print("gradcheck:", first_ok, " gradgradcheck:", second_ok)

# %% [markdown]
# ## 4. Masks: causal attention
#
# In a language model, position $t$ may only look at positions $s \le t$. That is a boolean
# lower-triangular mask, broadcast over the batch. Masked scores get probability exactly 0,
# and the gradient of a masked score is exactly 0 too (its probability is a constant 0).

# %%
causal = np.tril(np.ones((T, S), dtype=bool))
q.zero_grad(), k.zero_grad(), v.zero_grad()
out_c, probs_c = attention(q, k, v, mask=causal)
ref_out_c, ref_probs_c = attention_numpy(Qn, Kn, Vn, mask=causal)
print("causal probabilities of batch 0 (rows: queries, columns: keys):")
print(np.array2string(probs_c.numpy()[0], precision=2, suppress_small=True))
causal_error = float(np.abs(out_c.numpy() - ref_out_c).max())
(out_c * tm.Tensor(G)).sum().backward()
# key s is invisible to every query t < s; for the keys past the last query (s >= T) nobody
# looks at them at all, so their gradient must be exactly zero
unseen_keys_grad = k.grad[:, T:, :] if S > T else np.zeros(1)
print("max |grad| of keys no query may see:", float(np.abs(unseen_keys_grad).max()))

# %% [markdown]
# ## 5. The same computation inside `tm.MultiHeadAttention`
#
# The library's layer wraps our four lines with learned projections (tutorial 09). Its
# `call` method is short; read it:

# %%
print(inspect.getsource(tm.MultiHeadAttention.call))

# %% [markdown]
# It projects `query`, `key`, `value` with `EinsumDense` layers and hands them to
# `tm.ops.attention`: our four lines again, `einsum(self._dot_equation, k, q)` scaled by
# $1/\sqrt{\text{key\_dim}}$, a softmax over the key axes with the combined mask, dropout,
# and `einsum(self._combine_equation, weights, v)`. For rank-3 inputs the equations are ours
# with a head axis added: `a` is the batch, `b` the query position, `e` the key position, `c`
# the head and `d` the feature contracted away.
#
# The reference `attention` (`tinygrad_mha/ops/attention.py`) is exactly those steps, and
# its gradient is theirs, chained by the engine. By default a kernel
# (`tinygrad_mha/kernels/fused_attention.py`) records them as *one* graph node, `Attention`,
# whose backward is the chain rule we just applied, written out once: the value gradient,
# the weights' gradient, the softmax gradient (in place) and the two contractions for query
# and key. One node instead of four saves the per-op bookkeeping, which at small sizes costs
# as much as the arithmetic; `with tm.use_kernels(False):` runs the reference instead, and
# the tests check that both agree. Read the reference, then the kernel's backward:

# %%
print(inspect.getsource(tm.ops.attention))
print(inspect.getsource(Attention.backward))

# %%
layer = tm.MultiHeadAttention(num_heads=1, key_dim=D, value_dim=DV, output_shape=DV,
                              dtype="float64")
layer.build((B, T, D), (B, S, DV), (B, S, D))
print("scores:  ", layer._dot_equation, "   (key, query -> batch, head, query, key)")
print("combine: ", layer._combine_equation)
for w in layer.weights:
    print(f"  {w.name:40s} {w.shape}")

# %% [markdown]
# If every projection is the identity and every bias zero, the layer is *exactly* our
# `attention`: one head, $W_Q = W_K = I_d$, $W_V = W_O = I_{d_v}$. Kernel shapes are Keras's
# `(features, heads, dim)` for the inputs and `(heads, dim, out)` for the output, so the
# identity matrices get a head axis of size 1.

# %%
identity_weights = []
for w in layer.weights:
    if "kernel" in w.name:
        n = w.shape[0] if w.shape[0] != 1 else w.shape[1]
        identity_weights.append(np.eye(n).reshape(w.shape))
    else:
        identity_weights.append(np.zeros(w.shape))
layer.set_weights(identity_weights)

lib_out, lib_scores = layer(q, v, key=k, return_attention_scores=True, use_causal_mask=True)
library_error = float(np.abs(lib_out.numpy() - out_c.numpy()).max())
scores_error = float(np.abs(lib_scores.numpy()[:, 0] - probs_c.numpy()).max())
print("library output vs from scratch:", library_error)
print("library scores vs from scratch:", scores_error, " scores shape", lib_scores.shape)

# %% [markdown]
# ## 6. A picture of the attention weights
#
# Each row is one query's distribution over the keys; the causal mask leaves the upper
# triangle at exactly zero. `tinygrad_mha.plotting.attention_heatmaps` draws one panel per
# head from the scores exactly as the layer returns them.

# %%
heatmap = attention_heatmaps(lib_scores, title="causal attention, batch 0 (one head)")
show(heatmap, "causal_attention")

# %% [markdown]
# ## Check: what this tutorial taught

# %%
# scaling keeps the softmax soft; without it rows are nearly one-hot
assert entropy_scaled > 2 * entropy_unscaled and entropy_scaled > 0.8 * math.log(s_len)
# the forward pass agrees with an independent NumPy implementation
assert forward_error < 1e-12 and causal_error < 1e-12
np.testing.assert_allclose(probs.numpy(), ref_probs, atol=1e-14)
# the engine's gradients are the hand-derived formulas
for name in by_hand:
    np.testing.assert_allclose(engine[name], by_hand[name], rtol=1e-10, atol=1e-12)
assert first_ok and second_ok
# causal mask: exact zeros above the diagonal, rows still sum to one, unseen keys get no gradient
pc = probs_c.numpy()
assert np.all(pc[:, ~causal] == 0.0)
np.testing.assert_allclose(pc.sum(-1), 1.0, atol=1e-12)
assert np.all(unseen_keys_grad == 0.0)
# MultiHeadAttention with identity projections is exactly this computation
assert library_error < 1e-12 and scores_error < 1e-12
assert lib_scores.shape == (B, 1, T, S)
assert heatmap.axes  # the figure was drawn
print("all checks passed")
