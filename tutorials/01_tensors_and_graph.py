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
# # 01 · Tensors and the computational graph
#
# Automatic differentiation needs two things: values, and a record of how every value was
# computed. In tinygrad_mha the values are `Tensor`s and the record is a graph of `Function`
# nodes that each op adds as it runs. This tutorial looks at both, directly in the real
# source code:
#
# 1. what a `Tensor` holds (an array, a dtype, a device, and a flag);
# 2. how an operation records a node, and when it does not;
# 3. walking the graph from a result back to its leaves, in topological order;
# 4. what `backward()` does with the graph: fill `.grad`, accumulate, free memory;
# 5. why the engine never recurses: a chain of 100,000 operations.
#
# Run it as a script (`python tutorials/01_tensors_and_graph.py`) or as a notebook
# (`make notebooks`). `TINYGRAD_MHA_SMALL=1` shrinks the sizes so it runs in a second.

# %%
import inspect
import os

import numpy as np

import tinygrad_mha as tm
from tinygrad_mha.tensor import Function, Tensor, _graph_nodes

SMALL = os.environ.get("TINYGRAD_MHA_SMALL", "0") not in ("", "0")
print("small mode" if SMALL else "full size")

# %% [markdown]
# ## 1. A Tensor is an array plus a flag
#
# `tm.Tensor(data)` wraps one backend array: a `numpy.ndarray` on the CPU, a `cupy.ndarray`
# on the GPU (tutorial 12). The array lives in `.data`; everything else is read from it.
# Float dtypes are kept as they are (float16/32/64), integer and bool tensors are allowed
# for indices and masks only.

# %%
x = tm.Tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
print(repr(x))
print("data is a", type(x.data).__name__, "| shape", x.shape, "| dtype", x.dtype,
      "| device", x.device)
print("integers stay integers:", tm.Tensor([1, 2]).dtype, "| float32 stays float32:",
      tm.Tensor(np.ones(2, dtype=np.float32)).dtype)

# %% [markdown]
# A Python number in an expression is "weak", as in NumPy 2: it takes the tensor's dtype, so
# `x32 * 0.5` stays float32. That matters for memory and speed on a GPU, where float32 is
# the norm; for gradient *checks* we use float64 (tutorial 07 explains why).

# %%
x32 = tm.Tensor(np.ones(3, dtype=np.float32))
print("float32 * 0.5 ->", (x32 * 0.5).dtype,
      "| float32 * np.float64(0.5) ->", (x32 * np.float64(0.5)).dtype)

# %% [markdown]
# The flag is `requires_grad`. A tensor created with `requires_grad=True` is a **leaf**:
# a quantity we want derivatives with respect to (a weight, or an input we are curious
# about). Everything computed from a leaf also requires a gradient.

# %%
w = tm.Tensor([[0.1], [-0.2], [0.05]], requires_grad=True)
b = tm.Tensor([0.1], requires_grad=True)
print("w is a leaf:", w.is_leaf, "| requires_grad:", w.requires_grad)

# %% [markdown]
# ## 2. Every op records a node
#
# An operation such as `x @ w` is a subclass of `Function` with two methods: `forward` on
# plain arrays and `backward`, which turns the gradient of the output into gradients of the
# inputs. `Function.apply` runs `forward` and, **only if some input requires a gradient and
# grad mode is on**, stores the node in the output's `_ctx` and the inputs in `ctx.inputs`:

# %%
print(inspect.getsource(Function.apply))

# %% [markdown]
# Let's build $y = \tanh(xw + b)$ and a scalar loss $L = \sum_i y_i^2$ and look at what was
# recorded. Naming tensors is optional; it only makes the printout readable.

# %%
x.name, w.name, b.name = "x", "w", "b"
h = x @ w
h.name = "h = x @ w"
z = h + b
z.name = "z = h + b"
y = z.tanh()
y.name = "y = tanh(z)"
sq = y * y
sq.name = "y * y"
loss = sq.sum()
loss.name = "L = sum(y * y)"

