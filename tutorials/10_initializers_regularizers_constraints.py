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
# # 10 · Initializers, regularizers and constraints in a training loop
#
# Three Keras families decide what a weight *starts* as, what it *costs*, and where it is
# *allowed* to go:
#
# | family | when it acts | how |
# |---|---|---|
# | initializer | once, when the layer is built | draws the starting values |
# | regularizer | every step, in the loss | adds a penalty $R(W)$ to the loss: its gradient flows through `backward` |
# | constraint | every step, after the update | projects the new weights back into a set (never in the forward pass) |
#
# All three accept a string (`"glorot_uniform"`, `"l2"`, `"max_norm"`), a config dict, an
# instance or a plain callable, like Keras. We train small models with an explicit loop so
# every one of them is visible, and check each against an independent answer (closed-form
# ridge regression, the optimality conditions of non-negative least squares).

# %%
import inspect
import math
import os

import numpy as np
from matplotlib.figure import Figure  # a figure with no window: needs no display

import tinygrad_mha as tm
from tinygrad_mha.layers import Dense
from tinygrad_mha.plotting import show

SMALL = os.environ.get("TINYGRAD_MHA_SMALL", "0") not in ("", "0")
print("small mode" if SMALL else "full size")
tm.set_seed(0)
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Initializers: keep the signal alive
#
# A layer $y = W x$ with $n_{in}$ inputs of variance $\sigma_x^2$ and weights of variance
# $\sigma_W^2$ gives outputs of variance $n_{in}\,\sigma_W^2\,\sigma_x^2$. Stack twenty such
# layers and the signal is multiplied by $(n_{in}\sigma_W^2)^{20}$: it explodes or vanishes
# unless $\sigma_W^2 \approx 1/n_{in}$. The backward pass multiplies by $W^\top$ and wants
# $\sigma_W^2 \approx 1/n_{out}$. Glorot and Bengio (2010) compromise:
#
# $$\mathrm{Var}(W) = \frac{2}{n_{in} + n_{out}}, \qquad
# \text{glorot\_uniform: } W \sim U\!\left(-\sqrt{\tfrac{6}{n_{in}+n_{out}}},\,
#   \sqrt{\tfrac{6}{n_{in}+n_{out}}}\right)$$
#
# (a uniform on $[-a, a]$ has variance $a^2/3$). Every variance-scaling initializer in
# `tinygrad_mha.initializers` is the same few lines with different settings:

# %%
print(inspect.getsource(tm.initializers.VarianceScaling._generate))
init = tm.initializers.get("glorot_uniform")
big = init((400, 600), dtype="float64")
print(f"glorot_uniform (400, 600): variance {big.var():.3e}, formula {2 / (400 + 600):.3e}, "
      f"max |w| {np.abs(big).max():.4f} <= limit {math.sqrt(6 / 1000):.4f}")

# %% [markdown]
# An identifier may take any of four forms; `get` turns each into an initializer (a plain
# function `fn(shape, dtype) -> array` is used as it is):

# %%
forms = ["glorot_uniform", {"class_name": "GlorotUniform", "config": {"seed": 3}},
         tm.initializers.GlorotUniform(seed=3), lambda shape, dtype: np.zeros(shape, dtype)]
for form in forms:
    print(f"  {type(form).__name__:14s} -> {tm.initializers.get(form)!r}")

# %% [markdown]
# Now twenty `tanh` layers of width 64, three ways to start them. We print the standard
# deviation of the activations after each layer: with weights that are too small the signal
# dies, too large and every `tanh` saturates at $\pm 1$ (whose gradient $1 - \tanh^2$ is 0),
# Glorot keeps it in the useful range (it still shrinks slowly: Glorot's derivation assumes a
# linear activation, and tanh squeezes large values).

# %%
DEPTH, WIDTH = 20, 64
x0 = rng.standard_normal((128, WIDTH))
starts = {"glorot_uniform": "glorot_uniform",
          "normal(0.01)": tm.initializers.RandomNormal(stddev=0.01),
          "normal(1.0)": tm.initializers.RandomNormal(stddev=1.0)}
