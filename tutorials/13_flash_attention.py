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
# # 13 · FlashAttention from scratch
#
# Attention as tutorial 08 wrote it builds the whole score matrix: for each head, a T x S
# array of scores, then a T x S array of probabilities, kept for the backward pass. At
# T = S = 4096 with 8 heads that is 512 MB per float32 copy, and memory grows as T².
#
# FlashAttention (Dao et al., 2022; FlashAttention-2, 2023) computes *exactly* the same
# output with memory proportional to T. Two ideas make it work:
#
# 1. **The online softmax.** A softmax row can be computed in one sweep over blocks of
#    keys, keeping only a running maximum, a running sum and a running weighted sum of the
#    values. No row of scores is ever held whole.
# 2. **Recompute, don't store.** The forward keeps only the output and one number per
#    query row (its log-sum-exp). The backward recomputes each block of scores from q and
#    k, which costs one more small matrix product per block instead of a T x S array.
#
# We build both in plain NumPy for one head, check them against the dense formulas, then
# use the library's kernel (`tm.dot_product_attention(..., flash_attention=True)` and
# `MultiHeadAttention(flash_attention=...)`), measure its memory and gradcheck it.

# %%
import os
import tracemalloc

import numpy as np

import tinygrad_mha as tm
from tinygrad_mha.kernels import blocked_attention as ba
from tinygrad_mha import plotting
from tinygrad_mha.plotting import block_sweep_figure, long_attention_figure

SMALL = os.environ.get("TINYGRAD_MHA_SMALL", "0") not in ("", "0")
print("small mode" if SMALL else "full size")
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. The online softmax, for one row
#
# The stable softmax of a row x subtracts the row's maximum m before exponentiating:
# softmax(x)_j = exp(x_j - m) / l with l = Σ_j exp(x_j - m). Attention then takes
# o = Σ_j softmax(x)_j v_j. All three (m, l and the weighted sum) can be built block by
# block. Suppose we have m, l and acc = Σ exp(x_j - m) v_j for the blocks seen so far, and a
# new block arrives with scores s and values V:
#
# * the new maximum is m' = max(m, max(s));
# * everything summed so far was relative to m, so it is rescaled by α = exp(m - m');
# * l' = α l + Σ exp(s - m'),  acc' = α acc + exp(s - m') V.
#
# At the end, o = acc / l, and log Σ exp(x) = m + log l (the *log-sum-exp*, "lse").

# %%
def online_row(x, values, block):
    """softmax(x) @ values and log-sum-exp(x) for one row, one block of keys at a time."""
    m, l, acc = -np.inf, 0.0, np.zeros(values.shape[1])
    for j0 in range(0, len(x), block):
        s, v = x[j0:j0 + block], values[j0:j0 + block]
        m_new = max(m, s.max())
        alpha = np.exp(m - m_new)        # 0 on the first block (m = -inf)
        p = np.exp(s - m_new)            # every entry <= 1: nothing overflows
        l = alpha * l + p.sum()
        acc = alpha * acc + p @ v
        m = m_new
    return acc / l, m + np.log(l)


S_ROW = 10
x_row = np.sort(rng.normal(size=S_ROW)) * 40 + 700   # large, and the maximum comes last
v_row = rng.normal(size=(S_ROW, 3))
dense_p = np.exp(x_row - x_row.max())
dense_p /= dense_p.sum()
for block in (1, 3, 4, 10):
    o, lse = online_row(x_row, v_row, block)
    row_error = np.abs(o - dense_p @ v_row).max()
    print(f"block {block:2d}: |online - dense| = {row_error:.1e}, lse = {lse:.6f}")
row_lse_dense = x_row.max() + np.log(np.exp(x_row - x_row.max()).sum())
print("dense lse:", f"{row_lse_dense:.6f}")

