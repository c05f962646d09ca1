"""Command line: ``python -m tinygrad_mha <command>``.

    demo        train a small attention model on a digit task (the main job)
    gradcheck   a tour of the engine and MultiHeadAttention, then gradcheck every op
    exercises   the exercise grader (python -m tinygrad_mha.exercises ...)
    bench       run the benchmarks in benchmarks/
    plots       regenerate every figure in plots/
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _gradcheck_report(out=sys.stdout) -> int:
    """Gradcheck every op in the catalog (float64) and print one line per op; return failures."""
    from .gradcheck import GradcheckError, gradcheck, gradgradcheck
    from .op_catalog import CATALOG

    failures = 0
    for case in CATALOG:
        start = time.perf_counter()
        try:
            gradcheck(case.fn, case.inputs())
            status = "ok"
            if case.second_order:
                gradgradcheck(case.fn, case.inputs())
                status = "ok (1st + 2nd order)"
        except GradcheckError as exc:
            failures += 1
            status = f"FAILED: {exc}"
        print(f"  {case.name:<44} {status:<22} "
              f"{1e3 * (time.perf_counter() - start):6.1f} ms", file=out)
    print(f"{len(CATALOG) - failures} of {len(CATALOG)} op cases passed", file=out)
    return failures


def engine_tour(args) -> int:
    """Scaled dot-product attention on a toy batch: forward, backward, then a gradcheck report."""
    import tinygrad_mha as tm

    tm.set_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    b, t, s, d = 2, 4, 5, 8
    causal = np.tril(np.ones((t, s), dtype=bool))

    def attention(q, k, v):
        scores = tm.einsum("btd,bsd->bts", q, k) / np.sqrt(d)
        return tm.einsum("bts,bsd->btd", tm.softmax(scores, axis=-1, mask=causal), v)

    q, k, v = (tm.Tensor(rng.standard_normal(shape), requires_grad=True, device=args.device)
               for shape in ((b, t, d), (b, s, d), (b, s, d)))
    out = attention(q, k, v)
    loss = (out * out).mean()
    loss.backward()
    print(f"causal attention on {q.device}: output {out.shape}, loss {loss.item():.6f}")
    for name, x in (("query", q), ("key", k), ("value", v)):
        print(f"  |d loss / d {name}| = {np.linalg.norm(tm.Tensor(x.grad).numpy()):.6f}")
    passed = tm.gradcheck(attention, (q, k, v))
    print("gradcheck of the attention step (float64, every element): "
          f"{'passed' if passed else 'FAILED'}")

    # The Keras reference page's two examples, then a float64 gradcheck of a whole layer.
    layer = tm.MultiHeadAttention(num_heads=2, key_dim=2)
    layer.to(args.device)
    target, source = rng.random((3, 8, 16)), rng.random((3, 4, 16))
    output, scores = layer(target, source, return_attention_scores=True)
    print(f"MultiHeadAttention(num_heads=2, key_dim=2): output {output.shape}, "
          f"scores {scores.shape}")
    layer = tm.MultiHeadAttention(num_heads=2, key_dim=2, attention_axes=(2, 3)).to(args.device)
    image = rng.random((3, 5, 3, 4, 16))
    print(f"MultiHeadAttention(attention_axes=(2, 3)) on {image.shape}: "
          f"output {layer(image, image).shape}")
    layer = tm.MultiHeadAttention(num_heads=2, key_dim=3, dtype="float64", use_gate=True)
    x = tm.Tensor(rng.standard_normal((2, 4, 6)), requires_grad=True)
    layer(x, x)
    passed = tm.gradcheck(lambda x, *w: layer(x, x, use_causal_mask=True), (x, *layer.weights))
    print("gradcheck of a causal, gated MultiHeadAttention "
          f"(input and all {len(layer.weights)} weights): "
          f"{'passed' if passed else 'FAILED'}")
    print("gradcheck report of every op:")
    return 1 if _gradcheck_report() else 0


def gradcheck_cmd(args) -> int:
    return engine_tour(args)


def demo(args) -> int:
    """The main job: see ``tinygrad_mha.demo``."""
    from . import demo as demo_module
    return demo_module.run(args)


def exercises_cmd(args) -> int:
    """Hand the remaining arguments to ``python -m tinygrad_mha.exercises``."""
    from . import exercises
    return exercises.main(args.rest, prog="python -m tinygrad_mha exercises")


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def bench_cmd(args) -> int:
    """Run benchmarks/bench_ops.py, bench_kernels.py, bench_mha.py and bench_long.py (those
    present), passing the extra arguments."""
    names = ("bench_ops.py", "bench_kernels.py", "bench_mha.py", "bench_long.py")
    scripts = [BENCHMARKS / name for name in names if (BENCHMARKS / name).exists()]
    if not scripts:
        print("bench needs a clone of the repository: the benchmark scripts "
              "(benchmarks/bench_ops.py, bench_mha.py) are not part of the installed package, "
              "and there are none in "
              f"{BENCHMARKS}. In a clone, run `make bench` or `python -m tinygrad_mha bench`.",
              file=sys.stderr)
        return 1
    status = 0
    for script in scripts:
        print(f"$ python {script.relative_to(BENCHMARKS.parent)} "
              f"{' '.join(args.rest)}".rstrip(), flush=True)
        status = max(status, subprocess.call([sys.executable, str(script), *args.rest]))
    return status


def plots_cmd(args) -> int:
    from . import plots_all
    return plots_all.main(args)


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text!r}")
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinygrad_mha",
                                     description="tinygrad_mha: autodiff and attention "
                                                 "for learning")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    from .demo import TASKS

    p = sub.add_parser("demo", help="train a small attention model on a digit task (the main job)",
                       description="Train Embedding + PositionalEncoding + MultiHeadAttention "
                                   "+ a feed-forward head on a synthetic digit task, report its "
                                   "accuracy, gradcheck it and write the loss curve and attention "
                                   "heatmaps.")
    p.add_argument("--task", default="reverse", choices=sorted(TASKS),
                   help="reverse (default) or sort a sequence of digits")
    defaults = ", ".join(f"{name} {task.default_steps}" for name, task in TASKS.items())
    p.add_argument("--steps", type=_positive, default=None,
                   help=f"training steps (default: {defaults})")
    p.add_argument("--seed", type=_non_negative, default=0,
                   help="seed for data, weights and batches (default 0)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="cpu (default) or cuda (needs CuPy)")
    p.add_argument("--out", default="plots", help="folder for the figures (default: plots)")
    p.add_argument("--length", type=_positive, default=8, help="digits per sequence (default 8)")
    p.add_argument("--batch-size", type=_positive, default=64,
                   help="sequences per step (default 64)")
    p.add_argument("--threads", type=_positive, default=1,
                   help="BLAS threads (default 1: the matrices are tiny)")
    p.add_argument("--target", type=float, default=0.95,
                   help="digit accuracy the run must reach for exit status 0 (default 0.95)")
    p.add_argument("--no-plots", action="store_true", help="do not write figures")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=demo)
    p = sub.add_parser("gradcheck",
                       help="tour the engine and MultiHeadAttention, then gradcheck every op")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--seed", type=_non_negative, default=0)
    p.set_defaults(run=gradcheck_cmd)
    p = sub.add_parser("exercises",
                       help="grade the exercises (python -m tinygrad_mha.exercises ...)",
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(run=exercises_cmd)
    p = sub.add_parser("bench",
                       help="run the benchmarks in benchmarks/ (extra arguments are passed on)",
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(run=bench_cmd)
    p = sub.add_parser("plots", help="regenerate every figure in plots/")
    p.add_argument("--out", default="plots", help="folder for the figures (default: plots)")
    p.add_argument("--quick", action="store_true", help="short training runs (for tests)")
    p.set_defaults(run=plots_cmd)
    argv = sys.argv[1:] if argv is None else list(argv)
    # everything after the command is passed on as is
    if argv and argv[0] in ("exercises", "bench"):
        args = argparse.Namespace(rest=argv[1:],
                                  run=exercises_cmd if argv[0] == "exercises" else bench_cmd)
    else:
        args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
