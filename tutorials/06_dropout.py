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
# # 06 · Dropout: a random mask, and its gradient
#
# Dropout zeroes a random part of a layer's activations during training, so that the
# network cannot rely on any single one. MultiHeadAttention applies it to the attention
# probabilities. It is the only random op in the package, which raises questions the other
# ops never did: what is its gradient, can a gradient check work, how do we reproduce a run?
#
# 1. inverted dropout: the mask, the $1/(1-p)$ scale, and its expectation;
# 2. `tm.dropout`: seeds, `training=False`, and the source;
# 3. the gradient: the same mask, the same scale;
# 4. gradient-checking a random function;
# 5. dropout inside MultiHeadAttention.
#
# Exercise: `dropout_backward`.

# %%
import inspect
import os

import numpy as np

import tinygrad_mha as tm
from tinygrad_mha.ops import nn

SMALL = os.environ.get("TINYGRAD_MHA_SMALL", "0") not in ("", "0")
rng = np.random.default_rng(0)
print("small mode" if SMALL else "full size")

# %% [markdown]
# ## 1. Inverted dropout
#
# With drop probability $p$ (the `rate`), draw an independent mask
# $m_i \sim \text{Bernoulli}(1-p)$ (1 = keep) and set
#
# $$y_i = \frac{m_i\, x_i}{1 - p}.$$
#
# The scale $1/(1-p)$ makes the expectation unchanged,
# $\mathbb{E}[y_i] = \frac{(1-p)\, x_i}{1-p} = x_i$, so at inference time dropout is simply
# switched off: no rescaling of the weights is needed (hence "inverted" dropout, the form
# Keras and PyTorch use). The price is noise: $\operatorname{Var}[y_i] = x_i^2\, \frac{p}{1-p}$.

# %%
p = 0.3
n = 10_000 if SMALL else 1_000_000
x = tm.Tensor(np.full(n, 2.0))
y = tm.dropout(x, p, seed=0)
kept = y.numpy() != 0
se = np.sqrt(p * (1 - p) / n)  # the standard error of a kept fraction
print(f"kept fraction {kept.mean():.4f} (expected {1 - p}, standard error {se:.4f})")
print(f"kept values are x / (1 - p) = {np.unique(y.numpy()[kept])}; "
      f"mean of y = {y.numpy().mean():.4f} (x = 2)")
print(f"variance of y = {y.numpy().var():.4f}, predicted x^2 p / (1 - p) = {4 * p / (1 - p):.4f}")

# %% [markdown]
# A picture of the masks: `tm.dropout` applied to a tensor of ones, for three rates. Dark
# cells were dropped; the others hold $1/(1-p)$, brighter as $p$ grows, so the mean stays
# near 1.

# %%
from tinygrad_mha import plotting

masks_figure = plotting.dropout_masks((6, 16), rates=(0.1, 0.3, 0.7), seed=0)
plotting.show(masks_figure, "dropout_masks")

# %% [markdown]
# ## 2. `tm.dropout`
#
# `tm.dropout(x, rate, training=True, seed=None)`:
#
# * `seed` an int: the same int gives the same mask, every time (what gradient checks need);
# * `seed=None`: draw from the device's shared generator, which `tm.set_seed` resets (for
#   reproducible training runs);
# * `training=False` or `rate=0`: returns `x` itself, untouched.
#
# The source is short. The mask is a uniform draw compared with the rate, and the output is
# an ordinary multiplication of `x` by a *constant* tensor of `0` and `1/(1-p)`:

# %%
print(inspect.getsource(nn.dropout))
xs = tm.Tensor(rng.standard_normal((2, 5)))
same = np.array_equal(tm.dropout(xs, 0.5, seed=7).numpy(), tm.dropout(xs, 0.5, seed=7).numpy())
print("same seed, same mask:", same)
print("training=False returns x itself:", tm.dropout(xs, 0.5, training=False) is xs)
tm.set_seed(123)
first = tm.dropout(xs, 0.5).numpy()
tm.set_seed(123)
print("tm.set_seed(123) replays the shared stream:",
      np.array_equal(first, tm.dropout(xs, 0.5).numpy()))

# %% [markdown]
# ## 3. The gradient
#
# For a **fixed** mask, $y = x \odot s$ with the constant $s = m / (1-p)$, a diagonal linear
# map. Its Jacobian is $\operatorname{diag}(s)$, so
#
# $$\bar x = \bar y \odot \frac{m}{1 - p}:$$
#
# the same mask and the same scale as the forward pass. A dropped unit gets no gradient,
# which is the point: in this step, the network is trained as if it did not exist.
#
# Since `dropout` is built from `Mul` with a constant, the engine needs no dropout-specific
# backward at all: `Mul.backward` returns `g * b` for `x` and nothing for the constant.
# The exercise `dropout_backward` asks you to write the rule down yourself.