# %% [markdown]
# ## 2. The block sweep
#
# For a whole head, queries are cut into blocks too. Each query block sweeps the key blocks
# left to right with its own running (m, l, acc). With a causal mask a query t may only see
# keys s <= t, so every block entirely above the diagonal is skipped without computing
# anything (grey); blocks on the diagonal are masked in part (orange); the rest are computed
# whole (blue). That is why causal attention costs about half.

# %%
plotting.show(block_sweep_figure(24, 24, 4, 6, causal=True), "block_sweep")

# %% [markdown]
# ## 3. The forward pass, blocked
#
# One head, q (T, D), k (S, D), v (S, Dv). Each query block keeps (m, l, acc) for its rows;
# at the end it writes its rows of the output and of lse. The only arrays the size of a
# block are the block's scores; nothing is T x S.

# %%
def blocked_forward(q, k, v, scale, bq, bk, causal=False):
    T, S = len(q), len(k)
    out, lse = np.zeros((T, v.shape[1])), np.zeros(T)
    for t0 in range(0, T, bq):
        t1 = min(T, t0 + bq)
        m = np.full((t1 - t0, 1), -np.inf)
        l = np.zeros((t1 - t0, 1))
        acc = np.zeros((t1 - t0, v.shape[1]))
        for s0 in range(0, S, bk):
            s1 = min(S, s0 + bk)
            if causal and s0 > t1 - 1:
                break                                     # every later block is masked too
            s = scale * q[t0:t1] @ k[s0:s1].T             # one block of scores
            if causal:
                s = np.where(np.arange(s0, s1)[None] <= np.arange(t0, t1)[:, None], s, -np.inf)
            m_new = np.maximum(m, s.max(axis=1, keepdims=True))
            p = np.exp(s - m_new)
            alpha = np.exp(m - m_new)
            l = alpha * l + p.sum(axis=1, keepdims=True)
            acc = alpha * acc + p @ v[s0:s1]
            m = m_new
        out[t0:t1] = acc / l
        lse[t0:t1] = (m + np.log(l))[:, 0]
    return out, lse