signal = {}
for label, initializer in starts.items():
    h, stds = tm.Tensor(x0), []
    with tm.no_grad():
        for _ in range(DEPTH):
            h = Dense(WIDTH, activation="tanh", kernel_initializer=initializer, dtype="float64")(h)
            stds.append(float(h.numpy().std()))
    signal[label] = stds
    saturated = float(np.mean(np.abs(h.numpy()) > 0.99))
    print(f"{label:15s} std after layers 1, 5, 20: {stds[0]:.2e} {stds[4]:.2e} {stds[-1]:.2e}"
          f"   saturated units at the end: {saturated:.0%}")

# %% [markdown]
# Multi-head attention kernels have three axes, `(features, heads, key_dim)`. Which axes are
# "in" and which are "out"? The layer knows from its einsum equation and passes
# $n_{in} = $ features and $n_{out} = $ heads $\times$ key_dim to the initializer (Keras 3
# does the same), so the variance is $2 / (F + H\,d)$:

# %%
mha = tm.MultiHeadAttention(num_heads=8, key_dim=32, dtype="float64")
mha.build((1, 4, 256), (1, 4, 256))
q_kernel = mha.query_dense.kernel.numpy()
print(f"query kernel {q_kernel.shape}: variance {q_kernel.var():.3e}, "
      f"formula 2/(256 + 8*32) = {2 / (256 + 256):.3e}")

# %% [markdown]
# ## 2. Regularizers: a penalty in the loss
#
# `L2(l2)` adds $R(W) = \ell_2 \sum_{ij} W_{ij}^2$ (Keras's convention: no factor 1/2) to the
# loss, so the gradient gains $2\ell_2 W$: "weight decay". The penalty is a scalar `Tensor`
# built from Tensor ops, so `backward` differentiates it like the rest of the loss. A layer
# lists the penalties of its weights in `layer.losses`, recomputed from the current weights
# each time you read it; **your training loop must add them** to the data loss.
#
# The classic example has a closed form. Ridge regression minimises
#
# $$L(w) = \frac{1}{n}\|Xw - y\|^2 + \ell_2\|w\|^2
# \quad\Longrightarrow\quad
# \nabla L = \frac{2}{n}X^\top(Xw - y) + 2\ell_2 w = 0
# \quad\Longrightarrow\quad
# w^\star = \Big(\tfrac{1}{n}X^\top X + \ell_2 I\Big)^{-1} \tfrac{1}{n}X^\top y .$$
#
# A `Dense(1, use_bias=False, kernel_regularizer=L2(l2))` trained by gradient descent on the
# mean squared error must land exactly there.

# %%
N, P, L2_FACTOR = 200, 20, 0.1
X = rng.standard_normal((N, P))
w_true = rng.standard_normal((P, 1))
y = X @ w_true + 0.5 * rng.standard_normal((N, 1))

ridge = Dense(1, use_bias=False, kernel_regularizer=tm.regularizers.L2(L2_FACTOR), dtype="float64")
ridge.build(X.shape)
penalty = ridge.losses[0]
print("layer.losses:", ridge.losses)
print("penalty", penalty.item(),
      " = l2 * sum(w^2) =", L2_FACTOR * float((ridge.kernel.numpy() ** 2).sum()))

# %% [markdown]
# The training loop, written out. Note where each family acts: the regularizer inside the
# loss, the constraint (none here) inside `opt.step()`.

# %%
def train(layer, X, y, steps, learning_rate):
    opt = tm.optimizers.SGD(layer.trainable_weights, learning_rate=learning_rate)
    history = []
    for _ in range(steps):
        pred = layer(X)
        data_loss = tm.losses.mean_squared_error(y, pred)
        loss = data_loss + sum(layer.losses) if layer.losses else data_loss
        opt.zero_grad()
        loss.backward()
        opt.step()            # update, then apply each weight's constraint
        history.append(loss.item())
    return history


