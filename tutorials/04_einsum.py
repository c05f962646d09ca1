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
# # 04 · Einsum, and why its gradient is another einsum
#
# Every contraction in MultiHeadAttention (the projections, the query-key dot products, the
# weighted sum of values) is one `einsum`. This tutorial explains the notation and then the
# one rule that differentiates all of them:
#
# 1. the notation, checked against `numpy.einsum`;
# 2. the rule: *the gradient for an operand is the einsum of the upstream gradient with the
#    other operands, producing that operand's letters*;
# 3. the two special cases the rule needs: letters summed inside one operand only, and
#    repeated letters (traces and diagonals);
# 4. the engine's `Einsum` op, and second derivatives for free;
# 5. the equations MultiHeadAttention builds, including 2-D attention over images.
#
# Exercises: `einsum_backward` and `attention_scores`.

# %%
import importlib
import inspect
import os

import numpy as np

import tinygrad_mha as tm

einsum_module = importlib.import_module("tinygrad_mha.ops.einsum")  # tm.ops.einsum is the function
SMALL = os.environ.get("TINYGRAD_MHA_SMALL", "0") not in ("", "0")
rng = np.random.default_rng(0)
print("small mode" if SMALL else "full size")

# %% [markdown]
# ## 1. The notation
#
# `einsum("ij,jk->ik", A, B)` names every axis of every operand with a letter. Letters that
# appear in the output are kept; all other letters are **summed over**; the same letter in
# two places means the same index. So this is
#
# $$C_{ik} = \sum_j A_{ij} B_{jk},$$
#
# a matrix product. One notation covers transposes, sums, outer products, batched products,
# traces and diagonals. Without `->` the output is implicit: the letters seen once, sorted.
# `...` stands for any number of leading (broadcast) axes.

# %%
a34, b42, sq = rng.standard_normal((3, 4)), rng.standard_normal((4, 2)), rng.standard_normal((3, 3))
# (batch, positions, heads, dim)
q, k = rng.standard_normal((2, 5, 2, 3)), rng.standard_normal((2, 6, 2, 3))
examples = [
    ("ij,jk->ik", (a34, b42), "matrix product"),
    ("ij->ji", (a34,), "transpose"),
    ("ij->i", (a34,), "row sums"),
    ("i,j->ij", (a34[0], b42[:, 0]), "outer product"),
    ("ii->", (sq,), "trace"),
    ("ii->i", (sq,), "diagonal"),
    ("ij,jk", (a34, b42), "implicit output: 'ik'"),
    ("...ij,...jk->...ik", (rng.standard_normal((2, 3, 4)), b42), "broadcast batch"),
    ("bqhd,bkhd->bhqk", (q, k), "attention logits"),
]
for eq, ops_, what in examples:
    ours = tm.einsum(eq, *[tm.Tensor(o) for o in ops_]).numpy()
    same = np.allclose(ours, np.einsum(eq, *ops_))
    print(f"{eq:>20}  {what:<22} -> shape {str(ours.shape):<14} same as numpy: {same}")

# %% [markdown]
# A picture of the contraction `ij,jk->ik`: one output element, $C_{1,2}$, multiplies the
# framed row of $A$ with the framed column of $B$ entry by entry and sums over the letter
# missing from the output, `j`.

# %%
from tinygrad_mha import plotting

contraction_figure = plotting.einsum_diagram("ij,jk->ik", np.arange(6.0).reshape(2, 3),
                                             np.arange(12.0).reshape(3, 4), out_index=(1, 2))
plotting.show(contraction_figure, "einsum_contraction")

# %% [markdown]
# ## 2. The rule
#
# An einsum is **linear in each operand**. Take $C_{ik} = \sum_j A_{ij} B_{jk}$ and a loss
# $L$ with upstream gradient $G_{ik} = \partial L / \partial C_{ik}$. Then
#
# $$\frac{\partial L}{\partial A_{ij}}
#   = \sum_{i',k} G_{i'k}\,\frac{\partial C_{i'k}}{\partial A_{ij}}
#   = \sum_k G_{ik} B_{jk}
#   \quad\Longrightarrow\quad \bar A = \texttt{einsum("ik,jk->ij", G, B)}.$$
#
# Look at the letters: we took the *output's* term `ik` for $G$, kept $B$'s term `jk`, and
# asked for $A$'s term `ij`. That is the whole rule, for any number of operands:
#
# $$\boxed{\ \bar X_m = \texttt{einsum}(\text{terms of the other operands},\ \text{output term}
#   \to \text{term of } X_m)\ }$$
#
# because $\partial C / \partial X_m$ is the product of the other operands, and the chain
# rule sums it against $G$ over every letter that is not $X_m$'s. For the attention logits
# `bqhd,bkhd->bhqk` this gives `bhqk,bkhd->bqhd` for the queries and `bhqk,bqhd->bkhd` for
# the keys: each gradient is again an attention-shaped contraction.
#
# Here is the rule in NumPy, checked against the engine on a two- and a three-operand
# equation:

