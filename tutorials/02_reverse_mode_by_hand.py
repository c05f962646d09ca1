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
# # 02 · Reverse mode by hand, then by the engine
#
# Reverse-mode automatic differentiation is the chain rule, applied in a particular order:
# from the output back to the inputs, one operation at a time, each operation knowing only
# its own local derivative. In this tutorial we do exactly that with pencil-and-paper
# formulas (in NumPy), and then check that tinygrad_mha's engine computes the same numbers:
#
# 1. a scalar chain, $L = (\sigma(a x + b) - t)^2$, written as a table of forward values
#    and backward *adjoints*;
# 2. the same chain through the engine, looking at every intermediate gradient;
# 3. why "reverse": one backward pass gives the derivative with respect to *every* input;
# 4. a vector example, one dense layer with tanh and a mean squared error, by hand in
#    matrix form, against the engine.
#
# Exercises that go with it: `sigmoid_backward` and `tanh_backward`
# (`python -m tinygrad_mha.exercises init my_exercises` writes the stubs; then, inside
# `my_exercises`, `python -m tinygrad_mha.exercises check sigmoid_backward`).

# %%
import inspect
import os

import numpy as np

import tinygrad_mha as tm
from tinygrad_mha.ops import elementwise

SMALL = os.environ.get("TINYGRAD_MHA_SMALL", "0") not in ("", "0")
print("small mode" if SMALL else "full size")

# %% [markdown]
# ## 1. A scalar chain, by hand
#
# Break $L = (\sigma(a x + b) - t)^2$ into primitive steps, one operation each:
#
# | step | forward | local derivative |
# |---|---|---|
# | 1 | $u = a \cdot x$ | $\partial u/\partial a = x,\ \partial u/\partial x = a$ |
# | 2 | $v = u + b$ | $\partial v/\partial u = 1,\ \partial v/\partial b = 1$ |
# | 3 | $s = \sigma(v) = 1/(1+e^{-v})$ | $\partial s/\partial v = s(1-s)$ |
# | 4 | $e = s - t$ | $\partial e/\partial s = 1$ |
# | 5 | $L = e^2$ | $\partial L/\partial e = 2e$ |
#
# Write $\bar{q} = \partial L / \partial q$ (the **adjoint** of $q$). The chain rule says the
# adjoint of a step's input is the adjoint of its output times the local derivative, so we
# start from $\bar{L} = 1$ and walk the table *upwards*:
#
# $$\bar e = 2e,\quad \bar s = \bar e,\quad \bar v = \bar s\, s(1-s),\quad
#   \bar u = \bar v,\quad \bar b = \bar v,\quad \bar a = \bar u\, x,\quad \bar x = \bar u\, a.$$
#
# Every step needs only its own local derivative and values saved from the forward pass
# ($x$, $a$, $s$, $e$). That is the whole idea.

# %%
a_, x_, b_, t_ = 0.8, 1.5, -0.3, 1.0

# forward, keeping every intermediate value
u = a_ * x_
v = u + b_
s = 1.0 / (1.0 + np.exp(-v))
e = s - t_
L = e ** 2

# backward, from the output to the inputs
L_bar = 1.0
e_bar = L_bar * 2 * e
s_bar = e_bar * 1.0
v_bar = s_bar * s * (1 - s)
u_bar = v_bar * 1.0
b_bar = v_bar * 1.0
a_bar = u_bar * x_
x_bar = u_bar * a_

print(f"{'quantity':>8} {'forward value':>14} {'adjoint dL/dq':>14}")
for name, value, adj in [("a", a_, a_bar), ("x", x_, x_bar), ("b", b_, b_bar), ("u", u, u_bar),
                         ("v", v, v_bar), ("s", s, s_bar), ("e", e, e_bar), ("L", L, L_bar)]:
    print(f"{name:>8} {value:14.8f} {adj:14.8f}")

# %% [markdown]
# ## 2. The same chain through the engine
#
# Now the engine. `retain_grad()` asks it to also keep the adjoints of the intermediate
# tensors, so we can compare every row of the table, not only the leaves.