ridge_history = train(ridge, X, y, steps=150 if SMALL else 400, learning_rate=0.2)
w_ridge = np.linalg.solve(X.T @ X / N + L2_FACTOR * np.eye(P), X.T @ y / N)
w_ols = np.linalg.lstsq(X, y, rcond=None)[0]
ridge_error = float(np.abs(ridge.kernel.numpy() - w_ridge).max())
print(f"loss {ridge_history[0]:.3f} -> {ridge_history[-1]:.6f}")
print(f"max |trained w - closed-form ridge w| = {ridge_error:.2e}")
print(f"|w|: least squares {np.linalg.norm(w_ols):.3f}, "
      f"ridge {np.linalg.norm(w_ridge):.3f} (shrunk)")

# %% [markdown]
# ## 3. Constraints: a projection after each step
#
# A constraint is not a penalty: it is applied to the *weights themselves* after each
# optimizer update, projecting them back into an allowed set. Gradient descent followed by a
# projection is *projected gradient descent*. Here is where the optimizer does it:

# %%
print(inspect.getsource(tm.optimizers.Optimizer.step))

# %% [markdown]
# `NonNeg()` projects onto $w \ge 0$ (it replaces negative entries by 0). Projected gradient
# descent on least squares then converges to the non-negative least-squares solution, which
# is characterised by the Karush-Kuhn-Tucker conditions, with $g = \nabla L(w)$:
#
# $$w_i \ge 0,\qquad g_i \ge 0,\qquad w_i\, g_i = 0
# \quad\text{(a weight is either at the boundary, pushed against it, or free with zero gradient).}$$
#
# First: the constraint is *not* part of the forward pass. Weights set by hand stay as they
# are until the optimizer steps.

# %%
nonneg = Dense(1, use_bias=False, kernel_constraint=tm.constraints.NonNeg(), dtype="float64")
nonneg.build(X.shape)
nonneg.set_weights([-np.ones((P, 1))])
with tm.no_grad():
    forward_with_negative = nonneg(X[:2]).numpy()
print("forward with w = -1 everywhere (not projected):", forward_with_negative.ravel())
nonneg_history = train(nonneg, X, y, steps=300 if SMALL else 1000, learning_rate=0.2)
w_nn = nonneg.kernel.numpy()
grad_nn = 2 / N * X.T @ (X @ w_nn - y)        # the gradient at the solution, in NumPy
free = w_nn[:, 0] > 1e-10
print(f"{int((~free).sum())} of {P} weights pinned at 0 "
      f"(w_true had {int((w_true < 0).sum())} negative entries)")
print(f"max |g| on free weights {np.abs(grad_nn[free]).max():.2e}, "
      f"min g on pinned weights {grad_nn[~free].min() if (~free).any() else float('nan'):.3f}")

# %% [markdown]
# ## 4. All three on MultiHeadAttention
#
# `MultiHeadAttention` passes `kernel_initializer`, `kernel_regularizer` and
# `kernel_constraint` to each of its four projections. With `MaxNorm(c, axis=0)` every
# column of a kernel, i.e. the weights feeding one `(head, dim)` unit, is rescaled after each
# step to norm at most $c$:
#
# $$W_{:,h,d} \leftarrow W_{:,h,d}\,\frac{\min(\|W_{:,h,d}\|,\, c)}{\|W_{:,h,d}\| + 10^{-7}}.$$
#
# A student layer learns to imitate a fixed random teacher layer (a regression on the
# teacher's outputs), trained with Adam; we record the data loss, the total loss and the
# largest column norm after every step.

# %%
MAX_NORM = 0.8
B, T, F = 16, 6, 8
teacher = tm.MultiHeadAttention(num_heads=2, key_dim=4, dtype="float64")
student = tm.MultiHeadAttention(num_heads=2, key_dim=4, dtype="float64",
                                kernel_initializer=tm.initializers.GlorotUniform(seed=1),
                                kernel_regularizer=tm.regularizers.L2(1e-4),
                                kernel_constraint=tm.constraints.MaxNorm(MAX_NORM, axis=0))
x_train = rng.standard_normal((B * 4, T, F))
with tm.no_grad():
    y_train = teacher(x_train, x_train).numpy()
student(x_train[:1], x_train[:1])      # build
kernels = [w for w in student.weights if w.name.endswith("kernel")]
print("student.losses:", len(student.losses),
      "penalties, one per kernel:", [k.name for k in kernels])


