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
# # 03 · Broadcasting, and its gradient: `sum_to`
#
# `x + b` with `x` of shape (32, 10) and `b` of shape (10,) adds the bias to every row.
# NumPy calls this **broadcasting**, and every layer relies on it. Its gradient is the one
# piece of bookkeeping that every binary op needs, and tinygrad_mha does it in exactly one
# place. This tutorial covers:
#
# 1. NumPy's broadcasting rules;
# 2. why the gradient of a broadcast operand is a *sum* over the copies (`sum_to`);
# 3. `broadcast_to` and `sum_to` as adjoints of each other;
# 4. where the engine undoes broadcasting, so that each op can ignore it;
# 5. matmul with broadcast batch axes, and the bias and scale of a layer norm.
#
# Exercises: `sum_to`, `matmul_backward` and `layernorm_backward`.

# %%
import inspect
import os

import numpy as np

import tinygrad_mha as tm

SMALL = os.environ.get("TINYGRAD_MHA_SMALL", "0") not in ("", "0")
rng = np.random.default_rng(0)
print("small mode" if SMALL else "full size")

# %% [markdown]
# ## 1. The rules
#
# To combine arrays of shapes $s$ and $t$, NumPy lines the shapes up **from the right**.
# Missing leading axes count as size 1; then, axis by axis, the sizes must be equal or one
# of them must be 1, and a size-1 axis is *stretched* (repeated) to the other size.
#
# | shapes | result | what happens |
# |---|---|---|
# | (3, 4) and (4,) | (3, 4) | (4,) becomes (1, 4), then repeats 3 times |
# | (3, 1) and (1, 4) | (3, 4) | both stretch: an outer sum |
# | (2, 3, 4) and () | (2, 3, 4) | a scalar goes everywhere |
# | (2, 1, 3, 4) and (3, 4, 2) for `@` | (2, 3, 3, 2) | matmul broadcasts the *batch* axes only |
# | (3, 4) and (3,) | error | lined up from the right, 4 and 3 clash |

# %%
for s, t in [((3, 4), (4,)), ((3, 1), (1, 4)), ((2, 3, 4), ()), ((3, 4), (3,))]:
    try:
        print(f"{str(s):>10} + {str(t):<7} -> {np.broadcast_shapes(s, t)}")
    except ValueError as err:
        print(f"{str(s):>10} + {str(t):<7} -> error: {err}")

# %% [markdown]
# Broadcasting never copies memory in NumPy: `np.broadcast_to` returns a *view* whose
# stretched axes have stride 0, so every "copy" is the same number read again.

# %%
b = np.arange(4.0)
view = np.broadcast_to(b, (3, 4))
print(view, "\nstrides:", view.strides, "(0 along the stretched axis)")

# %% [markdown]
# A picture of `a + b` with shapes (3, 1) and (4,): `b` first gains a leading axis, (1, 4),
# then both stretch to (3, 4). Hatched cells are the copies (in NumPy, the same number read
# again); section 2 is about the gradient flowing back from each copy to its entry.

# %%
from tinygrad_mha import plotting

broadcast_figure = plotting.broadcasting_diagram((3, 1), (4,))
plotting.show(broadcast_figure, "broadcasting")

# %% [markdown]
# ## 2. The gradient of a broadcast operand is a sum
#
# Take $y = x + b$ with $x \in \mathbb{R}^{N\times K}$ and $b \in \mathbb{R}^{K}$, i.e.
# $y_{nk} = x_{nk} + b_k$. Each $b_k$ appears in $N$ outputs, so by the chain rule its
# adjoint collects all of them:
#
# $$\bar b_k = \sum_n \frac{\partial L}{\partial y_{nk}} \frac{\partial y_{nk}}{\partial b_k}
#           = \sum_n \bar y_{nk}.$$
#
# In general: **if an input was stretched along some axes, its gradient is the upstream
# gradient summed over those axes** (and reshaped to the input's shape). The same is true
# for any op, not only `+`: for $y = x \odot s$ with a broadcast scale $s$, first compute
# the gradient as if $s$ had $y$'s shape ($\bar y \odot x$), then sum it down.