print("loss was made by", loss._ctx, "from", [t.name or t.shape for t in loss._ctx.inputs])
print("x was given, not made: x._ctx =", x._ctx, "| x.requires_grad =", x.requires_grad)

# %% [markdown]
# `x` does not require a gradient, so it is an input of the graph but nothing flows back
# into it. Under `tm.no_grad()` (inference) no node is recorded at all and the result is a
# plain constant:

# %%
with tm.no_grad():
    y_inference = (x @ w + b).tanh()
print("under no_grad:", y_inference._ctx, "| requires_grad:", y_inference.requires_grad)

# %% [markdown]
# ## 3. Walking the graph
#
# The graph is a DAG whose edges point from each result to the tensors it was computed
# from. A small iterative walk prints it as a tree (a tensor used twice is printed twice;
# `y * y` uses `y` twice, which is why its gradient will be a *sum* of two contributions).

# %%
def show_graph(root: Tensor) -> list[str]:
    lines, stack = [], [(root, 0)]
    while stack:  # iterative, never recursive: graphs can be very deep
        t, depth = stack.pop()
        op = (f"  <- {type(t._ctx).__name__}" if t._ctx is not None
              else ("  (leaf)" if t.requires_grad else "  (constant)"))
        lines.append("    " * depth + f"{t.name or 'tensor'} {t.shape}{op}")
        if t._ctx is not None:
            stack.extend((parent, depth + 1) for parent in reversed(t._ctx.inputs))
    return lines


print("\n".join(show_graph(loss)))

# %% [markdown]
# Backward must visit a node only after every node that *uses* it: the gradient of `y` is
# complete only when both uses in `y * y` have reported. That is a **topological order**
# of the graph, reversed.
#
# There is a cheap way to get one. Every recorded node gets a sequence number (`seq`) from
# a counter, and an op can only take tensors that already exist, so a node's number is
# always higher than the numbers of the nodes that made its inputs. The engine therefore
# collects the nodes with an explicit stack (no recursion) and sorts them newest first;
# PyTorch's engine uses the same trick.

# %%
print(inspect.getsource(_graph_nodes))
nodes = _graph_nodes([loss])
print("backward visits:", [(type(node).__name__, node.seq) for node in nodes])

# %% [markdown]
# ## 4. `backward()`: gradients into `.grad`
#
# `loss.backward()` seeds $\partial L / \partial L = 1$ and walks the order backwards. Each
# node's `backward` receives the gradient of its output and returns one gradient per input;
# the engine adds them up per tensor (the only place where gradients are summed), undoes
# broadcasting (tutorial 03), and stores the result of every leaf in `.grad`.
#
# For our example the chain rule gives, with $z = xw + b$ and $y = \tanh z$,
#
# $$\frac{\partial L}{\partial y} = 2y, \qquad
#   \frac{\partial L}{\partial z} = 2y\,(1 - y^2), \qquad
#   \frac{\partial L}{\partial w} = x^\top \frac{\partial L}{\partial z}, \qquad
#   \frac{\partial L}{\partial b} = \sum_i \frac{\partial L}{\partial z_i}.$$
#
# (Tutorial 02 walks through such a chain by hand, step by step.)

# %%
loss.backward()
yv = np.tanh(x.data @ w.data + b.data)
dz = 2 * yv * (1 - yv ** 2)
print("w.grad  =", w.grad.ravel(), "\nby hand =", (x.data.T @ dz).ravel())
print("b.grad  =", b.grad, "| by hand =", dz.sum(axis=0))
print("x.grad  =", x.grad, "(x does not require a gradient)")

# %% [markdown]
# Three behaviours to know, all as in PyTorch:
#
# * **The graph is freed.** After `backward()` each node drops what it saved (`release`),
#   so memory does not grow with every training step. A second `backward()` through the
#   same graph raises a clear error, unless the first one passed `retain_graph=True`.
# * **Gradients accumulate.** `.grad` is *added to* on every backward, so that a tensor
#   used in several losses gets the sum. Call `zero_grad()` (or an optimizer's
#   `zero_grad()`) between training steps.
# * **Intermediate tensors keep no `.grad`** unless they ask with `retain_grad()`.