def max_column_norm():
    return max(float(np.sqrt((k.numpy() ** 2).sum(axis=0)).max()) for k in kernels)


print(f"largest column norm at initialisation: {max_column_norm():.3f} (limit {MAX_NORM})")
opt = tm.optimizers.Adam(student.trainable_weights, learning_rate=1e-2)
log = {"data loss": [], "total loss": [], "max column norm": []}
for step in range(60 if SMALL else 400):
    idx = rng.choice(len(x_train), B, replace=False)
    xb = x_train[idx]
    data_loss = tm.losses.mean_squared_error(y_train[idx], student(xb, xb))
    loss = data_loss + sum(student.losses)
    opt.zero_grad()
    loss.backward()
    opt.step()
    log["data loss"].append(data_loss.item())
    log["total loss"].append(loss.item())
    log["max column norm"].append(max_column_norm())
print(f"data loss {log['data loss'][0]:.4f} -> {np.mean(log['data loss'][-10:]):.4f}; "
      f"largest column norm over training {max(log['max column norm']):.4f}")

# %% [markdown]
# Note that the initial norms (about 1.2) exceed the limit: the constraint is not applied at
# initialisation, only after each update, so from the first step on every column norm is at
# most 0.8. The curves: the loss falls while the constraint holds the column norms at or
# under the limit (the largest sits exactly on it: the constraint is active).

# %%
fig = Figure(figsize=(13, 3.6))
ax1, ax2, ax3 = fig.subplots(1, 3)
for label, stds in signal.items():
    ax1.semilogy(range(1, DEPTH + 1), stds, marker="o", ms=3, label=label)
ax1.set(title="activation std per layer (tanh)", xlabel="layer", ylabel="std")
ax1.legend(fontsize=8)
ax2.semilogy(log["data loss"], label="data loss")
ax2.semilogy(log["total loss"], label="data + L2 penalty", alpha=0.7)
ax2.set(title="student MHA training", xlabel="step")
ax2.legend(fontsize=8)
ax3.plot(log["max column norm"])
ax3.axhline(MAX_NORM, color="red", ls="--", lw=0.8, label="MaxNorm limit")
ax3.set(title="largest kernel column norm", xlabel="step", ylim=(0, 1.2))
ax3.legend(fontsize=8)
fig.tight_layout()
show(fig, "init_regularize_constrain")

# %% [markdown]
# ## Check: what this tutorial taught

# %%
# glorot_uniform: the promised variance and bound; the MHA kernel uses fans F and H*d
assert abs(big.var() / (2 / 1000) - 1) < 0.02 and np.abs(big).max() <= math.sqrt(6 / 1000)
assert abs(q_kernel.var() / (2 / 512) - 1) < 0.05
# signal propagation: tiny weights kill the signal, huge ones saturate, Glorot keeps it
assert signal["normal(0.01)"][-1] < 1e-6
assert signal["normal(1.0)"][-1] > 0.9
assert 0.05 < signal["glorot_uniform"][-1] < 0.9
# the L2 penalty is l2 * sum(w^2), and training with it gives the closed-form ridge solution
np.testing.assert_allclose(ridge.losses[0].item(),
                           L2_FACTOR * float((ridge.kernel.numpy() ** 2).sum()), rtol=1e-12)
assert ridge_error < 1e-8
assert np.linalg.norm(w_ridge) < np.linalg.norm(w_ols)
# the constraint is applied by the optimizer, not the forward pass
np.testing.assert_allclose(forward_with_negative, -X[:2].sum(axis=1, keepdims=True), rtol=1e-12)
# projected gradient descent reached the non-negative least-squares optimum (KKT conditions)
assert np.all(w_nn >= 0)
assert (~free).any() and free.any()
assert np.abs(grad_nn[free]).max() < 1e-6
assert grad_nn[~free].min() > -1e-6
# MHA: one penalty per kernel, the loss went down, the max-norm held after every step
assert len(student.losses) == 4
assert np.mean(log["data loss"][-10:]) < 0.5 * np.mean(log["data loss"][:5])
assert max(log["max column norm"]) <= MAX_NORM * (1 + 1e-9)
assert len(fig.axes) == 3  # the figure was drawn
print("all checks passed")
