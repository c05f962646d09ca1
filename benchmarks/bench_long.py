"""Long sequences: one MultiHeadAttention training step, dense vs blocked attention (and PyTorch).

The step, for x of shape (1, T, 256), 8 heads of key_dim 32, biases on every projection,
float32, causal and not:

    out = MultiHeadAttention(x, x, use_causal_mask=causal)
    loss = sum(out * R); gradients of x and all 8 weights

* **dense**: ``flash_attention=False``, the fused dense node (forms the (1, 8, T, T) scores).
* **blocked**: ``flash_attention=True``, kernels/blocked_attention.py (O(T) memory).
* **torch**: ``torch.nn.MultiheadAttention`` (CPU, eager, ``need_weights=False``, so it runs
  scaled_dot_product_attention's fused flash kernel; causal via ``is_causal=True``), same
  weights, same thread count, when PyTorch is importable (never a dependency).

Timings are medians over interleaved rounds (dense, blocked, a 0.3 s pause, torch, a pause:
PyTorch's OpenMP threads keep spinning after each op and slowed whatever ran next 3-5x);
T = 16384 runs blocked and torch only (dense would need ~17 GB). Peak extra memory is the
most ``tracemalloc`` saw held during one step beyond what was held before it (NumPy's
buffers; PyTorch's are not visible to it), in a separate pass. OpenBLAS's idle threads are
told to sleep at once (``OPENBLAS_THREAD_TIMEOUT=4``, see below); the T = 4096 rows are
re-timed in a child process that leaves them spinning, OpenBLAS's default.

    python benchmarks/bench_long.py               # full run, rewrites its section of RESULTS.md
    python benchmarks/bench_long.py --quick       # T = 1024 and 4096, one round, prints only
    python benchmarks/bench_long.py --tune        # block sizes of the kernel at T = 4096
    python benchmarks/bench_long.py --threshold   # dense vs blocked step for T = 256 .. 2048
    python benchmarks/bench_long.py --bound       # what bounds the kernel: products vs passes
    python benchmarks/bench_long.py --blas-spin   # OpenBLAS's idle threads left spinning
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import machine, pin_allocator, pin_threads, sample, write_section  # noqa: E402

import argparse  # noqa: E402

_p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
_p.add_argument("--threads", type=int, default=2,
                help="BLAS, PyTorch and kernel threads (default 2)")
_p.add_argument("--quick", action="store_true", help="T = 1024 and 4096, one round; prints only")
_p.add_argument("--write", action="store_true", help="write RESULTS.md even with --quick")
_p.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md or plots/")
_p.add_argument("--lengths", default=None,
                help="comma-separated T values (default 1024,4096,16384)")
_p.add_argument("--rounds", type=int, default=None,
                help="timed rounds per length (default: 5, 3, 1)")
_p.add_argument("--tune", action="store_true", help="time block sizes at T = 4096 and stop")
_p.add_argument("--threshold", action="store_true", help="dense vs blocked for short T and stop")
_p.add_argument("--bound", action="store_true",
                help="time the kernel's block products and elementwise passes alone "
                     "(T = 4096) and stop")
_p.add_argument("--blas-spin", action="store_true",
                help="leave OpenBLAS's idle threads spinning after each product (its default)")
_p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # rows only, for a child run
_p.add_argument("--sizes", default=None, help=argparse.SUPPRESS)   # bench's shared options,
_p.add_argument("--malloc", default="pinned", help=argparse.SUPPRESS)  # accepted and ignored
ARGS = _p.parse_args(None if __name__ == "__main__" else [])
if __name__ == "__main__":
    pin_threads(ARGS.threads)
    os.environ["TINYGRAD_MHA_THREADS"] = str(ARGS.threads)
    # OpenBLAS's idle workers spin for 2**28 cycles (~0.1 s) after each threaded product,
    # waiting for the next one. Right after the projections that is exactly when the
    # blocked kernel's lanes start, so 3 busy threads shared 2 cores: +35-45 ms per kernel
    # call at T=4096. 2**4 cycles lets them sleep at once (read when NumPy loads OpenBLAS).
    if ARGS.blas_spin:
        os.environ.pop("OPENBLAS_THREAD_TIMEOUT", None)
    elif not os.environ.get("OPENBLAS_THREAD_TIMEOUT"):
        os.environ["OPENBLAS_THREAD_TIMEOUT"] = "4"

import gc  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402

import tinygrad_mha as tm  # noqa: E402
from tinygrad_mha.kernels import blocked_attention as ba  # noqa: E402

try:
    import torch
except ImportError:  # optional: the torch column is left out
    torch = None

E, HEADS = 256, 8
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tm_step(T, causal, flash, seed=0):
    rng = np.random.default_rng(seed)
    x = tm.Tensor(rng.normal(size=(1, T, E)).astype(np.float32), requires_grad=True)
    R = rng.normal(size=(1, T, E)).astype(np.float32)
    tm.set_seed(seed)
    layer = tm.MultiHeadAttention(HEADS, E // HEADS, flash_attention=flash)
    layer.build(x.shape, x.shape)

    def run():
        x.zero_grad()
        for w in layer.weights:
            w.zero_grad()
        out = layer(x, x, use_causal_mask=causal)
        (out * R).sum().backward()
    return run, layer, x, R


def torch_step(layer, x, R, causal, threads):
    torch.set_num_threads(threads)
    T = x.shape[1]
    w = [a.astype(np.float32) for a in layer.get_weights()]  # wq bq wk bk wv bv wo bo
    mha = torch.nn.MultiheadAttention(E, HEADS, bias=True, batch_first=True)
    with torch.no_grad():
        in_weight = np.concatenate([w[i].reshape(E, -1).T for i in (0, 2, 4)])
        mha.in_proj_weight.copy_(torch.from_numpy(in_weight))
        in_bias = np.concatenate([w[i].reshape(-1) for i in (1, 3, 5)])
        mha.in_proj_bias.copy_(torch.from_numpy(in_bias))
        mha.out_proj.weight.copy_(torch.from_numpy(w[6].reshape(-1, E).T.copy()))
        mha.out_proj.bias.copy_(torch.from_numpy(w[7]))
    xt = torch.tensor(x.numpy(), requires_grad=True)
    Rt = torch.from_numpy(R)
    # with need_weights=False and is_causal=True PyTorch drops the mask and runs SDPA's causal
    # kernel
    mask = torch.ones(T, T, dtype=torch.bool).triu(1) if causal else None

    def run():
        xt.grad = None
        mha.zero_grad(set_to_none=True)
        out, _ = mha(xt, xt, xt, need_weights=False, attn_mask=mask, is_causal=causal)
        (out * Rt).sum().backward()
        return out
    return run, xt


def peak_extra(run) -> int:
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    run()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak - base


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(lengths, rounds_for):
    rows = []
    for T in lengths:
        for causal in (False, True):
            steps = {}
            blocked_run, layer, x, R = tm_step(T, causal, True)
            if T <= 4096 and not ARGS.json:  # (a child run only re-times blocked and torch)
                steps["dense"] = tm_step(T, causal, False)[0]
            steps["blocked"] = blocked_run
            if torch is not None:
                torch_run, xt = torch_step(layer, x, R, causal, ARGS.threads)
                steps["torch"] = torch_run
                blocked_run()
                torch_run()
                np.testing.assert_allclose(xt.grad.numpy(), x.grad, rtol=2e-3,
                                           atol=2e-3 * float(np.abs(x.grad).max()))
            ours = [name for name in steps if name != "torch"]
            time.sleep(0.5)  # let PyTorch's OpenMP threads stop spinning
            for name in ours:  # warm-up
                steps[name]()
            samples = {name: [] for name in steps}
            for _ in range(rounds_for(T)):
                for name in ours:
                    samples[name].append(timed(steps[name]))
                if "torch" in steps:
                    # a pause after PyTorch: its OpenMP threads keep spinning after each op,
                    # which slowed whatever ran next 3-5x on this 2-core machine
                    time.sleep(0.3)
                    samples["torch"].append(timed(steps["torch"]))
                    time.sleep(0.3)
            row = {"T": T, "causal": causal, "rounds": rounds_for(T)}
            for name, s in samples.items():
                row[name + "_ms"] = 1e3 * statistics.median(s)
            for name in ("dense", "blocked"):
                if name in steps and not ARGS.json:
                    row[name + "_mb"] = peak_extra(steps[name]) / 2**20
            row["dense_matrix_mb"] = HEADS * T * T * 4 / 2**20  # one (1, 8, T, T) float32 array
            print(row, flush=True)
            rows.append(row)
            del steps
            gc.collect()
    return rows


def tune():
    T = 4096
    run = tm_step(T, False, True)[0]
    configs = [(128, 256), (128, 512), (256, 256), (256, 512), (512, 512), (256, 1024), (512, 1024)]
    samples = {c: [] for c in configs}
    run()
    for _ in range(ARGS.rounds or 3):
        for c in configs:
            ba.BLOCK_Q, ba.BLOCK_K = c
            ba.BLOCK_ELEMENTS = max(c[0] * c[1], 1 << 18)
            samples[c].append(timed(run))
    for c in configs:
        print(f"BLOCK_Q={c[0]:4d} BLOCK_K={c[1]:4d}: {1e3 * statistics.median(samples[c]):7.0f} ms")


def threshold():
    for T in (256, 512, 768, 1024, 1536, 2048):
        runs = {"dense": tm_step(T, False, False)[0], "blocked": tm_step(T, False, True)[0]}
        for r in runs.values():
            r()
        samples = {k: [] for k in runs}
        for _ in range(ARGS.rounds or 7):
            for k, r in runs.items():
                samples[k].append(timed(r))
        med = {k: 1e3 * statistics.median(v) for k, v in samples.items()}
        print(f"T={T:5d}  dense {med['dense']:7.1f} ms  blocked {med['blocked']:7.1f} ms  "
              f"blocked/dense {med['blocked'] / med['dense']:.2f}", flush=True)


def bound():
    """The kernel's work at T = 4096 (8 heads, D = 32) split into its block matrix products
    and its elementwise passes, each timed alone on one thread at the default block shape,
    then scaled to the number of blocks and divided by the thread count."""
    from threadpoolctl import threadpool_limits
    rng = np.random.default_rng(0)
    T, D = 4096, E // HEADS
    gc = max(1, ba.BLOCK_ELEMENTS // (ba.BLOCK_Q * ba.BLOCK_K))
    shape = (gc, ba.BLOCK_Q, ba.BLOCK_K)
    blocks = HEADS * (T // ba.BLOCK_Q) * (T // ba.BLOCK_K) / gc
    q = rng.normal(size=(gc, ba.BLOCK_Q, D + 1)).astype(np.float32)
    kT = rng.normal(size=(gc, D + 1, ba.BLOCK_K)).astype(np.float32)
    s = (q @ kT) * np.float32(0.1)
    v = rng.normal(size=(gc, ba.BLOCK_K, D)).astype(np.float32)
    v1 = rng.normal(size=(gc, ba.BLOCK_K, D + 1)).astype(np.float32)
    work = np.empty_like(s)
    products = {"forward q k^T - shift": lambda: np.matmul(q, kT, out=work),
                "forward P [v, 1]": lambda: np.matmul(s, v1),
                "backward q k^T - lse": lambda: np.matmul(q, kT, out=work),
                "backward dO v^T - D": lambda: np.matmul(q, kT, out=work),
                "backward dV += P^T dO": lambda: np.matmul(s.transpose(0, 2, 1), q[..., :D]),
                "backward dK += dS^T q": lambda: np.matmul(s.transpose(0, 2, 1), q[..., :D]),
                "backward dQ += dS k": lambda: np.matmul(s, v)}
    # (the forward's row max and the subtraction of a raised shift happen in about one key
    # block in T/BLOCK_K, its row sums ride in the P v product: none is counted)
    passes = {"forward exp": lambda: np.exp(s, out=work),
              "backward exp": lambda: np.exp(s, out=work),
              "backward dP * P": lambda: np.multiply(s, s, out=work)}
    total, lines = {}, []
    with threadpool_limits(1, user_api="blas"):
        for group, ops in (("products", products), ("passes", passes)):
            total[group] = 0.0
            for name, fn in ops.items():
                fn()
                us = 1e6 * min(sample(fn, 20) for _ in range(7))  # best of 7: a bound
                total[group] += us
                lines.append(f"| {group} | {name} | {us:.0f} |")
    per = f"x {blocks:.0f} blocks / {ARGS.threads} threads"
    lines.append(f"| **products** | all {len(products)}, {per} | "
                 f"**{total['products'] * blocks / ARGS.threads / 1e3:.0f} ms** per step |")
    lines.append(f"| **passes** | all {len(passes)}, {per} | "
                 f"**{total['passes'] * blocks / ARGS.threads / 1e3:.0f} ms** per step |")
    text = (f"| kind | operation on one {shape} float32 block (D = {D}) | best of 7, us |\n"
            "|---|---|---:|\n" + "\n".join(lines))
    print(text)
    return text


def table(rows) -> str:
    head = ("| T | causal | dense ms | blocked ms | torch ms | blocked / torch | "
            "blocked / torch, BLAS spinning | dense peak MB | blocked peak MB | "
            "blocked peak / one T×T×8 float32 |")
    lines = [head, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        def cell(key, fmt="{:.0f}"):
            return fmt.format(r[key]) if key in r else "-"

        def ratio(ours, theirs):
            return f"{r[ours] / r[theirs]:.2f}x" if ours in r and theirs in r else "-"
        lines.append(f"| {r['T']} | {'yes' if r['causal'] else 'no'} | {cell('dense_ms')} | "
                     f"{cell('blocked_ms')} | {cell('torch_ms')} | "
                     f"{ratio('blocked_ms', 'torch_ms')} | "
                     f"{ratio('spin_blocked_ms', 'spin_torch_ms')} | {cell('dense_mb')} | "
                     f"{cell('blocked_mb')} | {r['blocked_mb'] / r['dense_matrix_mb']:.3f} |")
    return "\n".join(lines)


def with_blas_spinning(rows, rounds, T=4096):
    """The T=4096 rows measured again in a child process where OpenBLAS keeps its default
    spin (the setting is read once, at load), as ``spin_*`` keys of the same rows."""
    if not any(r["T"] == T for r in rows):
        return rows
    cmd = [sys.executable, os.path.abspath(__file__), "--blas-spin", "--json", "--lengths",
           str(T), "--rounds", str(rounds(T)), "--threads", str(ARGS.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    child = {(c["T"], c["causal"]): c for c in json.loads(done.stdout.splitlines()[-1])}
    for r in rows:
        c = child.get((r["T"], r["causal"]), {})
        r.update({"spin_" + k: c[k] for k in ("blocked_ms", "torch_ms") if k in c})
    return rows


def main():
    if ARGS.tune:
        return tune()
    if ARGS.threshold:
        return threshold()
    if ARGS.bound:
        return bound()
    malloc = pin_allocator()
    lengths = [int(t) for t in ARGS.lengths.split(",")] if ARGS.lengths else (
        [1024, 4096] if ARGS.quick else [1024, 4096, 16384])
    default_rounds = {1024: 5, 4096: 5}

    def rounds_for(T):
        return ARGS.rounds or (1 if ARGS.quick else default_rounds.get(T, 1))
    rows = measure(lengths, rounds_for)
    if ARGS.json:
        print(json.dumps(rows))
        return
    if not ARGS.blas_spin and ARGS.threads > 1:  # (one BLAS thread never spins)
        rows = with_blas_spinning(rows, rounds_for)
    bound_table = bound()
    heading = "## Long sequences: dense vs blocked attention (bench_long.py)"
    if ARGS.threads != 2:  # a run with another thread count gets a section of its own
        heading = heading[:-1] + f", --threads {ARGS.threads})"
    torch_name = (f"(PyTorch {torch.__version__}, need_weights=False: SDPA)" if torch
                  else "(not installed)")
    if ARGS.threads == 1:
        blas_note = ("OpenBLAS ran on one thread, which never spins: the \"BLAS spinning\" "
                     "column is left empty.")
    else:
        setting = ("its default idle-thread spin" if ARGS.blas_spin else
                   f"`OPENBLAS_THREAD_TIMEOUT={os.environ.get('OPENBLAS_THREAD_TIMEOUT')}`")
        blas_note = f"""OpenBLAS ran with {setting}: by default