def dense_forward(q, k, v, scale, causal=False):
    s = scale * q @ k.T
    if causal:
        s = np.where(np.tril(np.ones(s.shape, bool)), s, -np.inf)
    p = np.exp(s - s.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return p @ v, p


T1, S1, D1 = (9, 9, 4) if SMALL else (37, 37, 8)
q1, k1, v1 = rng.normal(size=(T1, D1)), rng.normal(size=(S1, D1)), rng.normal(size=(S1, 5))
scale1 = 1 / np.sqrt(D1)
forward_errors = []
for causal in (False, True):
    o_blocked, lse1 = blocked_forward(q1, k1, v1, scale1, 4, 5, causal)
    o_dense, p_dense = dense_forward(q1, k1, v1, scale1, causal)
    forward_errors.append(np.abs(o_blocked - o_dense).max())
    print(f"causal={causal}: |blocked - dense| = {forward_errors[-1]:.1e}")

# %% [markdown]
# ## 4. Why the backward recomputes instead of storing
#
# The dense backward keeps the probabilities P (T x S) from the forward. But P is a
# function of things we still have: P = exp(scale q kᵀ - lse), row by row, *exactly* (the
# lse was computed from the same scores). So the forward keeps lse (T numbers) and the
# backward recomputes each block of P from q and k: one extra block product instead of a
# T x S array held from forward to backward.
#
# With upstream gradient dO (T x Dv), the gradients of O = P V are, block by block:
#
# * dV += Pᵀ dO
# * dP = dO Vᵀ, and the softmax gradient dS = P * (dP - D) with D = rowsum(dP * P).
#   D needs a whole row of P... but rowsum(dP * P) = rowsum(dO * O), since O = P V.
#   So D is computed once from dO and O, before any block.
# * dQ += scale dS K,  dK += scale dSᵀ Q.

# %%
def blocked_backward(q, k, v, out, lse, d_out, scale, bq, bk):
    d_q, d_k, d_v = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    D = (d_out * out).sum(axis=1, keepdims=True)          # = rowsum(dP * P)
    for s0 in range(0, len(k), bk):
        s1 = s0 + bk
        for t0 in range(0, len(q), bq):
            t1 = t0 + bq
            p = np.exp(scale * q[t0:t1] @ k[s0:s1].T - lse[t0:t1, None])   # recomputed
            d_v[s0:s1] += p.T @ d_out[t0:t1]
            d_s = p * (d_out[t0:t1] @ v[s0:s1].T - D[t0:t1])
            d_q[t0:t1] += scale * d_s @ k[s0:s1]
            d_k[s0:s1] += scale * d_s.T @ q[t0:t1]
    return d_q, d_k, d_v


o_blocked, lse1 = blocked_forward(q1, k1, v1, scale1, 4, 5)
d_out1 = rng.normal(size=o_blocked.shape)
ours = blocked_backward(q1, k1, v1, o_blocked, lse1, d_out1, scale1, 4, 5)

# the engine's gradients of the dense composition, for comparison
tq, tk, tv = (tm.Tensor(a, requires_grad=True) for a in (q1, k1, v1))
probs = tm.softmax(tm.einsum("td,sd->ts", tq, tk) * scale1, axis=-1)
(tm.einsum("ts,se->te", probs, tv) * d_out1).sum().backward()
backward_errors = [np.abs(a - b).max() for a, b in zip(ours, (tq.grad, tk.grad, tv.grad))]
print("|blocked backward - engine| for dq, dk, dv:", [f"{e:.1e}" for e in backward_errors])

# %% [markdown]
# ## 5. The library's kernel
#
# `tinygrad_mha/kernels/blocked_attention.py` is this algorithm for every head at once, with
# everything the dense path supports except returning the probabilities: explicit masks
# sliced per block, query/key masks, causal and sliding-window bands made per block (skipping
# the blocks they mask entirely), dropout (its mask redrawn per block from the position of
# each score, so it equals the dense path's), N-D attention axes, float16/32/64, NumPy and
# CuPy. On the CPU it runs blocks on two threads with BLAS pinned to one thread each (and
# asks one thing of you: `OPENBLAS_THREAD_TIMEOUT=4` in the environment before NumPy starts,
# or NumPy's own BLAS threads keep spinning beside them after every projection; the README's
# Speed section has the numbers).
#
# Three changes to the forward loop of section 3 buy its speed, each saving a pass over a block:
# the running shift rides in the score product (`[q, -m] @ [k^T; 1] = q k^T - m`), the row
# sums ride in the next one (`P @ [v, 1]` has `l` in its last column), and once a row has a
# shift, a block is tried without taking its maximum at all. The try is exact as long as no
# exponential overflows, so the kernel keeps it when the block's row sums stay under 2^24,
# and otherwise (rarely) redoes that block the careful way, raising the shift.
#
# Two ways in:
#
# ```python
# tm.dot_product_attention(q, k, v, mask=None, is_causal=False,
#                          flash_attention=True)  # (B, T, N, H)
# tm.MultiHeadAttention(8, 32, flash_attention=None)   # None: blocked for long sequences
# ```
#
# `flash_attention=None` chooses the blocked kernel when the probabilities are not asked for
# and T·S is at least `AUTO_MIN_SCORES` (where it measured faster); `True` always (and a
# ValueError with `return_attention_scores=True`); `False` never. Under
# `tm.use_kernels(False)` the dense reference always runs.

# %%
B2, T2, N2, H2 = 2, 50, 2, 8
q2, k2, v2 = (rng.normal(size=(B2, T2, N2, H2)).astype(np.float32) for _ in range(3))
flash = tm.dot_product_attention(q2, k2, v2, is_causal=True, flash_attention=True).numpy()
dense = tm.dot_product_attention(q2, k2, v2, is_causal=True, flash_attention=False).numpy()
library_error = np.abs(flash - dense).max()
print("dot_product_attention, flash vs dense (float32):", f"{library_error:.1e}")
print("auto threshold: T * S >=", ba.AUTO_MIN_SCORES,
      f"(T = S = {int(np.sqrt(ba.AUTO_MIN_SCORES))})")

# %% [markdown]
# ## 6. Memory against sequence length
#
# `tracemalloc` sees every NumPy buffer, so we can measure the most memory one training step
# holds beyond what was there before. Dense attention keeps scores-sized arrays (T²); the
# blocked kernel keeps T-sized ones and a few blocks.

# %%
def step_peak_mb(T, flash_attention):
    q, k, v = (tm.Tensor(rng.normal(size=(1, T, 2, 16)).astype(np.float32), requires_grad=True)
               for _ in range(3))
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    out = tm.dot_product_attention(q, k, v, flash_attention=flash_attention)
    out.sum().backward()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak / 2**20


lengths = (256, 512, 1024) if SMALL else (256, 512, 1024, 2048, 4096)
rows = [{"T": T, "dense_mb": step_peak_mb(T, False), "blocked_mb": step_peak_mb(T, True)}
        for T in lengths]
for r in rows:
    print(f"T={r['T']:5d}: dense {r['dense_mb']:8.1f} MB   blocked {r['blocked_mb']:6.1f} MB")
plotting.show(long_attention_figure(rows), "memory_against_length")

# %% [markdown]
# The dense line has slope 2 on the log-log plot (T²), the blocked one slope 1 (T): at the
# largest T above, dense holds many times what blocked does. `benchmarks/bench_long.py`
# (`make bench`) measures a whole MultiHeadAttention training step at T = 1024, 4096 and
# 16384 against PyTorch; see benchmarks/RESULTS.md.
#
# ## 7. Gradcheck
#
# The kernel's gradients against central finite differences, in float64, with tiny blocks
# (3 queries x 4 keys) so that T and S are not multiples of the blocks, T != S, and the
# causal band skips whole blocks.

# %%
saved_blocks = ba.BLOCK_Q, ba.BLOCK_K
ba.BLOCK_Q, ba.BLOCK_K = 3, 4
try:
    inputs = tuple(tm.Tensor(rng.normal(size=shape), requires_grad=True)
                   for shape in ((1, 7, 2, 3), (1, 10, 2, 3), (1, 10, 2, 3)))
    gradcheck_ok = tm.gradcheck(
        lambda q, k, v: tm.dot_product_attention(q, k, v, is_causal=True, flash_attention=True),
        inputs)
finally:
    ba.BLOCK_Q, ba.BLOCK_K = saved_blocks
print("gradcheck of the blocked kernel:", gradcheck_ok)

# %% [markdown]
# ## Exercise
#
# `online_softmax` (in `tutorials/exercises/`): the sweep of section 1 for many rows at once,
# with masked keys, rows with nothing to attend to and rows on wildly different scales.
#
#     python -m tinygrad_mha.exercises check online_softmax
#
# ## Check: what this tutorial taught

# %%
# the online softmax gives the dense softmax's output and log-sum-exp for any block size
assert row_error < 1e-12 and abs(lse - row_lse_dense) < 1e-9
# the blocked forward and the recomputing backward are the dense formulas
assert max(forward_errors) < 1e-12 and max(backward_errors) < 1e-12
# the library's kernel agrees with the dense path and passes a float64 gradcheck
assert library_error < 1e-5 and gradcheck_ok
# memory: dense grows as T^2, blocked as T
assert rows[-1]["dense_mb"] / rows[0]["dense_mb"] > 0.5 * (lengths[-1] / lengths[0]) ** 2
assert rows[-1]["blocked_mb"] < rows[-1]["dense_mb"] / 3