# %%
xg = tm.Tensor(rng.standard_normal((3, 4)), requires_grad=True)
yg = tm.dropout(xg, 0.5, seed=1)
print("recorded node:", yg._ctx,
      "| inputs requiring grad:", [t.requires_grad for t in yg._ctx.inputs])
g = rng.standard_normal((3, 4))
yg.backward(g)
mask = yg.numpy() != 0
print("x.grad:\n", np.round(xg.grad, 4), "\ng * mask / (1 - p):\n", np.round(g * mask / 0.5, 4))

# %% [markdown]
# ## 4. Gradient-checking a random function
#
# A finite difference evaluates the function again at $x \pm \varepsilon$. If each
# evaluation draws a *new* mask, the two evaluations differ by far more than $\varepsilon$
# times a derivative, and the "numeric gradient" is noise. So a random op is checked with
# its randomness frozen: an integer seed. (The op catalog checks `dropout(a, 0.4, seed=7)`.)

# %%
xc = tm.Tensor(rng.standard_normal((3, 4)), requires_grad=True)
print("fixed seed :", tm.gradcheck(lambda t: tm.dropout(t, 0.4, seed=7), (xc,)))
print("fresh masks:", tm.gradcheck(lambda t: tm.dropout(t, 0.4), (xc,), raise_exception=False))

# %% [markdown]
# ## 5. Dropout inside MultiHeadAttention
#
# `tm.MultiHeadAttention(..., dropout=rate)` drops attention *probabilities* after the
# softmax, only when called with `training=True`. Each query then mixes a random subset of
# the values, scaled up. The returned scores are the probabilities *before* dropout (as in
# Keras). A layer with a `seed` owns its generator, which advances on every call, so two
# training calls differ while the whole run stays reproducible.
#
# Because the output is linear in the dropped probabilities, the average of many training
# outputs approaches the inference output: dropout is unbiased, as section 1 promised.

# %%
layer = tm.MultiHeadAttention(num_heads=2, key_dim=4, dropout=0.5, seed=3, dtype="float64")
seq = rng.standard_normal((2, 5, 8))
inference = layer(seq, seq).numpy()                       # training=None: no dropout
one, two = (layer(seq, seq, training=True).numpy() for _ in range(2))
print("two training calls differ:", not np.allclose(one, two))
print("training=False equals inference:",
      np.array_equal(layer(seq, seq, training=False).numpy(), inference))
draws = 100 if SMALL else 2000
runs = np.stack([layer(seq, seq, training=True).numpy() for _ in range(draws)])
error = np.abs(runs.mean(axis=0) - inference).mean()
noise = runs.std(axis=0).mean() / np.sqrt(draws)
print(f"mean |average of {draws} training outputs - inference output| = {error:.4f}"
      f" (standard error of the average ~ {noise:.4f})")

# %% [markdown]
# ## Check: what this tutorial taught
#
# The statistics of the mask, the identity at inference, reproducibility by seed, the
# gradient rule (against NumPy and finite differences), and the unbiasedness in attention.

# %%
# the mask: kept fraction within 5 standard errors, kept values scaled by 1/(1-p)
assert abs(kept.mean() - (1 - p)) < 5 * se
np.testing.assert_allclose(y.numpy()[kept], 2.0 / (1 - p))
assert np.all(y.numpy()[~kept] == 0)
# inference and rate 0 are the identity; seeds reproduce masks
assert tm.dropout(xs, 0.5, training=False) is xs and tm.dropout(xs, 0.0) is xs
assert same
# the gradient: the same mask and scale, also against finite differences
np.testing.assert_allclose(xg.grad, g * mask / 0.5, rtol=1e-12)
for rate in (0.1, 0.5, 0.9):
    assert tm.gradcheck(lambda t, rate=rate: tm.dropout(t, rate, seed=11),
                        (tm.Tensor(rng.standard_normal((4, 3)), requires_grad=True),))
assert not tm.gradcheck(lambda t: tm.dropout(t, 0.4), (xc,), raise_exception=False)
# attention: dropout is off at inference, on in training, and unbiased on average
assert not np.allclose(one, two)
assert error < 4 * noise
print("06: all checks passed")