# %%
x = tm.Tensor(rng.standard_normal((3, 4)), requires_grad=True)
bias = tm.Tensor(rng.standard_normal(4), requires_grad=True)
scale = tm.Tensor(rng.standard_normal((3, 1)), requires_grad=True)
g = rng.standard_normal((3, 4))
((x + bias) * scale).backward(g)
print("bias.grad  :", bias.grad, "\nby hand    :", (g * scale.data).sum(axis=0))
print("scale.grad :", scale.grad.ravel(), "\nby hand    :", (g * (x.data + bias.data)).sum(axis=1))

# %% [markdown]
# ## 3. `broadcast_to` and `sum_to` are adjoint
#
# Call $B$ the linear map "broadcast from shape $s$ to shape $t$" and $S$ the map "sum
# from $t$ down to $s$". For any $x$ of shape $s$ and $g$ of shape $t$,
#
# $$\langle B x,\ g \rangle = \sum_{\text{all } t\text{-positions}} x_{[\text{its source}]}\, g
#   = \sum_{s\text{-positions}} x \cdot (\text{sum of } g \text{ over its copies})
#   = \langle x,\ S g \rangle,$$
#
# i.e. $S = B^\top$. The gradient of a linear map is its transpose, so the gradient of
# broadcasting is summing, and (less obviously) the gradient of summing is broadcasting.
# Here is the identity on random arrays, with `tm.ops.sum_to` doing the sum:

# %%
for small, big in [((4,), (3, 4)), ((3, 1), (2, 3, 4)), ((), (2, 3)), ((1, 4), (5, 3, 4))]:
    xs, gb = rng.standard_normal(small), rng.standard_normal(big)
    lhs = np.sum(np.broadcast_to(xs, big) * gb)
    rhs = np.sum(xs * tm.ops.sum_to(tm.Tensor(gb), small).numpy())
    print(f"{str(small):>7} -> {str(big):<10}  <Bx, g> = {lhs:+.10f}   <x, Sg> = {rhs:+.10f}")

# %% [markdown]
# `sum_to` itself: sum away the leading axes that broadcasting added, then every axis
# where the small shape has a 1 and the big one does not (keeping it as a size-1 axis).
# The exercise `sum_to` asks you to write it; here is the engine's:

# %%
print(inspect.getsource(tm.ops.reduce.SumTo))

# %% [markdown]
# ## 4. One place in the engine
#
# Look back at `Mul.backward` from tutorial 02: it returns `g * b` and `g * a`, of the
# *output's* shape, with no thought for broadcasting. The engine fixes the shapes after
# every op's backward, in one helper (habit 3 of STYLE.md: "undo broadcasting in one
# place"):

# %%
print(inspect.getsource(tm.tensor._sum_to_shape))
print("...called for every gradient that _backprop hands on, in:")
print(inspect.getsource(tm.tensor._fit))

# %% [markdown]
# Since `sum_to` is itself an op (`SumTo`, whose backward is `broadcast_to`), the fix is
# recorded like any other op when `create_graph=True`, and second derivatives through
# broadcasting come for free.

# %% [markdown]
# ## 5. Matmul's batch axes, and the parameters of a layer norm
#
# `a @ b` broadcasts all axes except the last two. With `a` of shape (2, 1, 3, 4) and `b`
# of shape (3, 4, 2), the product has shape (2, 3, 3, 2): the batch axes (2, 1) and (3,)
# broadcast to (2, 3). `MatMul.backward` returns $\bar C B^\top$ and $A^\top \bar C$ with
# the full batch shape (2, 3); the engine then sums `a`'s gradient over the axis of size 3
# that `a` only had by stretching, and `b`'s over the leading axis of size 2 it lacked.

# %%
A = tm.Tensor(rng.standard_normal((2, 1, 3, 4)), requires_grad=True)
B = tm.Tensor(rng.standard_normal((3, 4, 2)), requires_grad=True)
G = rng.standard_normal((2, 3, 3, 2))
(A @ B).backward(G)
full_a = G @ np.swapaxes(B.data, -1, -2)            # shape (2, 3, 3, 4)
full_b = np.swapaxes(A.data, -1, -2) @ G             # shape (2, 3, 4, 2)
print("A.grad", A.grad.shape, "= full", full_a.shape, "summed over axis 1:",
      np.allclose(A.grad, full_a.sum(axis=1, keepdims=True)))