# %%
print("after backward, the loss node's inputs are", loss._ctx.inputs)
try:
    loss.backward()
except RuntimeError as err:
    print("second backward:", err)

first = w.grad.copy()
loss2 = ((x @ w + b).tanh() ** 2).sum()
loss2.backward()
print("accumulated twice, w.grad / first =", (w.grad / first).ravel())
w.zero_grad()
print("after zero_grad:", w.grad)

# %% [markdown]
# The loop that does all this is short enough to read in one go; after it, the class that
# sums the gradients each tensor receives from its consumers:

# %%
print(inspect.getsource(tm.tensor._backprop))
print(inspect.getsource(tm.tensor._GradientSums))

# %% [markdown]
# ## 5. Deep graphs: no recursion anywhere
#
# A recursive graph walk would stop at Python's recursion limit (about 1,000 frames). The
# engine's walk is iterative, and so a chain of 100,000 multiplications back-propagates
# fine. For $y = x \cdot c^n$ (n multiplications by the constant $c$),
# $\partial y / \partial x = c^n$.

# %%
n = 2_000 if SMALL else 100_000
c = 1.0 + 1e-5
x0 = tm.Tensor(1.0, requires_grad=True)
t = x0
for _ in range(n):
    t = t * c
t.backward()
print(f"chain of {n} multiplications: dy/dx = {float(x0.grad):.8f}, expected c**n = {c ** n:.8f}")

# %% [markdown]
# ## A picture of the graph
#
# `tinygrad_mha.plotting.computational_graph` draws the graph recorded for a small
# expression, `(a * a + exp(a)).sum()`: boxes are Tensors, circles are `Function` nodes, and
# `backward` walks the arrows in reverse. In a notebook the figure is a cell output; run as
# a script, `TINYGRAD_MHA_FIGURES=DIR` saves it to `DIR/graph.png`.

# %%
from tinygrad_mha import plotting

a = tm.Tensor(np.array([1.0, 2.0]), requires_grad=True)
a.name = "a"
expr = (a * a + a.exp()).sum()
graph_figure = plotting.computational_graph(expr)
plotting.show(graph_figure, "graph")

# %% [markdown]
# ## Check: what this tutorial taught
#
# Everything below is asserted against NumPy or against derivatives written out by hand.

# %%
xa = np.random.default_rng(1).standard_normal((4, 3))
wa = np.random.default_rng(2).standard_normal((3, 2))
X, W = tm.Tensor(xa), tm.Tensor(wa, requires_grad=True)
out = ((X @ W).tanh() ** 2).sum()
# a node is recorded exactly when an input requires a gradient
assert out._ctx is not None and X._ctx is None and W.is_leaf
with tm.no_grad():
    assert (X @ W)._ctx is None
# backward visits every node before the nodes that made its inputs, the loss's own first
nodes = _graph_nodes([out])
position = {id(node): i for i, node in enumerate(nodes)}
assert all(position[id(node)] < position[id(p._ctx)]
           for node in nodes for p in node.inputs if p._ctx)
assert nodes[0] is out._ctx and len(nodes) == 4  # sum, pow, tanh, matmul
# the gradient matches the chain rule done in NumPy
out.backward()
ya = np.tanh(xa @ wa)
np.testing.assert_allclose(W.grad, xa.T @ (2 * ya * (1 - ya ** 2)), rtol=1e-12)
# the graph was freed, and a second backward says so
assert out._ctx.inputs is None
# gradients accumulate until zero_grad
g1 = W.grad.copy()
((X @ W).tanh() ** 2).sum().backward()
np.testing.assert_allclose(W.grad, 2 * g1)
W.zero_grad()
assert W.grad is None
# the deep chain: exact up to rounding
np.testing.assert_allclose(float(x0.grad), c ** n, rtol=1e-9)
print("01: all checks passed")
