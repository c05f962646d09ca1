"""Command line: ``python -m tinygrad_mha <command>``."""

from __future__ import annotations

import argparse
import sys
import time

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
        print(f"  {case.name:<44} {status:<22} {1e3 * (time.perf_counter() - start):6.1f} ms", file=out)
    print(f"{len(CATALOG) - failures} of {len(CATALOG)} op cases passed", file=out)
    return failures


def demo(args) -> int:
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
    print(f"gradcheck of the attention step (float64, every element): {'passed' if passed else 'FAILED'}")

    # The Keras reference page's two examples, then a float64 gradcheck of a whole layer.
    layer = tm.MultiHeadAttention(num_heads=2, key_dim=2)
    layer.to(args.device)
    target, source = rng.random((3, 8, 16)), rng.random((3, 4, 16))
    output, scores = layer(target, source, return_attention_scores=True)
    print(f"MultiHeadAttention(num_heads=2, key_dim=2): output {output.shape}, scores {scores.shape}")
    layer = tm.MultiHeadAttention(num_heads=2, key_dim=2, attention_axes=(2, 3)).to(args.device)
    image = rng.random((3, 5, 3, 4, 16))
    print(f"MultiHeadAttention(attention_axes=(2, 3)) on {image.shape}: output {layer(image, image).shape}")
    layer = tm.MultiHeadAttention(num_heads=2, key_dim=3, dtype="float64", use_gate=True)
    x = tm.Tensor(rng.standard_normal((2, 4, 6)), requires_grad=True)
    layer(x, x)
    passed = tm.gradcheck(lambda x, *w: layer(x, x, use_causal_mask=True), (x, *layer.weights))
    print(f"gradcheck of a causal, gated MultiHeadAttention (input and all {len(layer.weights)} weights): "
          f"{'passed' if passed else 'FAILED'}")
    print("gradcheck report of every op:")
    return 1 if _gradcheck_report() else 0


def gradcheck_cmd(args) -> int:
    return 1 if _gradcheck_report() else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinygrad_mha",
                                     description="tinygrad_mha: autodiff and attention for learning")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="run the main demonstration")
    p.add_argument("--device", default="cpu", help='"cpu" or "cuda"')
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=demo)
    p = sub.add_parser("gradcheck", help="gradcheck every differentiable op and print a report")
    p.set_defaults(run=gradcheck_cmd)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
