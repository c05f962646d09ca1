"""Blocked attention (the FlashAttention-2 algorithm): O(T) memory, exact gradients.

Reference it replaces: the dense composition in ``ops/`` (and ``ops/dot_product_attention``)

    scores  = scale * einsum(q, k) + bias          # (batch..., heads, T, S): T*S numbers per head
    probs   = softmax(scores, axis=keys, mask)     # then dropout's multiplier, when training
    context = einsum(probs, v)

which builds the whole scores array (and keeps the probabilities for backward). Here each
query block sweeps the key/value blocks keeping a running row maximum ``m`` and a running
sum ``l`` of exp(score - m) (the online softmax); only the output and each row's log-sum-exp
``lse = m + log l`` are kept. Backward recomputes each score block from q, k and ``lse``
(P = exp(S - lse), exact) and accumulates dQ, dK, dV block by block, with D = rowsum(dO * O)
standing in for rowsum(dP * P) (true with dropout too: both are dO . O).

Masks are never expanded to the scores' size: each mask part (an attention mask, query or
key masks, any array broadcastable to the scores) is sliced per block; causal and sliding
window bands are made per block from positions, and blocks they mask entirely are skipped
(causal does about half the work). Dropout redraws, per block, exactly the dense path's
mask: ``backend.uniform_at(key, position)`` at the C-order position of each entry in the
dense scores array, so forward and backward agree and the block size changes nothing.

On the CPU the (group chunk, block) work items run on a small thread pool with BLAS pinned
to one thread (ufuncs and BLAS release the GIL; NumPy's elementwise passes are single
threaded, so this is what uses the second core).

What it buys, measured on the shared 2-core machine (benchmarks/bench_long.py, RESULTS.md):
a MultiHeadAttention training step at T=4096 (B=1, E=256, 8 heads, float32) holds 75 MB
beyond its inputs instead of 1,056 MB (0.15 of one dense (8, T, T) float32 array instead of
2.1), T=16384 trains in 282 MB, causal or not; the step is 3.8-4.5x faster than the dense
path at T=4096. Against PyTorch's nn.MultiheadAttention step (SDPA's fused flash kernel) on
the same 2 threads, five runs: 1.35-1.44x at T=4096 (487 vs 362 ms recorded) and 1.34-1.39x
causal; 1.41x at T=16384 (0.92x causal). That is with OpenBLAS's idle threads told to sleep
at once (OPENBLAS_THREAD_TIMEOUT=4, see ``_run``); with its default they spin ~0.1 s after
each threaded product, the projections just before this kernel, and the same step measured
1.65-1.82x. The 7 block products alone are 263 ms of the step on 2 threads
(BLAS at about 70% of the core's peak, as key_dim 32 gives each product little work per
output) and the 3 elementwise passes 60 ms (``bench_long.py --bound``): the floor NumPy
leaves, where PyTorch fuses its passes into its products. Block sizes: see BLOCK_Q.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..backend import array_module, is_cupy_array, scatter_add, uniform_at
from ..ops.nn import keep_multiplier
from ..tensor import Function, Tensor, is_grad_enabled

# Block sizes, measured at T=4096, E=256, 8 heads (D=32), float32, 2 threads (benchmarks/
# bench_long.py --tune, whole step, medians of 3): 128x256 1626 ms, 128x512 1531, 256x256
# 1572, 256x512 1544, 512x512 1502, 256x1024 1472, 512x1024 1560: flat within the shared
# machine's noise from 128x512 up. 256x512 is in the middle of that plateau: a 2-group
# (2, 256, 512) float32 block is 1 MiB per thread, several elementwise passes over it stay
# in L2, and there are few enough blocks (~15 NumPy calls each) for Python overhead to stay
# under a few percent; smaller blocks pay that overhead, larger ones spill the cache.
# Re-timed after the passes were cut (kernel alone, medians of 4): 128x512 to 512x1024 all
# within 1,280-1,420 ms, again inside the noise; 64x1024 (1,471) was the only clear loser.
BLOCK_Q = 256
BLOCK_K = 512
BLOCK_ELEMENTS = 1 << 18  # score entries per work item: groups per chunk = this // (bq * bk)
# flash_attention=None picks this kernel when T * S (per head) is at least this many scores.
# Measured (bench_long.py --threshold, whole MHA step, E=256, 8 heads, 2 threads, shared
# machine), blocked / dense time, OpenBLAS spinning by default / told to sleep: T=512
# 0.86 / 0.90, 768 0.70 / 0.57, 1024 0.96 / 0.63, 1536 0.83 / 0.53, 2048 0.75 / 0.46.
# Blocked was not slower anywhere, but under about T=1024 the margin is within noise, with
# dropout the kernel draws its mask twice (forward and backward) where dense keeps it, and
# dense is the path learners read: from about T=1450 (2**21 scores) blocked wins clearly.
AUTO_MIN_SCORES = 1 << 21
RESCALE_MARGIN = 8.0  # the careful path raises a row's shift where a block's max passes it by this
ROWSUM_LIMIT = 2.0 ** 24  # a block tried without its max pass is kept when its row sums stay under


def default_threads() -> int:
    """TINYGRAD_MHA_THREADS if set, else the CPU count (at most 8)."""
    env = os.environ.get("TINYGRAD_MHA_THREADS")
    if env:
        return max(1, int(env))
    return max(1, min(8, os.cpu_count() or 1))


_pool = None
_pool_size = 0
_pool_lock = threading.Lock()
_controller = None


def _executor(n: int):
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size != n:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool, _pool_size = ThreadPoolExecutor(max_workers=n, thread_name_prefix="tm-attn"), n
        return _pool


def _blas_one_thread():
    """A context that pins BLAS to one thread (threadpoolctl when installed, else nothing)."""
    global _controller
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        import contextlib
        return contextlib.nullcontext()
    if _controller is None:
        _controller = ThreadpoolController()  # inspecting the loaded libraries is the slow part
    return _controller.limit(limits=1, user_api="blas")


def _run(items, fn, threads: int, on_cpu: bool):
    """fn(item, lane) for every item, on the thread pool when on the CPU with threads > 1.

    The items are dealt into ``threads`` lanes, fixed before anything runs, and a
    lane's items run in order on one thread: whoever sums per-lane partial results in lane
    order gets the same float rounding on every run, whatever the scheduling.
    BLAS is pinned to one thread on the CPU even without the pool: a block's products are
    small, and a threaded BLAS on a busy machine spent 10-30x longer spinning than computing
    (T=4096, 2 cores shared: 20-58 s against 1.6 s pinned).
    Pinning cannot stop BLAS threads that are already spinning: OpenBLAS's idle workers wait
    2**28 cycles (~0.1 s, 100 ms of CPU measured) for more work after each threaded product,
    so right after the projections they share the cores with the lanes (+35-45 ms per call
    at T=4096 on 2 cores). OPENBLAS_THREAD_TIMEOUT=4, set before NumPy loads, puts them to
    sleep at once; the README's Speed section says so.
    """
    lanes = 1 if not on_cpu or threads <= 1 else max(1, min(threads, len(items)))
    # dealt back and forth (0, 1, 1, 0, 0, 1, ...): with a causal mask the work per item
    # shrinks along the sequence, and a plain round-robin left lane 0 about 10% more of it
    dealt = [[] for _ in range(lanes)]
    for i, item in enumerate(items):
        turn, pos = divmod(i, lanes)
        dealt[pos if turn % 2 == 0 else lanes - 1 - pos].append(item)

    def run_lane(lane):
        for item in dealt[lane]:
            fn(item, lane)

    if not on_cpu:
        run_lane(0)
        return lanes
    with _blas_one_thread():
        if lanes == 1:
            run_lane(0)
        else:
            for f in [_executor(lanes).submit(run_lane, lane) for lane in range(lanes)]:
                f.result()
    return lanes


# ------------------------------------------------------------------ layout and parts
def normalize_part(array, group_shape: tuple, t_shape: tuple, s_shape: tuple):
    """An array broadcastable to the scores (group..., T..., S...) as ``(arr, gmap)``.

    ``arr`` has shape (Gm, T', S') with T' in (1, T) and S' in (1, S) (the query and key axes
    flattened, broadcast only within themselves), ``gmap[g]`` its row for flattened group g
    (None when Gm == G and the rows are the groups themselves). Memory: at most the part's
    own group count times T' * S', never the whole scores.
    """
    xp = array_module(array)
    ng, nt, ns = len(group_shape), len(t_shape), len(s_shape)
    full = ng + nt + ns
    if array.ndim < full:
        array = array.reshape((1,) * (full - array.ndim) + tuple(array.shape))
    mg = tuple(array.shape[:ng])
    mt = tuple(array.shape[ng:ng + nt])
    ms = tuple(array.shape[ng + nt:])
    tt = (1,) * nt if all(n == 1 for n in mt) else t_shape
    ss = (1,) * ns if all(n == 1 for n in ms) else s_shape
    arr = xp.broadcast_to(array, mg + tt + ss).reshape(math.prod(mg), math.prod(tt), math.prod(ss))
    G = math.prod(group_shape)
    if mg == tuple(group_shape):
        gmap = None
    else:
        idx = np.unravel_index(np.arange(G), group_shape)
        gmap = (np.ravel_multi_index(
                    [i if n > 1 else np.zeros_like(i) for i, n in zip(idx, mg)], mg)
                if mg else np.zeros(G, dtype=np.intp))
        gmap = xp.asarray(gmap)  # indexes device arrays: lives on their device
    return arr, gmap


def _part_block(part, g0, g1, t0, t1, s0, s1):
    arr, gmap = part
    tsl = slice(t0, t1) if arr.shape[1] > 1 else slice(0, 1)
    ssl = slice(s0, s1) if arr.shape[2] > 1 else slice(0, 1)
    if gmap is None:
        return arr[g0:g1, tsl, ssl]
    rows = gmap[g0:g1]
    if arr.shape[0] == 1:
        return arr[0:1, tsl, ssl]
    return arr[:, tsl, ssl][rows]


class _Plan:
    """Everything one call's forward and backward share (canonical (G, T, D) arrays, masks)."""

    def block_drop(self, xp, g0, g1, t0, t1, s0, s1):
        """What to mask in a block: None (nothing), False (all of it: skip the block) or a
        bool array broadcastable to the block, True where the score is masked."""
        keep = None
        if self.causal or self.window is not None:
            lo, hi = s0 - (t1 - 1), (s1 - 1) - t0  # the range of s - t inside the block
            if self.causal and lo > 0:
                return False
            if self.window is not None and (lo >= self.window or -hi >= self.window):
                return False
            partial = (self.causal and hi > 0) or (self.window is not None
                                                   and max(-lo, hi) >= self.window)
            if partial:
                keep = self._band(xp, t0 - s0, t1 - t0, s1 - s0)
                if not self.masks:
                    return keep[1]
                keep = keep[0]
        for part in self.masks:
            m = _part_block(part, g0, g1, t0, t1, s0, s1)
            keep = m if keep is None else keep & m
        if keep is None:
            return None
        if not bool(keep.any()):
            return False
        return ~keep

    def _band(self, xp, offset, bq, bk):
        """(keep, drop) of the causal/window band for a block whose first query is ``offset``
        after its first key: the same for every block on that diagonal, so made once."""
        band = self.bands.get((offset, bq, bk))
        if band is None:
            d = xp.arange(bk)[None, :] - xp.arange(offset, offset + bq)[:, None]  # s - t
            keep = d <= 0 if self.causal else None
            if self.window is not None:
                w = abs(d) < self.window
                keep = w if keep is None else keep & w
            band = self.bands[(offset, bq, bk)] = (keep[None], ~keep[None])
        return band

    def dropout(self, xp, g0, g1, t0, t1, s0, s1, dtype):
        """Dropout's multiplier for the block: the dense path's, redrawn from positions."""
        T, S = self.T, self.S
        g = xp.arange(g0, g1, dtype=xp.uint64)[:, None, None]
        t = xp.arange(t0, t1, dtype=xp.uint64)[None, :, None]
        s = xp.arange(s0, s1, dtype=xp.uint64)[None, None, :]
        position = (g * np.uint64(T) + t) * np.uint64(S) + s
        return keep_multiplier(uniform_at(self.key, position), self.rate, dtype)