print("B.grad", B.grad.shape, "= full", full_b.shape, "summed over axis 0:",
      np.allclose(B.grad, full_b.sum(axis=0)))

# %% [markdown]
# A layer normalization $y = \gamma \odot \hat x + \beta$ has $\gamma, \beta$ of shape
# (features,), broadcast over every row of every batch. So their gradients are sums over
# all leading axes: $\bar\beta = \sum_{\text{rows}} \bar y$ and
# $\bar\gamma = \sum_{\text{rows}} \bar y \odot \hat x$. (The exercise `layernorm_backward`
# asks for these and for the harder $\bar x$.)

# %%
n_rows = 4 if SMALL else 64
xn = rng.standard_normal((2, n_rows, 5))
gamma = tm.Tensor(rng.standard_normal(5), requires_grad=True)
beta = tm.Tensor(rng.standard_normal(5), requires_grad=True)
xt = tm.Tensor(xn)
xhat = (xt - xt.mean(axis=-1, keepdims=True)) / (xt.var(axis=-1, keepdims=True) + 1e-3).sqrt()
gy = rng.standard_normal(xn.shape)
(gamma * xhat + beta).backward(gy)
print("beta.grad  == sum of g over rows:", np.allclose(beta.grad, gy.sum(axis=(0, 1))))
print("gamma.grad == sum of g * xhat   :",
      np.allclose(gamma.grad, (gy * xhat.data).sum(axis=(0, 1))))

# %% [markdown]
# ## Check: what this tutorial taught
#
# For many shape pairs: the engine's gradients of a broadcast product equal a `sum_to`
# written independently here with `np.sum`, the adjoint identity holds, and `tm.gradcheck`
# agrees with finite differences.

# %%
def sum_to_numpy(g, shape):
    """An independent sum_to: sum the added leading axes, then the stretched size-1 axes."""
    g = g.sum(axis=tuple(range(g.ndim - len(shape))))
    return g.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1), keepdims=True).reshape(shape)


pairs = [((3, 4), (4,)), ((3, 1), (1, 4)), ((2, 3, 4), ()), ((2, 3, 4), (3, 1)), ((1,), (2, 2))]
for sa, sb in pairs:
    a = tm.Tensor(rng.standard_normal(sa), requires_grad=True)
    c = tm.Tensor(rng.standard_normal(sb), requires_grad=True)
    gout = rng.standard_normal(np.broadcast_shapes(sa, sb))
    (a * c).backward(gout)
    expect_a = gout * np.broadcast_to(c.data, gout.shape)
    expect_c = gout * np.broadcast_to(a.data, gout.shape)
    assert a.grad.shape == sa and c.grad.shape == sb
    np.testing.assert_allclose(a.grad, sum_to_numpy(expect_a, sa), rtol=1e-12)
    np.testing.assert_allclose(c.grad, sum_to_numpy(expect_c, sb), rtol=1e-12)
    # the adjoint identity <B x, g> = <x, S g>
    np.testing.assert_allclose(np.sum(np.broadcast_to(a.data, gout.shape) * gout),
                               np.sum(a.data * tm.ops.sum_to(tm.Tensor(gout), sa).numpy()),
                               rtol=1e-12)
    assert tm.gradcheck(lambda p, q: p * q, (tm.Tensor(a.data, requires_grad=True),
                                             tm.Tensor(c.data, requires_grad=True)))

np.testing.assert_allclose(A.grad, sum_to_numpy(full_a, A.shape), rtol=1e-12)
np.testing.assert_allclose(B.grad, sum_to_numpy(full_b, B.shape), rtol=1e-12)
assert tm.gradcheck(lambda p, q: p @ q,
                    (tm.Tensor(rng.standard_normal((2, 1, 3, 4)), requires_grad=True),
                     tm.Tensor(rng.standard_normal((3, 4, 2)), requires_grad=True)))
np.testing.assert_allclose(beta.grad, gy.sum(axis=(0, 1)), rtol=1e-12)
print("03: all checks passed")