# %%
def rule(subscripts: str, operands: list, g: np.ndarray, m: int) -> np.ndarray:
    """The gradient for operand m: einsum of g with every other operand, into m's letters."""
    inputs, output = subscripts.split("->")
    terms = inputs.split(",")
    others = [t for j, t in enumerate(terms) if j != m] + [output]
    arrays = [x for j, x in enumerate(operands) if j != m] + [g]
    return np.einsum(",".join(others) + "->" + terms[m], *arrays)


for eq, shapes in [("ij,jk->ik", [(3, 4), (4, 2)]),
                   ("bqhd,bkhd->bhqk", [(2, 5, 2, 3), (2, 6, 2, 3)]),
                   ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)])]:
    arrays = [rng.standard_normal(s) for s in shapes]
    tensors = [tm.Tensor(x, requires_grad=True) for x in arrays]
    out = tm.einsum(eq, *tensors)
    g = rng.standard_normal(out.shape)
    out.backward(g)
    for m, t in enumerate(tensors):
        print(f"{eq:>16}  operand {m}: "
              f"engine == rule: {np.allclose(t.grad, rule(eq, arrays, g, m))}")

# %% [markdown]
# ## 3. Two letters the rule cannot write down directly
#
# **A letter summed inside one operand only.** In `ij->i` (row sums) the letter `j` is in
# neither the output nor any other operand, so the rule would ask for `i->ij`, which
# einsum cannot produce (where would `j` come from?). But the answer is clear: every
# $A_{ij}$ contributes with weight 1 to $C_i$, so $\bar A_{ij} = G_i$, **broadcast** along
# `j`. The engine computes the gradient over the reachable letters (`i`) and broadcasts
# the rest, which is tutorial 03's rule in disguise.
#
# **A repeated letter.** In `ii->` (the trace) and `ii->i` (the diagonal), only the
# diagonal entries of $A$ reach the output:
#
# $$\operatorname{tr} A = \sum_i A_{ii} \;\Rightarrow\;
#   \frac{\partial L}{\partial A_{ij}} = G\,\delta_{ij},
# \qquad d_i = A_{ii} \;\Rightarrow\; \frac{\partial L}{\partial A_{ij}} = G_i\,\delta_{ij}.$$
#
# The rule would ask for output `ii`, a repeated output letter, which einsum forbids. The
# fix is the Kronecker delta itself, an identity matrix: compute the gradient over the
# unique letters (`i`) and spread it onto the diagonal with one more einsum,
# `einsum("i,ij->ij", grad, eye(n))`.

# %%
A = tm.Tensor(sq, requires_grad=True)
tm.einsum("ii->", A).backward(np.array(2.5))
print("gradient of the trace (g = 2.5):\n", A.grad)
A.zero_grad()
gd = np.array([1.0, -2.0, 3.0])
tm.einsum("ii->i", A).backward(gd)
print("gradient of the diagonal (g = [1, -2, 3]):\n", A.grad)

# %% [markdown]
# ## 4. The engine's `Einsum`
#
# Here is the reference `Einsum` op: its forward is the backend's `einsum`, and `grad_for`
# is the rule; `reachable` handles letters summed inside one operand; `embed_diagonal`
# handles repeated letters with identity matrices. Everything they call is `Einsum.apply`,
# `reshape` or `broadcast_to`: Tensor ops, recorded when `create_graph=True`. (By default
# `tm.einsum` runs a kernel, `tinygrad_mha/kernels/contraction.py`, that plans the same
# contraction as batched matrix products; `with tm.use_kernels(False):` runs this code, and
# the tests check that both give the same numbers.)

# %%
print(inspect.getsource(einsum_module.Einsum))
print(inspect.getsource(einsum_module.embed_diagonal))

# %% [markdown]
# Because the backward is made of einsums, it can be differentiated again, with no second
# code path. `tm.gradgradcheck` compares the second derivatives with finite differences of
# the first (tutorial 07 explains both checks):