def _items(G, gc, n, b):
    return [(g0, min(G, g0 + gc), i0, min(n, i0 + b))
            for g0 in range(0, G, gc) for i0 in range(0, n, b)]


def _forward(plan, q, kT, v):
    """out (G, T, Dv) and lse (G, T, 1), by the online softmax."""
    xp = array_module(q)
    G, T, _ = q.shape
    S, dv = kT.shape[2], v.shape[2]
    dtype = q.dtype
    out = xp.empty((G, T, dv), dtype=dtype)
    lse = xp.empty((G, T, 1), dtype=dtype)
    ninf = dtype.type(-np.inf)

    # The shift rides in the block product: [q, -shift] @ [k^T; 1] = q k^T - shift, and the
    # row sums in the next one: P @ [v, 1] has l in its last column (not with dropout, whose l
    # sums the probabilities before the mask). A row's shift is set from its first kept
    # block's maximum, so it is a score seen: the row's largest term is >= 1 and nothing that
    # matters underflows. After that a block is tried without its max pass: exp, product,
    # and the block is kept when its row sums stay <= ROWSUM_LIMIT (so every term did). Only
    # when a score outruns the shift by that much (or is nan) is the block redone the
    # careful way: the shift raised to the block's maximum where that exceeds it by more
    # than RESCALE_MARGIN, and l, acc rescaled to match.
    d = q.shape[2]
    kTa = xp.concatenate([kT, xp.ones((G, 1, S), dtype=dtype)], axis=1)
    va = xp.concatenate([v, xp.ones((G, S, 1), dtype=dtype)], axis=2)
    limit = dtype.type(ROWSUM_LIMIT)

    def work(item, lane):
        g0, g1, t0, t1 = item
        n, bq = g1 - g0, t1 - t0
        qa = xp.concatenate([q[g0:g1, t0:t1], xp.zeros((n, bq, 1), dtype=dtype)], axis=2)
        neg_shift = qa[:, :, d:]  # a view: the column holds minus the shift the products subtract
        started = xp.zeros((n, bq, 1), dtype=bool)  # has the row's shift been set from a score?
        all_started = False
        acc_l = xp.zeros((n, bq, dv + 1), dtype=dtype)
        acc, l = acc_l[:, :, :dv], acc_l[:, :, dv:]

        def scores(s0, s1, drop):
            s = xp.matmul(qa, kTa[g0:g1, :, s0:s1])  # scores - shift
            for part in plan.biases:
                s += _part_block(part, g0, g1, t0, t1, s0, s1)
            if drop is not None:
                xp.copyto(s, ninf, where=drop)
            return s

        def share(p, s0, s1):
            """A block's row sums and its share of [acc, l], from its exponentials ``p``."""
            if plan.rate:  # l sums the probabilities before dropout's mask
                rows = p.sum(axis=2, keepdims=True)
                p *= plan.dropout(xp, g0, g1, t0, t1, s0, s1, dtype)
                return rows, xp.concatenate([xp.matmul(p, v[g0:g1, s0:s1]), rows], axis=2)
            block = xp.matmul(p, va[g0:g1, s0:s1])  # l rides in the last column
            return block[:, :, dv:], block

        for s0 in range(0, S, plan.bk):
            s1 = min(S, s0 + plan.bk)
            drop = plan.block_drop(xp, g0, g1, t0, t1, s0, s1)
            if drop is False:
                continue
            s = scores(s0, s1, drop)
            if all_started:  # the fast try: no max pass
                with np.errstate(over="ignore", invalid="ignore"):  # a failed try may overflow
                    xp.exp(s, out=s)
                    rows, block = share(s, s0, s1)
                if bool((rows <= limit).all()):  # false for inf and nan too
                    acc_l += block
                    continue
                s = scores(s0, s1, drop)  # rare: redo it with the max
            top = s.max(axis=2, keepdims=True)
            raise_ = (top > RESCALE_MARGIN) | (~started & (top > ninf))
            if bool(raise_.any()):
                delta = xp.where(raise_, top, dtype.type(0))
                s -= delta
                # a new row's l, acc are 0
                acc_l *= xp.exp(-xp.where(started, delta, dtype.type(0)))
                neg_shift -= delta
                started |= raise_
                all_started = bool(started.all())
            xp.exp(s, out=s)
            acc_l += share(s, s0, s1)[1]
        empty = l == 0  # no key kept: a zero row, and lse = +inf so backward's P is 0
        out[g0:g1, t0:t1] = acc / xp.where(empty, dtype.type(1), l)
        with np.errstate(divide="ignore"):
            lse[g0:g1, t0:t1] = xp.where(empty, dtype.type(np.inf),
                                         xp.log(xp.where(empty, 1, l)) - neg_shift)

    gc = max(1, min(G, BLOCK_ELEMENTS // (plan.bq * plan.bk)))
    _run(_items(G, gc, T, plan.bq), work, plan.threads, not is_cupy_array(q))
    return out, lse


def _backward(plan, q, kT, v, out, lse, do, need_bias):
    """dq (scaled-q space), dk, dv and the bias gradients, block by block."""
    xp = array_module(q)
    G, T, d = q.shape
    S, dv = kT.shape[2], v.shape[2]
    dtype = q.dtype
    k = xp.ascontiguousarray(kT.transpose(0, 2, 1))
    vT = xp.ascontiguousarray(v.transpose(0, 2, 1))
    delta = xp.einsum("gtd,gtd->gt", do, out)[..., None]  # rowsum(dO * O) = rowsum(dP * P)
    # Two subtractions ride along in the block products: [q, -lse] @ [k^T; 1] = q k^T - lse
    # and [dO, -D] @ [v^T; 1] = dO v^T - D, one pass over each score block fewer each
    # (one more column in a product of 32 costs far less than a pass over the block).
    ones = xp.ones((G, 1, S), dtype=dtype)
    # (a row with no key has lse = +inf; every entry of it is masked below anyway, and a
    # finite stand-in keeps the product free of inf * 0)
    qa = xp.concatenate([q, xp.where(xp.isinf(lse), dtype.type(0), -lse)], axis=2)
    kTa = xp.concatenate([kT, ones], axis=1)
    doa = xp.concatenate([do, -delta], axis=2)
    vTa = xp.concatenate([vT, ones], axis=1)
    dk = xp.zeros((G, S, d), dtype=dtype)
    dvv = xp.zeros((G, S, dv), dtype=dtype)
    partials = {}  # lane -> its accumulators of dq and the bias gradients

    def accumulators(lane):
        if lane not in partials:  # each lane is one thread: nothing else writes this key
            partials[lane] = [xp.zeros((G, T, d), dtype=dtype)] + [
                xp.zeros(part[0].shape, dtype=dtype) if need else None
                for part, need in zip(plan.biases, need_bias)]
        return partials[lane]

    def work(item, lane):
        g0, g1, s0, s1 = item
        acc = accumulators(lane)
        dq = acc[0]
        kb, ktb, vtb = k[g0:g1, s0:s1], kTa[g0:g1, :, s0:s1], vTa[g0:g1, :, s0:s1]
        dk_b = dk[g0:g1, s0:s1]
        dv_b = dvv[g0:g1, s0:s1]
        for t0 in range(0, T, plan.bq):
            t1 = min(T, t0 + plan.bq)
            drop = plan.block_drop(xp, g0, g1, t0, t1, s0, s1)
            if drop is False:
                continue
            qb, dob = q[g0:g1, t0:t1], do[g0:g1, t0:t1]
            p = xp.matmul(qa[g0:g1, t0:t1], ktb)  # scores - lse
            for part in plan.biases:
                p += _part_block(part, g0, g1, t0, t1, s0, s1)
            if drop is not None:
                xp.copyto(p, dtype.type(-np.inf), where=drop)
            xp.exp(p, out=p)  # P, exactly the forward's probabilities (0 where masked)
            if plan.rate:
                z = plan.dropout(xp, g0, g1, t0, t1, s0, s1, dtype)
                dv_b += xp.matmul((p * z).transpose(0, 2, 1), dob)
                dp = xp.matmul(dob, vtb[:, :dv])
                dp *= z
                dp -= delta[g0:g1, t0:t1]
            else:
                dv_b += xp.matmul(p.transpose(0, 2, 1), dob)
                dp = xp.matmul(doa[g0:g1, t0:t1], vtb)  # dO v^T - D
            dp *= p  # dS
            for i, (part, need) in enumerate(zip(plan.biases, need_bias)):
                if need:
                    _accumulate_part(acc[1 + i], part, dp, g0, g1, t0, t1, s0, s1)
            dk_b += xp.matmul(dp.transpose(0, 2, 1), qb)
            dq[g0:g1, t0:t1] += xp.matmul(dp, kb)

    gc = max(1, min(G, BLOCK_ELEMENTS // (plan.bq * plan.bk)))
    lanes = _run(_items(G, gc, S, plan.bk), work, plan.threads, not is_cupy_array(q))
    total = accumulators(0)
    for lane in range(1, lanes):  # in lane order: the same rounding on every run
        for i, a in enumerate(partials.get(lane, ())):
            if a is not None:
                total[i] += a
    return total[0], dk, dvv, total[1:]


def _accumulate_part(into, part, ds, g0, g1, t0, t1, s0, s1):
    arr, gmap = part
    if arr.shape[1] == 1:
        ds = ds.sum(axis=1, keepdims=True)
    if arr.shape[2] == 1:
        ds = ds.sum(axis=2, keepdims=True)
    tsl = slice(t0, t1) if arr.shape[1] > 1 else slice(0, 1)
    ssl = slice(s0, s1) if arr.shape[2] > 1 else slice(0, 1)
    view = into[:, tsl, ssl]
    if gmap is None:
        view[g0:g1] += ds
    elif arr.shape[0] == 1:
        view[0:1] += ds.sum(axis=0, keepdims=True)
    else:
        scatter_add(view, gmap[g0:g1], ds)


# ------------------------------------------------------------------ the graph node
class BlockedAttention(Function):
    """softmax(scale * q k^T + bias, mask) (dropout) v, blocked; inputs in any layout.

    ``layout`` = (q_perm, k_perm, v_perm, group_shape, t_shape, s_shape): each perm takes
    its tensor to (group..., positions..., features). Gradient formulas (S = scale q k^T + b,
    P its masked softmax, W = P * keep, O = W v, D = rowsum(dO * O)):

        dV = W^T dO     dP = (dO V^T) * keep     dS = P * (dP - D)
        dQ = scale dS K     dK = scale dS^T Q     d bias = dS (summed over broadcast axes)

    Backward reads the inputs' shapes and dtypes only (it keeps its own canonical copies),
    so the inputs' arrays are not held for it.
    """
    uses_inputs, uses_output = "none", False

    def forward(self, q, k, v, *biases, layout, scale, masks, causal, window, rate, key,
                block_q, block_k, threads):
        q_perm, k_perm, v_perm, group_shape, t_shape, s_shape = layout
        xp = array_module(q)
        # half precision accumulates in float32
        work = np.dtype(np.float32 if q.dtype == np.float16 else q.dtype)
        G, T, S = math.prod(group_shape), math.prod(t_shape), math.prod(s_shape)
        plan = self.plan = _Plan()
        plan.T, plan.S, plan.causal, plan.window = T, S, causal, window
        plan.rate, plan.key = rate, key
        plan.bq, plan.bk, plan.threads = block_q, block_k, threads
        plan.bands = {}
        plan.masks = [normalize_part(m, group_shape, t_shape, s_shape) for m in masks]
        plan.biases = [normalize_part(b.astype(work, copy=False), group_shape, t_shape, s_shape)
                       for b in biases]
        self.bias_shapes = [b.shape for b in biases]
        self.layout, self.scale, self.in_dtype = layout, scale, q.dtype
        self.work_dtype = work

        def canon(x, perm, n):
            return xp.ascontiguousarray(
                x.transpose(perm).astype(work, copy=False)).reshape(G, n, -1)
        # a new array: the scale goes onto q, not the scores
        qc = canon(q, q_perm, T) * work.type(scale)
        kT = xp.ascontiguousarray(canon(k, k_perm, S).transpose(0, 2, 1))
        vc = canon(v, v_perm, S)
        out, lse = _forward(plan, qc, kT, vc)
        self.saved = (qc, kT, vc, out, lse)
        return self._from_canonical(out, q.shape, q_perm).astype(q.dtype, copy=False)

    def _from_canonical(self, x, shape, perm):
        """(G, n, features) back to the layout ``shape`` whose perm made it."""
        permuted = tuple(shape[i] for i in perm[:-1]) + (x.shape[-1],)
        inverse = tuple(int(i) for i in np.argsort(perm))
        return x.reshape(permuted).transpose(inverse)

    def backward(self, g):
        if is_grad_enabled():
            raise NotImplementedError(
                "blocked (flash) attention has no second derivatives (create_graph=True); "
                "use flash_attention=False for higher-order gradients")
        q, k, v, *biases = self.inputs
        qc, kT, vc, out, lse = self.saved
        q_perm, k_perm, v_perm, group_shape, t_shape, s_shape = self.layout
        xp = array_module(qc)
        G, T = qc.shape[0], qc.shape[1]
        work = self.work_dtype
        do = xp.ascontiguousarray(
            g.data.transpose(q_perm).astype(work, copy=False)).reshape(G, T, -1)
        need_bias = [b.requires_grad for b in biases]
        dq, dk, dv, dbiases = _backward(self.plan, qc, kT, vc, out, lse, do, need_bias)
        dq *= work.type(self.scale)
        grads = [
            Tensor._wrap(self._from_canonical(dq, q.shape, q_perm).astype(q.dtype, copy=False))
            if q.requires_grad else None,
            Tensor._wrap(self._from_canonical(dk, k.shape, k_perm).astype(k.dtype, copy=False))
            if k.requires_grad else None,
            Tensor._wrap(self._from_canonical(dv, v.shape, v_perm).astype(v.dtype, copy=False))
            if v.requires_grad else None,
        ]
        for b, need, db in zip(biases, need_bias, dbiases):
            grads.append(Tensor._wrap(_bias_grad(db, b.shape, group_shape, t_shape, s_shape)
                                      .astype(b.dtype, copy=False))
                         if need else None)
        return tuple(grads)


def _bias_grad(db, shape, group_shape, t_shape, s_shape):
    """The (Gm, T', S') gradient summed back to the bias's own shape."""
    xp = array_module(db)
    ng, nt = len(group_shape), len(t_shape)
    full = ng + nt + len(s_shape)
    padded = (1,) * (full - len(shape)) + tuple(shape)
    mg, mt, ms = padded[:ng], padded[ng:ng + nt], padded[ng + nt:]
    tt = (1,) * nt if all(n == 1 for n in mt) else t_shape
    ss = (1,) * len(s_shape) if all(n == 1 for n in ms) else s_shape
    x = db.reshape(mg + tt + ss)
    axes = tuple(i for i, (have, want) in enumerate(zip(x.shape, padded)) if have != want)
    if axes:
        x = x.sum(axis=axes, keepdims=True)
    return x.reshape(shape)


def blocked_attention(query, key, value, layout, *, scale, biases=(), masks=(), causal=False,
                      window=None, rate=0.0, random_key=None, block_q=None, block_k=None,
                      threads=None) -> Tensor:
    """The context of blocked attention as a recorded node (see ``BlockedAttention``).

    ``masks``: bool arrays broadcastable to the scores (group..., T..., S...) (True = attend);
    ``biases``: Tensors broadcastable to them, added to the scaled scores; ``causal``: keep
    t >= s (flattened positions, top-left); ``window``: keep |t - s| < window; ``rate`` and
    ``random_key``: dropout on the probabilities, the dense path's mask for that key.
    """
    return BlockedAttention.apply(
        query, key, value, *biases, layout=layout, scale=float(scale), masks=tuple(masks),
        causal=bool(causal), window=window, rate=float(rate), key=random_key,
        block_q=int(block_q or BLOCK_Q), block_k=int(block_k or BLOCK_K),
        threads=int(threads or default_threads()))