its idle workers spin ~0.1 s after each threaded product (the projections), just when the
kernel's lanes start, and 3 busy threads share the cores. The column "BLAS spinning" is the
same step re-timed in a child process with that default (the setting is read at load)."""
    text = f"""{heading}

One self-attention training step (forward, loss sum(out * R), gradients of x and all
weights), B=1, E=256, 8 heads (key_dim 32), float32. dense = `flash_attention=False` (the
fused dense node), blocked = `flash_attention=True` (kernels/blocked_attention.py, blocks
{ba.BLOCK_Q}x{ba.BLOCK_K}, {ARGS.threads} threads with BLAS pinned to 1 each), torch =
`torch.nn.MultiheadAttention` {torch_name}
with {ARGS.threads} threads. Medians of interleaved rounds (5 at T=1024 and 4096, 1 at
16384; 0.3 s pauses around each torch step, as its spinning OpenMP threads slow what runs
next). Peak MB: the most tracemalloc saw held during one step beyond what was held before
(NumPy buffers only; PyTorch's memory is invisible to it). Dense at T=16384 is skipped: its
scores alone would take {HEADS * 16384 * 16384 * 4 / 2**30:.0f} GiB (several copies at the peak).
{blas_note}

{table(rows)}

What bounds the blocked step: its block matrix products and elementwise passes timed alone
on one thread (`--bound`), scaled to T=4096 without causal mask, {ARGS.threads} threads:

{bound_table}

Machine: {machine()}; {malloc}. The 2 cores were shared with other engineers' jobs while
this ran: absolute times are noisy, ratios within a row (measured in the same rounds) less so.
"""
    print(text)
    if ARGS.no_write or (ARGS.quick and not ARGS.write):
        return
    write_section(heading, text)
    try:
        from tinygrad_mha import plotting
        name = ("long_attention.png" if ARGS.threads == 2
                else f"long_attention_{ARGS.threads}thread.png")
        print("wrote", plotting.long_attention_figure(rows, os.path.join(ROOT, "plots", name)))
    except RuntimeError as exc:  # matplotlib missing: the table is still written
        print(f"no plot: {exc}")


if __name__ == "__main__":
    main()
