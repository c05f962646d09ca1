"""Each kernel against the reference op it replaces: what ``tinygrad_mha/kernels/`` buys.

For every kernel, one forward plus backward (loss ``sum(out * R)``, float32) of the op at
MultiHeadAttention sizes, run with kernels on and under ``tm.use_kernels(False)`` in
interleaved rounds in one process; the ratio is reference time over kernel time.

    python benchmarks/bench_kernels.py            # rewrites its section of RESULTS.md
    python benchmarks/bench_kernels.py --quick    # smoke run, prints only
"""

from __future__ import annotations

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import (SIZES, calibrate, machine, parse_args, pin_allocator, pin_threads,  # noqa: E402
                     sample, selected_sizes, write_section)

ARGS = parse_args(__doc__.split("\n")[0], None if __name__ == "__main__" else [])
if __name__ == "__main__":
    pin_threads(ARGS.threads)

import numpy as np  # noqa: E402

import tinygrad_mha as tm  # noqa: E402

HEADING = "## Kernels against their reference ops (bench_kernels.py)"
ROUNDS, QUICK_ROUNDS = 20, 3
DOT, COMBINE = "aecd,abcd->acbe", "acbe,aecd->abcd"  # as MultiHeadAttention writes them


def cases(B, T, E, H):
    """(kernel module, op as called, inputs, fn) for one size; D = E // H."""
    D, rng = E // H, np.random.default_rng(0)

    def t(*shape):
        return tm.Tensor(rng.standard_normal(shape, dtype=np.float32), requires_grad=True)
    x, w, b = t(B, T, E), t(E, H, D), t(H, D)
    q, k, v, s = t(B, T, H, D), t(B, T, H, D), t(B, T, H, D), t(B, H, T, T)
    return [
        ("tensordot.py", "tensordot(x, w, 1, bias=b)", (x, w, b),
         lambda: tm.tensordot(x, w, 1, bias=b)),
        ("contraction.py", f'einsum("{DOT}", k, q, scale=s)', (q, k),
         lambda: tm.einsum(DOT, k, q, scale=0.25)),
        ("softmax.py", "softmax(scores)", (s,), lambda: tm.softmax(s)),
        ("fused_attention.py", "attention(q, k, v, ...)", (q, k, v),
         lambda: tm.ops.attention(q, k, v, DOT, COMBINE, scale=0.25)),
    ]


def step(fn, inputs, kernels: bool):
    R = {}

    @tm.use_kernels(kernels)
    def run():
        for t in inputs:
            t.zero_grad()
        out = fn()
        if out.shape not in R:
            R[out.shape] = tm.Tensor(np.ones(out.shape, dtype=np.float32) * 0.5)
        (out * R[out.shape]).sum().backward()
    return run


def bench(size, rounds):
    rows = []
    for module, call, inputs, fn in cases(*SIZES[size]):
        runs = {mode: step(fn, inputs, mode) for mode in (True, False)}
        number = {mode: calibrate(runs[mode]) for mode in runs}
        samples = {True: [], False: []}
        for r in range(rounds):
            for mode in ((True, False) if r % 2 == 0 else (False, True)):
                samples[mode].append(sample(runs[mode], number[mode]))
        kernel, ref = (statistics.median(samples[m]) * 1e3 for m in (True, False))
        rows.append((size, module, call, kernel, ref))
        print(f"{size:7s} {module:20s} kernel {kernel:9.3f} ms  reference {ref:9.3f} ms  "
              f"{ref / kernel:5.2f}x", flush=True)
    return rows


def section(rows, args) -> str:
    table = ["| size | kernel (`tinygrad_mha/kernels/`) | op | kernel ms | reference ms | "
             "reference / kernel |", "|---|---|---|---:|---:|---:|"]
    table += [f"| {size} | `{module}` | `{call}` | {k:.3f} | {r:.3f} | {r / k:.2f}x |"
              for size, module, call, k, r in rows]
    rounds = QUICK_ROUNDS if args.quick else ROUNDS
    table_text = "\n".join(table)
    return f"""{HEADING}

Forward plus backward (loss `sum(out * R)`) of each op a kernel replaces, float32, at the
MultiHeadAttention sizes (B, T, E, H) of the step below: kernels on, and the same call under
`tm.use_kernels(False)` (the reference definitions in `tinygrad_mha/ops/`). Medians of
{rounds} interleaved rounds in one process, {args.threads} BLAS thread(s), {args.allocator}.
The machine is shared (2 cores, other jobs running): read the ratios, not the times.

Machine: {machine()}.

{table_text}

Reproduce: `python benchmarks/bench_kernels.py [--threads N] [--quick]` or `make bench`.
"""


def main(args=ARGS) -> int:
    args.allocator = pin_allocator() if args.malloc == "pinned" else "default malloc"
    rounds = QUICK_ROUNDS if args.quick else ROUNDS
    rows = [row for size in selected_sizes(args) for row in bench(size, rounds)]
    text = section(rows, args)
    if (not args.quick or args.write) and not args.no_write:
        write_section(HEADING, text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
