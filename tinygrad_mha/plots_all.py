"""Regenerate every figure in ``plots/``: ``make plots`` or ``python -m tinygrad_mha plots``.

    attention_reverse.png, loss_reverse.png    the demo's model trained to reverse digits
    attention_sort.png, loss_sort.png          ... and to sort them
    attention_2d.png                           2-D attention over a 4x4 grid (attention_axes=(1, 2))
    gradcheck_error_vs_eps.png                 the V of finite-difference error against eps
    computational_graph.png                    the graph of tanh(x @ w + b) and its loss
    benchmark_bars.png                         benchmarks/RESULTS.md, or a quick measurement
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from . import plotting
from .demo import TASKS, blas_threads, train, write_plots
from .layers import MultiHeadAttention
from .layers.positional_encoding import sinusoidal_table
from .ops import einsum
from .tensor import Tensor, no_grad

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "RESULTS.md"


def attention_2d(path) -> str:
    """Two heads over a 4x4 grid, wired by hand: head 0 looks along its row, head 1 its column.

    Each pixel's 16 features are the sinusoidal encoding of its row (8) and of its column (8).
    Head 0's query and key kernels keep only the row features, head 1's only the column ones,
    so a pixel's score is highest for pixels in the same row (head 0) or column (head 1).
    """
    rows = cols = 4
    row_enc, col_enc = sinusoidal_table(rows, 8), sinusoidal_table(cols, 8)
    grid = np.concatenate([np.repeat(row_enc[:, None, :], cols, axis=1),
                           np.repeat(col_enc[None, :, :], rows, axis=0)],
                          axis=-1)[None]  # (1, 4, 4, 16)
    layer = MultiHeadAttention(num_heads=2, key_dim=8, attention_axes=(1, 2), dtype="float64")
    layer.build(grid.shape, grid.shape)
    select = np.zeros((16, 2, 8))
    select[:8, 0, :] = np.eye(8) * 3.0  # head 0: row features
    select[8:, 1, :] = np.eye(8) * 3.0  # head 1: column features
    weights = layer.get_weights()
    weights[0], weights[2] = select, select  # query kernel, key kernel
    layer.set_weights(weights)
    with no_grad():
        _, scores = layer(grid, grid, return_attention_scores=True)  # (1, 2, 4, 4, 4, 4)
    return plotting.attention_heatmaps(
        scores, path,
        title="2-D attention over a 4x4 grid: head 0 attends along rows, head 1 along columns")


def computational_graph(path) -> str:
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((2, 3)))
    w = Tensor(rng.standard_normal((3, 2)), requires_grad=True)
    b = Tensor(np.zeros(2), requires_grad=True)
    x.name, w.name, b.name = "x", "w", "b"
    y = (x @ w + b).tanh()
    loss = (y * y).sum()
    return plotting.computational_graph(loss, path, title="loss = sum(tanh(x @ w + b) ** 2)")


def _quick_benchmark_rows():
    """Forward + backward of the attention einsums at a small size: framework vs np.einsum."""
    rng = np.random.default_rng(0)
    B, T, E, H, D = 8, 32, 64, 4, 16
    cases = [("projection", "abc,cde->abde", (B, T, E), (E, H, D)),
             ("scores", "aecd,abcd->acbe", (B, T, H, D), (B, T, H, D)),
             ("context", "acbe,aecd->abcd", (B, H, T, T), (B, T, H, D)),
             ("output", "abcd,cde->abe", (B, T, H, D), (H, D, E))]
    rows = []
    for name, eq, sa, sb in cases:
        a, b = rng.standard_normal(sa, dtype=np.float32), rng.standard_normal(sb, dtype=np.float32)
        (ta, tb), out = eq.split("->")[0].split(","), eq.split("->")[1]
        g = rng.standard_normal(np.einsum(eq, a, b).shape, dtype=np.float32)

        def numpy_step():
            np.einsum(eq, a, b, optimize=True)
            np.einsum(f"{out},{tb}->{ta}", g, b, optimize=True)
            np.einsum(f"{ta},{out}->{tb}", a, g, optimize=True)

        xa, xb = Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)

        def framework_step():
            einsum(eq, xa, xb).backward(g)

        times = {}
        for label, fn in (("numpy", numpy_step), ("tinygrad_mha", framework_step)):
            fn()
            samples = []
            for _ in range(5):
                start = time.perf_counter()
                for _ in range(10):
                    fn()
                samples.append((time.perf_counter() - start) / 10 * 1e3)
            times[label] = float(np.median(samples))
        rows.append({"label": f"{name} (B,T,E,H)=({B},{T},{E},{H})", **times})
    return rows


def benchmark_bars(path) -> tuple[str, str]:
    rows = [{"label": r["label"], "numpy": r["numpy"], "tinygrad_mha": r["framework"]}
            for r in plotting.read_results_table(RESULTS)]
    if rows:
        source = f"from {RESULTS.name}"
        title = "einsum forward + backward (benchmarks/RESULTS.md)"
    else:
        rows, source = _quick_benchmark_rows(), "quick measurement (no benchmarks/RESULTS.md)"
        title = "einsum forward + backward (quick measurement)"
    return plotting.benchmark_bars(rows, path, title=title), source


def main(args=None) -> int:
    if args is None or isinstance(args, list):
        parser = argparse.ArgumentParser(description="regenerate every figure in plots/")
        parser.add_argument("--out", default="plots")
        parser.add_argument("--quick", action="store_true")
        args = parser.parse_args(args)
    out = args.out
    os.makedirs(out, exist_ok=True)
    start = time.perf_counter()
    with blas_threads(1):
        for task in TASKS:
            result = train(task, steps=40 if args.quick else None, seed=0, progress=not args.quick)
            for path in write_plots(result, task, out):
                print(f"wrote {path}  ({task}: {100 * result.token_accuracy:.1f}% digit accuracy)")
        print(f"wrote {attention_2d(os.path.join(out, 'attention_2d.png'))}")
        eps_path = os.path.join(out, 'gradcheck_error_vs_eps.png')
        print(f"wrote {plotting.gradcheck_error_vs_eps(eps_path)}")
        print(f"wrote {computational_graph(os.path.join(out, 'computational_graph.png'))}")
        path, source = benchmark_bars(os.path.join(out, "benchmark_bars.png"))
        print(f"wrote {path}  ({source})")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
