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
# # 05 · Softmax: its Jacobian, masking, and numerical stability
#
# Softmax turns attention logits into probabilities. It is the one non-linear step of
# scaled dot-product attention, and the place where most attention bugs live: overflowing
# exponentials, NaN rows when every key is masked, gradients that vanish when logits grow.
#
# 1. the definition and the max-shift that makes it stable;
# 2. its Jacobian, $\operatorname{diag}(y) - y y^\top$, and the cheap vector-Jacobian product;
# 3. softmax over several axes at once (2-D attention);
# 4. log-softmax and log-sum-exp;
# 5. masking: exact zeros, and a row with nothing kept;
# 6. saturation, and why attention divides by $\sqrt{d}$.
#
# Exercises: `softmax_backward`, `logsumexp_backward` and `masked_softmax`.

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
# ## 1. Definition and stability
#
# For a vector of logits $x \in \mathbb{R}^n$,
#
# $$y_i = \operatorname{softmax}(x)_i = \frac{e^{x_i}}{\sum_j e^{x_j}},
#   \qquad y_i > 0,\quad \sum_i y_i = 1.$$
#
# Adding a constant to every logit changes nothing, since $e^{x_i + c} = e^c e^{x_i}$ and
# $e^c$ cancels:
#
# $$\operatorname{softmax}(x + c) = \operatorname{softmax}(x).$$
#
# That is the cure for overflow. $e^{x}$ overflows float64 above $x \approx 709$ (float32:
# $\approx 88$), and then the quotient is $\infty / \infty = \text{NaN}$. Subtracting
# $c = \max_j x_j$ first makes every exponent $\le 0$, so every $e^{x_i - c} \in (0, 1]$ and
# the denominator is at least 1.

# %%
def naive_softmax(x):
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


big = np.array([1000.0, 1001.0, 1002.0])
with np.errstate(over="ignore", invalid="ignore"):
    print("naive   :", naive_softmax(big))
print("shifted :", naive_softmax(big - big.max()))
print("tm      :", tm.softmax(tm.Tensor(big)).numpy())
print("float32 :", tm.softmax(tm.Tensor(np.array([100.0, 0.0], dtype=np.float32))).numpy(),
      "(e^100 alone would overflow float32)")

# %% [markdown]
# The engine's softmax, forward and backward (read the masked branch later, in section 5):

# %%
print(inspect.getsource(nn.Softmax))

# %% [markdown]
# ## 2. The Jacobian
#
# Differentiate $y_i = e^{x_i} / S$ with $S = \sum_j e^{x_j}$, using
# $\partial S/\partial x_j = e^{x_j}$:
#
# $$\frac{\partial y_i}{\partial x_j} = \frac{\delta_{ij} e^{x_i} S - e^{x_i} e^{x_j}}{S^2}
#   = y_i(\delta_{ij} - y_j),
# \qquad\text{i.e.}\qquad J = \operatorname{diag}(y) - y y^\top.$$
#
# Every output depends on every input: unlike tanh or sigmoid, the Jacobian is **not
# diagonal**. Let's read it off the engine, one row per backward pass: row $i$ is the
# gradient of $y_i$, i.e. `tm.grad` of $y$ with the one-hot upstream gradient $e_i$.

# %%
n = 5
x0 = rng.standard_normal(n)
x = tm.Tensor(x0, requires_grad=True)
y = tm.softmax(x)
J_engine = np.stack([tm.grad(y, x, grad_outputs=np.eye(n)[i], retain_graph=True)[0].numpy()
                     for i in range(n)])
yv = y.numpy()
J_formula = np.diag(yv) - np.outer(yv, yv)
print("J from the engine:\n", np.round(J_engine, 4))
print("max |engine - (diag(y) - y y^T)| =", np.abs(J_engine - J_formula).max())

# %% [markdown]
# Properties worth knowing, all visible in the matrix:
#
# * $J$ is **symmetric**.
# * $J\mathbf{1} = y - y\,(y^\top \mathbf{1}) = 0$: moving every logit together changes
#   nothing (the shift invariance again), so $J$ is singular with $\mathbf{1}$ in its
#   null space.
# * $J$ is positive semi-definite ($J$ is the covariance matrix of a one-hot sample drawn
#   from $y$), with eigenvalues in $[0, \max_i y_i]$.

# %%
print("symmetric:", np.allclose(J_engine, J_engine.T),
      "| J @ 1 =", np.round(J_engine @ np.ones(n), 15))
print("eigenvalues:", np.round(np.linalg.eigvalsh(J_formula), 6))

# %% [markdown]
# A picture of both: on the left, dividing the logits by a temperature $T$ before the
# softmax (small $T$: nearly one-hot, large $T$: nearly uniform; section 6's $1/\sqrt{d}$ is
# such a division); on the right, the Jacobian above as a heatmap. Positive on the
# diagonal, negative elsewhere, every row summing to zero.

# %%
from tinygrad_mha import plotting