# %%
qs, ks = (2, 3, 2, 2), (2, 4, 2, 2)
qt = tm.Tensor(rng.standard_normal(qs), requires_grad=True)
kt = tm.Tensor(rng.standard_normal(ks), requires_grad=True)
print("gradcheck    :", tm.gradcheck(lambda a, b: tm.einsum("bqhd,bkhd->bhqk", a, b), (qt, kt)))
print("gradgradcheck:",
      tm.gradgradcheck(lambda a, b: tm.einsum("bqhd,bkhd->bhqk", a, b) ** 2, (qt, kt)))

# %% [markdown]
# ## 5. The equations of MultiHeadAttention
#
# The layer builds its two attention einsums from `attention_axes` (see
# `_build_equations` in `tinygrad_mha/layers/multi_head_attention.py`). For a sequence
# (B, T, features) the projected tensors are (B, T, heads, dim) and the equations are the
# familiar ones, with the letters renamed. For 2-D attention over an image, attention axes
# (2, 3) of a (B, extra, rows, cols, features) input, the key positions get fresh letters
# for *both* image axes, and the scores have shape (B, extra, heads, rows, cols, rows, cols):
# every pixel attends to every pixel. The softmax runs jointly over the last two axes.
# (The layer passes the *key* as the first operand, as Keras does, so the first term of
# the scores equation is the key's.)

# %%
size = 2 if SMALL else 4
for axes, shape in [(None, (2, 5, 6)), ((2, 3), (2, 3, size, size + 1, 6))]:
    layer = tm.MultiHeadAttention(num_heads=2, key_dim=3, attention_axes=axes)
    x_in = rng.random(shape)
    _, scores = layer(x_in, x_in, return_attention_scores=True)
    print(f"attention_axes={axes}: input {shape}")
    print(f"   scores:   {layer._dot_equation:<24} -> {scores.shape}, "
          f"softmax over axes {layer._softmax_axes}")
    print(f"   combine:  {layer._combine_equation}")

# %% [markdown]
# The exercise `attention_scores` asks you to build these probabilities yourself for any
# `attention_axes`, in the same layout.

# %% [markdown]
# ## Check: what this tutorial taught
#
# For a list of equations, the engine's forward equals `numpy.einsum`, its gradients equal
# the rule (with broadcasting for letters summed in one operand, and the identity for
# repeated letters), and finite differences agree.

# %%
cases = [("ij,jk->ik", [(3, 4), (4, 2)]), ("bqhd,bkhd->bhqk", [(2, 3, 2, 2), (2, 4, 2, 2)]),
         ("bhqk,bkhd->bqhd", [(2, 2, 3, 4), (2, 4, 2, 2)]),
         ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]),
         ("i,j->ij", [(3,), (4,)]), ("ij->ji", [(3, 4)])]
for eq, shapes in cases:
    arrays = [rng.standard_normal(s) for s in shapes]
    tensors = [tm.Tensor(x, requires_grad=True) for x in arrays]
    out = tm.einsum(eq, *tensors)
    np.testing.assert_allclose(out.numpy(), np.einsum(eq, *arrays), rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(out.shape)
    out.backward(g)
    for m, t in enumerate(tensors):
        np.testing.assert_allclose(t.grad, rule(eq, arrays, g, m), rtol=1e-10, atol=1e-12,
                                   err_msg=eq)
    assert tm.gradcheck(lambda *ts, eq=eq: tm.einsum(eq, *ts),
                        tuple(tm.Tensor(x, requires_grad=True) for x in arrays))

# a letter summed inside one operand: the gradient is broadcast
A2 = tm.Tensor(a34, requires_grad=True)
g_rows = rng.standard_normal(3)
tm.einsum("ij->i", A2).backward(g_rows)
np.testing.assert_array_equal(A2.grad, np.broadcast_to(g_rows[:, None], (3, 4)))
# trace and diagonal: the gradient sits on the diagonal
A3 = tm.Tensor(sq, requires_grad=True)
tm.einsum("ii->", A3).backward(np.array(2.5))
np.testing.assert_array_equal(A3.grad, 2.5 * np.eye(3))
A3.zero_grad()
tm.einsum("ii->i", A3).backward(gd)
np.testing.assert_array_equal(A3.grad, np.diag(gd))
for eq in ("ii->", "ii->i", "ij->i"):
    assert tm.gradcheck(lambda t, eq=eq: tm.einsum(eq, t),
                        (tm.Tensor(rng.standard_normal((3, 3)), requires_grad=True),))
    assert tm.gradgradcheck(lambda t, eq=eq: tm.einsum(eq, t) ** 2,
                            (tm.Tensor(rng.standard_normal((3, 3)), requires_grad=True),))
print("04: all checks passed")