# %%
a = tm.Tensor(a_, requires_grad=True)
x = tm.Tensor(x_, requires_grad=True)
b = tm.Tensor(b_, requires_grad=True)
tu = (a * x).retain_grad()
tv = (tu + b).retain_grad()
ts = tv.sigmoid().retain_grad()
te = (ts - t_).retain_grad()
tL = te ** 2
tL.backward()

for name, t, adj in [("a", a, a_bar), ("x", x, x_bar), ("b", b, b_bar), ("u", tu, u_bar),
                     ("v", tv, v_bar), ("s", ts, s_bar), ("e", te, e_bar)]:
    print(f"d L / d {name}: engine {float(t.grad):+.12f}   by hand {adj:+.12f}")

# %% [markdown]
# Where did the engine get its local derivatives? Each op states its own, next to its
# forward, in `tinygrad_mha/ops/elementwise.py`. Here are the ones this chain used. Note
# that `backward` receives the adjoint of the output (`g`) and *returns* the adjoints of
# the inputs: it never writes to `.grad` itself, the engine does the bookkeeping.

# %%
for op in (elementwise.Mul, elementwise.Add, elementwise.Sigmoid, elementwise.Sub):
    print(inspect.getsource(op))

# %% [markdown]
# `Sigmoid.backward` uses the saved *output* $y = \sigma(v)$, exactly like our table
# ($\partial s / \partial v = s(1-s)$), so it never has to recompute an exponential.
# That is also why its forward is written as $e^{-\log(1+e^{-v})}$: it never overflows.
# The exercise `sigmoid_backward` asks you to write this derivative yourself, finite for
# $|x| = 800$ as well.

# %% [markdown]
# ## 3. Why reverse?
#
# For $f: \mathbb{R}^n \to \mathbb{R}$ (a loss of $n$ parameters), the chain rule can be
# applied in two orders.
#
# * **Forward mode** pushes a *tangent* $\dot x$ from the inputs to the output, giving one
#   directional derivative $\nabla f \cdot \dot x$ per pass: $n$ passes for the full
#   gradient.
# * **Reverse mode** pushes the adjoint $\bar L = 1$ from the output back, and every input's
#   adjoint falls out of **one** pass, at a cost of a small constant times the forward pass.
#
# With a million weights, that is the difference between one pass and a million. Below,
# a loss of $n$ inputs: the engine gives all $n$ partials with one `backward()`, and
# we count how many function evaluations finite differences (a stand-in for forward mode,
# one direction at a time) need for the same.

# %%
n = 50 if SMALL else 400
rng = np.random.default_rng(0)
p0 = rng.standard_normal(n)
A = rng.standard_normal((n, n)) / np.sqrt(n)


def f_numpy(p):
    return float(np.sum(np.tanh(A @ p) ** 2))


p = tm.Tensor(p0, requires_grad=True)
((tm.Tensor(A) @ p).tanh() ** 2).sum().backward()   # one forward, one backward

evaluations, eps = 0, 1e-6
numeric = np.zeros(n)
for i in range(n):   # one direction per input, two evaluations each
    step = np.zeros(n)
    step[i] = eps
    numeric[i] = (f_numpy(p0 + step) - f_numpy(p0 - step)) / (2 * eps)
    evaluations += 2
print(f"reverse mode: 1 backward pass for {n} partials; "
      f"finite differences: {evaluations} evaluations")
print("largest difference between the two:", np.abs(p.grad - numeric).max())