softmax_figure = plotting.softmax_temperature(x0, temperatures=(0.25, 1.0, 4.0))
plotting.show(softmax_figure, "softmax_temperature_jacobian")

# %% [markdown]
# Backward never builds $J$ (that would cost $n^2$ per row of attention logits). It only
# needs the vector-Jacobian product $\bar x = J^\top \bar y = J \bar y$:
#
# $$\bar x_j = \sum_i \bar y_i\, y_i(\delta_{ij} - y_j)
#   = y_j\Big(\bar y_j - \sum_i \bar y_i y_i\Big),
# \qquad \bar x = y \odot \big(\bar y - \langle \bar y, y\rangle\big),$$
#
# $O(n)$ work: one dot product and two elementwise operations. That is the single line of
# `Softmax.backward` above, `y * (g - (g * y).sum(axes, keepdims=True))`, with the sum
# taken along the softmax axes only. (The exercise `softmax_backward` asks for exactly
# this, along any axis.)

# %%
g = rng.standard_normal(n)
vjp = yv * (g - np.dot(g, yv))
y.backward(g)
print("J^T g       :", J_formula.T @ g, "\ny*(g - <g,y>):", vjp, "\nengine      :", x.grad)

# %% [markdown]
# ## 3. Softmax over several axes
#
# `tm.softmax(x, axis=(a, b))` normalizes jointly over all listed axes: it is the softmax
# of those axes flattened into one. 2-D attention needs this: a query pixel attends to all
# (row, column) pairs of the key image at once (tutorial 04, section 5).

# %%
img = rng.standard_normal((2, 3, 4))   # (queries, rows, cols)
joint = tm.softmax(tm.Tensor(img), axis=(1, 2)).numpy()
flat = naive_softmax((img - img.max()).reshape(2, -1)).reshape(img.shape)
print("joint over (1, 2) == softmax of the flattened rows x cols:", np.allclose(joint, flat))
print("sums over (1, 2):", joint.sum(axis=(1, 2)))

# %% [markdown]
# ## 4. Log-softmax and log-sum-exp
#
# $\log \operatorname{softmax}(x)_i = x_i - \operatorname{lse}(x)$ with the *log-sum-exp*
# $\operatorname{lse}(x) = \log\sum_j e^{x_j} = c + \log\sum_j e^{x_j - c}$ (again shifted by
# $c = \max x$). Two facts:
#
# * $\nabla \operatorname{lse}(x) = \operatorname{softmax}(x)$ (differentiate: $e^{x_i}/S$).
#   lse is a smooth maximum, and its gradient is a soft "arg max".
# * Computing $\log$ of a softmax that underflowed to 0 gives $-\infty$; `log_softmax`
#   never forms the softmax, so it stays finite for any finite logits. That is why
#   cross-entropy losses use it.
#
# Its backward, from $\partial(x_i - \operatorname{lse})/\partial x_j = \delta_{ij} - y_j$:
# $\bar x = \bar z - y \sum_i \bar z_i$.

# %%
wide = np.array([0.0, 800.0])
with np.errstate(divide="ignore"):
    print("log(softmax):", np.log(tm.softmax(tm.Tensor(wide)).numpy()), "| log_softmax:",
          tm.log_softmax(tm.Tensor(wide)).numpy())
print(inspect.getsource(nn.LogSoftmax))
xl = tm.Tensor(rng.standard_normal(6), requires_grad=True)
lse = (xl - tm.log_softmax(xl))[0]   # x_i - log softmax_i = lse(x), for any i
lse.backward()
print("grad of lse == softmax:", np.allclose(xl.grad, tm.softmax(tm.Tensor(xl.data)).numpy()))

# %% [markdown]
# ## 5. Masking
#
# Attention must ignore some keys: padding, future positions (causal masks), or positions
# outside a sliding window. `tm.softmax(x, mask=m)` takes a boolean mask broadcastable to
# `x`, **True = keep**, and guarantees:
#
# * masked entries are *exactly* 0, and the kept ones of a slice sum to 1;
# * a slice with nothing kept is all zeros, finite, with zero gradient; never NaN.
#
# The common trick of adding $-\infty$ to masked logits fails on that last point: if a whole
# row is $-\infty$, the max-shift computes $-\infty - (-\infty) = \text{NaN}$. Adding a large
# negative number such as $-10^9$ instead stays finite, but the shift cancels it on an
# all-masked row, which then attends to keys that should be invisible: below, the softmax of
# the masked logits themselves (in float32, where $-10^9$ swallows the logits, a uniform row;
# Keras' fused path does this).
# The engine shifts by the largest *kept* logit, exponentiates only kept entries and
# replaces a zero denominator by 1.

# %%
logits = rng.standard_normal((3, 4))
mask = np.array([[True, True, False, True], [False, False, False, False],
                 [True, False, False, False]])
def shifted_softmax(z):
    return naive_softmax(z - z.max(axis=-1, keepdims=True))


with np.errstate(invalid="ignore"):
    minus_inf = shifted_softmax(logits + np.where(mask, 0.0, -np.inf))
print("adding -inf:\n", np.round(minus_inf, 4))
minus_big = shifted_softmax(logits + np.where(mask, 0.0, -1e9))
print("adding -1e9:\n", np.round(minus_big, 4))
lt = tm.Tensor(logits, requires_grad=True)
probs = tm.softmax(lt, mask=mask)
print("tm.softmax(mask=...):\n", np.round(probs.numpy(), 4))
probs.backward(rng.standard_normal((3, 4)))
print("its gradient:\n", np.round(lt.grad, 4))

# %% [markdown]
# The gradient is zero at every masked entry and on the empty row: masked logits do not
# influence anything, so they must not receive gradient. In the backward formula this is
# automatic, since $y = 0$ there. Building this yourself out of `exp`, `sum` and `tm.where`
# is the exercise `masked_softmax`.

# %% [markdown]
# ## 6. Saturation, and the $1/\sqrt{d}$ of attention
#
# When one logit dominates, $y$ approaches a one-hot vector and
# $J = \operatorname{diag}(y) - yy^\top$ approaches **zero**: the softmax saturates and passes
# almost no gradient back. Multiplying logits by a factor (an inverse *temperature*) shows it:

# %%
base = rng.standard_normal(8)
for scale in (0.5, 1, 4, 16, 64):
    yy = naive_softmax(scale * base - (scale * base).max())
    largest = np.abs(np.diag(yy) - np.outer(yy, yy)).max()
    print(f"logits x {scale:<4}: max prob {yy.max():.4f}, largest Jacobian entry {largest:.2e}")

# %% [markdown]
# In attention the logits are dot products $q \cdot k = \sum_{i=1}^{d} q_i k_i$. With
# independent unit-variance entries their variance is $d$, so they grow like $\sqrt d$ with
# the key dimension and push the softmax into saturation. Dividing by $\sqrt d$ brings the
# variance back to 1, which is why it is "*scaled* dot-product attention":

# %%
samples = 200 if SMALL else 4000
for d in (4, 64, 256):
    qd, kd = rng.standard_normal((samples, d)), rng.standard_normal((samples, d))
    dots = (qd * kd).sum(axis=1)
    print(f"d = {d:>3}: std of q.k = {dots.std():6.2f} (sqrt(d) = {np.sqrt(d):5.2f}),"
          f" std of q.k / sqrt(d) = {(dots / np.sqrt(d)).std():.2f}")

# %% [markdown]
# ## Check: what this tutorial taught
#
# Against NumPy and finite differences: the Jacobian, the VJP formula along any axis,
# stability at huge logits, log-softmax and lse, exact zeros under a mask, and a zero
# gradient for an empty row.

# %%
def softmax_np(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# the Jacobian and its properties
np.testing.assert_allclose(J_engine, J_formula, atol=1e-14)
np.testing.assert_allclose(J_engine @ np.ones(n), 0, atol=1e-14)
np.testing.assert_allclose(x.grad, vjp, rtol=1e-12)
# the VJP along any axis, against finite differences
for shape, axis in [((3, 5), -1), ((3, 5), 0), ((2, 3, 4), 1)]:
    xs = tm.Tensor(rng.standard_normal(shape), requires_grad=True)
    gs = rng.standard_normal(shape)
    tm.softmax(xs, axis=axis).backward(gs)
    ys = softmax_np(xs.data, axis)
    np.testing.assert_allclose(xs.grad, ys * (gs - (gs * ys).sum(axis=axis, keepdims=True)),
                               rtol=1e-10)
    assert tm.gradcheck(lambda t, axis=axis: tm.softmax(t, axis=axis),
                        (tm.Tensor(xs.data, requires_grad=True),))
# stability: huge logits give the same probabilities as small ones
np.testing.assert_allclose(tm.softmax(tm.Tensor(big)).numpy(), softmax_np(big - 1000.0), rtol=1e-12)
assert np.all(np.isfinite(tm.log_softmax(tm.Tensor(np.array([0.0, 800.0, -800.0]))).numpy()))
# joint softmax over axes, and lse's gradient
np.testing.assert_allclose(joint, flat, rtol=1e-12)
np.testing.assert_allclose(xl.grad, softmax_np(xl.data), rtol=1e-12)
# masking: exact zeros, kept entries sum to 1, empty rows are zeros with zero gradient
p = probs.numpy()
assert np.all(p[~mask] == 0.0) and np.all(np.isfinite(p))
np.testing.assert_allclose(p.sum(axis=-1), [1.0, 0.0, 1.0], rtol=1e-12)
np.testing.assert_allclose(p[0, mask[0]], softmax_np(logits[0, mask[0]]), rtol=1e-12)
assert np.all(lt.grad[~mask] == 0.0) and np.all(lt.grad[1] == 0.0)
assert tm.gradcheck(lambda t: tm.softmax(t, mask=mask), (tm.Tensor(logits, requires_grad=True),))
print("05: all checks passed")