# %% [markdown]
# ## 4. A dense layer, by hand in matrix form
#
# Take a batch $X \in \mathbb{R}^{N\times F}$, weights $W \in \mathbb{R}^{F\times K}$, a
# bias $b \in \mathbb{R}^{K}$ and targets $Y$:
#
# $$Z = XW + b, \qquad H = \tanh(Z), \qquad L = \frac{1}{NK}\sum_{n,k} (H_{nk} - Y_{nk})^2.$$
#
# The adjoints follow the same recipe, now with matrices. The only new facts are the
# derivative of a matrix product (for $Z = XW$: $\bar W = X^\top \bar Z$ and
# $\bar X = \bar Z W^\top$, which you can check entry by entry from
# $Z_{nk} = \sum_f X_{nf} W_{fk}$), and that a bias *added to every row* collects the
# adjoints of every row: $\bar b = \sum_n \bar Z_{n\cdot}$ (tutorial 03 is about this).
#
# $$\bar H = \frac{2}{NK}(H - Y),\quad \bar Z = \bar H \odot (1 - H^2),\quad
#   \bar W = X^\top \bar Z,\quad \bar b = \textstyle\sum_n \bar Z_{n\cdot},\quad
#   \bar X = \bar Z W^\top.$$

# %%
N, F, K = (4, 3, 2) if SMALL else (32, 16, 8)
Xa, Wa, ba, Ya = (rng.standard_normal(s) for s in ((N, F), (F, K), (K,), (N, K)))

# by hand
Za = Xa @ Wa + ba
Ha = np.tanh(Za)
H_bar = 2.0 / (N * K) * (Ha - Ya)
Z_bar = H_bar * (1 - Ha ** 2)
W_bar, b_bar_vec, X_bar = Xa.T @ Z_bar, Z_bar.sum(axis=0), Z_bar @ Wa.T

# by the engine
X, W, bias = (tm.Tensor(arr, requires_grad=True) for arr in (Xa, Wa, ba))
loss = (((X @ W + bias).tanh() - tm.Tensor(Ya)) ** 2).mean()
loss.backward()
for name, engine, hand in [("W", W.grad, W_bar), ("b", bias.grad, b_bar_vec), ("X", X.grad, X_bar)]:
    print(f"d L / d {name}: shape {engine.shape}, "
          f"largest |engine - by hand| = {np.abs(engine - hand).max():.2e}")

# %% [markdown]
# The matrix-product rule is `MatMul` in `tinygrad_mha/ops/linalg.py`; compare it with
# $\bar W = X^\top \bar Z$ and $\bar X = \bar Z W^\top$:

# %%
print(inspect.getsource(tm.ops.linalg.MatMul))

# %% [markdown]
# ## Check: what this tutorial taught
#
# The hand-derived adjoints equal the engine's, and both equal central finite differences
# (computed here, independently, in NumPy).

# %%
def central(f, x0, eps=1e-6):
    x0 = np.array(x0, dtype=float)
    out = np.zeros_like(x0)
    for i in np.ndindex(x0.shape):
        d = np.zeros_like(x0)
        d[i] = eps
        out[i] = (f(x0 + d) - f(x0 - d)) / (2 * eps)
    return out


def chain(a, x, b):
    return (1.0 / (1.0 + np.exp(-(a * x + b))) - t_) ** 2


for name, hand, engine, fd in [
        ("a", a_bar, a.grad, central(lambda q: chain(q, x_, b_), a_)),
        ("x", x_bar, x.grad, central(lambda q: chain(a_, q, b_), x_)),
        ("b", b_bar, b.grad, central(lambda q: chain(a_, x_, q), b_))]:
    np.testing.assert_allclose(float(engine), hand, rtol=1e-12, err_msg=name)
    np.testing.assert_allclose(hand, fd, rtol=1e-6, err_msg=name)
np.testing.assert_allclose(float(tv.grad), v_bar, rtol=1e-12)
np.testing.assert_allclose(float(ts.grad), s_bar, rtol=1e-12)

np.testing.assert_allclose(p.grad, numeric, atol=1e-7)


def dense_loss(Wq):
    return float(np.mean((np.tanh(Xa @ Wq + ba) - Ya) ** 2))


np.testing.assert_allclose(W.grad, W_bar, rtol=1e-10)
np.testing.assert_allclose(bias.grad, b_bar_vec, rtol=1e-10)
np.testing.assert_allclose(X.grad, X_bar, rtol=1e-10)
np.testing.assert_allclose(W_bar, central(dense_loss, Wa), atol=1e-8)
print("02: all checks passed")
