"""One Keras-style self-attention training step: tinygrad_mha against hand-written NumPy (and PyTorch).

The step, for x of shape (B, T, E), H heads of key_dim D = E/H, biases on every projection:

    out = MultiHeadAttention(x, x)             # query = key = value = x
    loss = sum(out * R)                        # R: a fixed random (B, T, E) array
    gradients of loss for x and all 8 weights  # query/key/value/output kernel and bias

Implementations, each timed as one forward plus backward:

* **tinygrad_mha**: ``tm.MultiHeadAttention`` on Tensors, ``loss.backward()``.
* **numpy**: the same step written by hand with explicit forward and backward formulas, in
  two ways a good engineer would try: ``separate`` (three projection matmuls, as the layer's
  weights are stored) and ``fused`` (the three projection kernels concatenated into one
  (E, 3E) matrix per step, so forward and backward each make one big matmul instead of
  three). Both work on views (no transposing copies), in place where they own the array
  (softmax, its gradient, biases), and never leave float32. The faster of the two per size
  is the reference, and the table says which. Both are checked against central finite
  differences on a tiny float64 instance, and against the framework's gradients at every
  benchmarked size.
* **torch**: ``torch.nn.MultiheadAttention`` (CPU, eager, ``need_weights=False``) with the
  same weights, when PyTorch is importable (it is never a dependency); checked against NumPy.

Timings are medians over interleaved rounds in one process (each implementation once per
round, after warm-up; PyTorch in its own rounds right after, because its OpenMP threads keep
spinning after each op and slow down whatever runs next), BLAS and PyTorch pinned to the
same thread count, glibc malloc pinned
(see ``_timing.pin_allocator``). Peak memory per step is measured with ``tracemalloc`` (which
sees NumPy's buffers, not PyTorch's) in a separate pass: the most memory the step held at
once beyond what was allocated when it started.

    python benchmarks/bench_mha.py               # full run, rewrites its section of RESULTS.md
    python benchmarks/bench_mha.py --quick       # smoke run, prints only
    python -m tinygrad_mha bench                 # this and bench_ops.py, with a progress display
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # for _timing, run as a script or imported
from _timing import (SIZES, calibrate, machine, parse_args, pin_allocator, pin_threads, sample,  # noqa: E402
                     selected_sizes, write_section)


ARGS = parse_args(__doc__.split("\n")[0], None if __name__ == "__main__" else [])
if __name__ == "__main__":  # thread counts must be fixed before NumPy (and its BLAS) is imported
    pin_threads(ARGS.threads)

import gc  # noqa: E402
import statistics  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402

import tinygrad_mha as tm  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

try:
    import torch
except ImportError:  # optional: the torch column is left out
    torch = None

ROUNDS = {"small": 40, "medium": 25, "large": 15}
QUICK_ROUNDS = {"small": 5, "medium": 3, "large": 2}
MIN_SAMPLE_S = 0.01  # a timed sample repeats the step until it lasts at least this long
HEADING = "## MultiHeadAttention training step (bench_mha.py)"
TARGETS = {"small": 1.5, "medium": 1.15, "large": 1.15}  # time ratio to NumPy (issue 6)
MEMORY_TARGET = 1.3
WEIGHTS = ("wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo")  # the layer's weight order


# ---------------------------------------------------------------- the hand-written step
def numpy_mha_step(x, R, w, fused=False):
    """Loss and gradients ``{"x": dx, "wq": dWq, ...}`` of one self-attention step, by hand.

    Shapes: x, R (B, T, E); wq, wk, wv (E, H, D); bq, bk, bv (H, D); wo (H, D, E); bo (E,).
    Every array is worked on as (rows, features) matrices or as (B, H, T, .) views of them;
    ``matmul(..., out=view)`` writes head-major results straight into row-major storage.
    """
    B, T, E = x.shape
    H, D = w["bq"].shape
    HD, BT = H * D, B * T
    scale = x.dtype.type(1.0 / np.sqrt(D))
    x2, dout = x.reshape(BT, E), R.reshape(BT, E)
    kernels = [w[n].reshape(E, HD) for n in ("wq", "wk", "wv")]
    wo = w["wo"].reshape(HD, E)

    def heads(a):  # (B*T, H*D) rows -> a (B, H, T, D) view
        return a.reshape(B, T, H, D).transpose(0, 2, 1, 3)

    # forward
    if fused:  # one (B*T, E) @ (E, 3*H*D) matmul for query, key and value
        w_qkv = np.concatenate(kernels, axis=1)
        qkv = x2 @ w_qkv
        qkv += np.concatenate([w[n].reshape(HD) for n in ("bq", "bk", "bv")])
        q, k, v = qkv[:, :HD], qkv[:, HD:2 * HD], qkv[:, 2 * HD:]
    else:
        q, k, v = (x2 @ kern for kern in kernels)
        for a, n in ((q, "bq"), (k, "bk"), (v, "bv")):
            a += w[n].reshape(HD)
    q *= scale  # scale the query (B*T*H*D numbers), not the scores (B*H*T*T)
    qh, kh, vh = heads(q), heads(k), heads(v)
    p = qh @ kh.swapaxes(-1, -2)  # scores (B, H, T, T), turned into probabilities in place
    p -= p.max(axis=-1, keepdims=True)
    np.exp(p, out=p)
    p /= p.sum(axis=-1, keepdims=True)
    ctx = np.empty((B, T, H, D), x.dtype)
    np.matmul(p, vh, out=ctx.transpose(0, 2, 1, 3))
    ctx2 = ctx.reshape(BT, HD)
    out = ctx2 @ wo
    out += w["bo"]
    loss = np.vdot(out, R)

    # backward (dout = d loss / d out = R)
    g = {"bo": dout.sum(axis=0), "wo": (ctx2.T @ dout).reshape(H, D, E)}
    dctx = heads(dout @ wo.T)
    dp = dctx @ vh.swapaxes(-1, -2)
    d_qkv = np.empty((BT, 3 * HD), x.dtype)  # dq | dk | dv side by side, as the fused kernel wants
    dq, dk, dv = d_qkv[:, :HD], d_qkv[:, HD:2 * HD], d_qkv[:, 2 * HD:]
    np.matmul(p.swapaxes(-1, -2), dctx, out=heads(dv))
    # softmax backward in place: ds = p * (dp - rowsum(dp * p)); einsum forms the row sums
    # without a (B, H, T, T) temporary.
    dp -= np.einsum("bhts,bhts->bht", dp, p)[..., None]
    dp *= p
    np.matmul(dp, kh, out=heads(dq))
    dq *= scale
    np.matmul(dp.swapaxes(-1, -2), qh, out=heads(dk))
    del dp, p
    if fused:
        dw = x2.T @ d_qkv
        db = d_qkv.sum(axis=0)
        dx = d_qkv @ w_qkv.T
        for i, n in enumerate("qkv"):
            g["w" + n] = dw[:, i * HD:(i + 1) * HD].reshape(E, H, D)
            g["b" + n] = db[i * HD:(i + 1) * HD].reshape(H, D)
    else:
        dx = None
        for d, kern, n in ((dq, kernels[0], "q"), (dk, kernels[1], "k"), (dv, kernels[2], "v")):
            g["w" + n] = (x2.T @ d).reshape(E, H, D)
            g["b" + n] = d.sum(axis=0).reshape(H, D)
            if dx is None:
                dx = d @ kern.T
            else:
                dx += d @ kern.T
    g["x"] = dx.reshape(B, T, E)
    return loss, g


def finite_difference_check(fused, rng, eps=1e-6):
    """Central differences of the loss against ``numpy_mha_step``'s gradients (tiny, float64)."""
    B, T, E, H = 2, 3, 4, 2
    D = E // H
    shapes = {"x": (B, T, E), "wq": (E, H, D), "bq": (H, D), "wk": (E, H, D), "bk": (H, D),
              "wv": (E, H, D), "bv": (H, D), "wo": (H, D, E), "bo": (E,)}
    values = {n: rng.standard_normal(s) for n, s in shapes.items()}
    R = rng.standard_normal((B, T, E))

    def loss_of(vals):
        return numpy_mha_step(vals["x"], R, {n: vals[n] for n in WEIGHTS}, fused)[0]

    _, grads = numpy_mha_step(values["x"], R, {n: values[n] for n in WEIGHTS}, fused)
    for name, array in values.items():
        numeric = np.zeros_like(array)
        for i in np.ndindex(array.shape):
            old = array[i]
            array[i] = old + eps
            up = loss_of(values)
            array[i] = old - eps
            down = loss_of(values)
            array[i] = old
            numeric[i] = (up - down) / (2 * eps)
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-6, atol=1e-8,
                                   err_msg=f"hand-written NumPy ({'fused' if fused else 'separate'}): "
                                           f"d loss / d {name} differs from finite differences")
    return values, R, grads


def assert_close(got, want, what, rtol=1e-3, scale=None):
    """``got`` equals ``want`` up to ``rtol`` of ``scale`` (default: ``want``'s largest entry)."""
    scale = scale or float(np.abs(want).max()) or 1.0
    err = float(np.abs(np.asarray(got, dtype=np.float64) - want).max())
    if not err <= rtol * scale:
        raise AssertionError(f"{what}: max abs difference {err:.3g} > {rtol} x max |reference| {scale:.3g}")


# ---------------------------------------------------------------- the three steps
# Each step frees what its previous call returned before it starts, and keeps its own results
# (loss and gradients) alive until then: the same lifetimes for every implementation.
def numpy_step(x, R, w, fused):
    held = [None]

    def run():
        held[0] = None
        held[0] = numpy_mha_step(x, R, w, fused)
        return held[0]
    return run


def make_layer(E, H, dtype="float32"):
    layer = tm.MultiHeadAttention(num_heads=H, key_dim=E // H, dtype=dtype)
    layer.build((1, 1, E), (1, 1, E))
    return layer


def framework_grads(layer, xt):
    return {"x": xt.grad, **{n: wt.grad for n, wt in zip(WEIGHTS, layer.weights)}}


def framework_step(layer, xt, Rt, kernels=True):
    """The framework's step; ``kernels=False`` runs it on the reference ops
    (``tm.use_kernels(False)``), to show what the kernels buy."""
    held = [None]
    weights = layer.weights

    @tm.use_kernels(kernels)
    def run():
        held[0] = None
        xt.zero_grad()
        for wt in weights:
            wt.zero_grad()
        loss = (layer(xt, xt) * Rt).sum()
        loss.backward()
        held[0] = loss
        return loss
    return run


def torch_step(x, R, w, threads):
    """``torch.nn.MultiheadAttention`` with the same weights (PyTorch keeps kernels as (out, in))."""
    torch.set_num_threads(threads)
    B, T, E = x.shape
    H = w["bq"].shape[0]
    mha = torch.nn.MultiheadAttention(E, H, bias=True, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.from_numpy(
            np.concatenate([w[n].reshape(E, -1).T for n in ("wq", "wk", "wv")])))
        mha.in_proj_bias.copy_(torch.from_numpy(np.concatenate([w[n].reshape(-1) for n in ("bq", "bk", "bv")])))
        mha.out_proj.weight.copy_(torch.from_numpy(w["wo"].reshape(-1, E).T.copy()))
        mha.out_proj.bias.copy_(torch.from_numpy(w["bo"]))
    xt = torch.tensor(x, requires_grad=True)
    Rt = torch.from_numpy(R)
    held = [None]

    def run():
        held[0] = None
        xt.grad = None
        mha.zero_grad(set_to_none=True)
        out, _ = mha(xt, xt, xt, need_weights=False)
        loss = (out * Rt).sum()
        loss.backward()
        held[0] = loss
        return loss

    def grads():
        n = E  # H * D
        wi, bi = mha.in_proj_weight.grad.numpy(), mha.in_proj_bias.grad.numpy()
        g = {"x": xt.grad.numpy(), "wo": mha.out_proj.weight.grad.numpy().T.reshape(w["wo"].shape),
             "bo": mha.out_proj.bias.grad.numpy()}
        for i, c in enumerate("qkv"):
            g["w" + c] = wi[i * n:(i + 1) * n].T.reshape(w["w" + c].shape)
            g["b" + c] = bi[i * n:(i + 1) * n].reshape(w["b" + c].shape)
        return g
    return run, grads


def peak_memory(step) -> float:
    """MiB: the most ``step`` held at once beyond what was allocated when it started."""
    step()  # warm: the previous results exist, as in the timed loop
    gc.collect()
    tracemalloc.start()
    try:
        step()  # frees the previous results first (they were allocated before tracing: not counted)
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        step()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return max(peak - base, 0) / 2 ** 20


# ---------------------------------------------------------------- checks
def check_references(rng) -> str:
    """Hand-written NumPy against finite differences, and the framework against it (float64)."""
    for fused in (False, True):
        values, R, want = finite_difference_check(fused, rng)
    E, H = values["x"].shape[-1], values["bq"].shape[0]
    layer = make_layer(E, H, dtype="float64")
    layer.set_weights([values[n] for n in WEIGHTS])
    xt = tm.Tensor(values["x"], requires_grad=True)
    (layer(xt, xt) * tm.Tensor(R)).sum().backward()
    for name, got in framework_grads(layer, xt).items():
        np.testing.assert_allclose(got, want[name], rtol=1e-9, atol=1e-12,
                                   err_msg=f"tinygrad_mha: d loss / d {name} differs from hand-written NumPy")
    return ("hand-written NumPy (both variants) matches central finite differences on a float64\n"
            "(B,T,E,H)=(2,3,4,2) instance, and tinygrad_mha's gradients match it there to 1e-9")


def check_gradients(got, ref, who, size):
    for k in ref:
        # The key bias gets exactly zero gradient (softmax ignores a constant added to a row of
        # scores), so in float32 only rounding noise is left: compare it at the query bias' scale.
        scale = float(np.abs(ref["bq"]).max()) if k == "bk" else None
        assert_close(got[k], ref[k], f"{who} d loss / d {k} ({size})", scale=scale)


def setup_size(size, rng):
    """Inputs, weights and the step functions of every implementation for one size (checked)."""
    B, T, E, H = SIZES[size]
    layer = make_layer(E, H)
    w = {n: rng.standard_normal(wt.shape, dtype=np.float32) * np.float32(1 / np.sqrt(E))
         for n, wt in zip(WEIGHTS, layer.weights)}
    layer.set_weights([w[n] for n in WEIGHTS])
    x = rng.standard_normal((B, T, E), dtype=np.float32)
    R = rng.standard_normal((B, T, E), dtype=np.float32)
    xt, Rt = tm.Tensor(x, requires_grad=True), tm.Tensor(R)
    steps = {"numpy separate": numpy_step(x, R, w, False), "numpy fused": numpy_step(x, R, w, True),
             "tinygrad_mha": framework_step(layer, xt, Rt),
             "tinygrad_mha reference": framework_step(layer, xt, Rt, kernels=False)}
    # Float32 checks before any timing: both NumPy variants and the framework agree.
    ref_loss, ref = numpy_mha_step(x.astype(np.float64), R.astype(np.float64),
                                   {n: a.astype(np.float64) for n, a in w.items()})
    for name in ("numpy separate", "numpy fused"):
        loss, got = steps[name]()
        assert_close(loss, ref_loss, f"{name} loss ({size})")
        check_gradients(got, ref, name, size)
    for name in ("tinygrad_mha reference", "tinygrad_mha"):  # (the framework's grads last)
        loss = steps[name]()
        assert_close(loss.item(), ref_loss, f"{name} loss ({size})")
        check_gradients(framework_grads(layer, xt), ref, name, size)
    if torch is not None:
        run, grads = torch_step(x, R, w, ARGS.threads)
        run()
        check_gradients(grads(), ref, "torch", size)
        steps["torch"] = run
    return steps


def bench_size(size, rounds, rng, bar):
    steps = setup_size(size, rng)
    ours = [k for k in steps if k != "torch"]
    numbers = {k: calibrate(steps[k], MIN_SAMPLE_S) for k in ours}
    samples = {k: [] for k in steps}
    for r in range(rounds):  # interleaved: every implementation once per round, order alternating
        for k in (ours if r % 2 == 0 else ours[::-1]):
            samples[k].append(sample(steps[k], numbers[k]))
        bar.set_postfix(size=size, refresh=False)
        bar.update()
    # PyTorch gets its own rounds, right after: its OpenMP threads keep spinning after each op
    # and slow down whatever runs next on a small machine (interleaved, they made the NumPy and
    # tinygrad_mha steps up to 1.5x slower; a pause after each PyTorch step made PyTorch 8x slower).
    if "torch" in steps:
        numbers["torch"] = calibrate(steps["torch"], MIN_SAMPLE_S)
    for r in range(rounds if "torch" in steps else 0):
        samples["torch"].append(sample(steps["torch"], numbers["torch"]))
        bar.set_postfix(size=size + " (torch)", refresh=False)
        bar.update()
    med = {k: statistics.median(v) * 1e3 for k, v in samples.items()}
    ref = min(("numpy separate", "numpy fused"), key=med.get)
    other = "numpy fused" if ref == "numpy separate" else "numpy separate"
    mem = {k: peak_memory(steps[k]) for k in (ref, "tinygrad_mha")}
    row = {"size": size, "shape": SIZES[size], "numpy_ms": med[ref], "ref": ref.split()[1],
           "other_ms": med[other], "tm_ms": med["tinygrad_mha"], "ratio": med["tinygrad_mha"] / med[ref],
           "reference_ms": med["tinygrad_mha reference"],
           "reference_ratio": med["tinygrad_mha reference"] / med[ref],
           "numpy_mib": mem[ref], "tm_mib": mem["tinygrad_mha"],
           "mem_ratio": mem["tinygrad_mha"] / mem[ref]}
    if "torch" in med:
        row.update(torch_ms=med["torch"], torch_ratio=med["tinygrad_mha"] / med["torch"])
    return row


# ---------------------------------------------------------------- reporting
def table(rows) -> str:
    with_torch = any("torch_ms" in r for r in rows)
    head = ("| size | (B,T,E,H) | numpy step ms | numpy ref | other numpy ms | tinygrad_mha step ms"
            " | time ratio | reference ops ms | reference ratio |"
            + (" torch step ms | ratio to torch |" if with_torch else "")
            + " numpy peak MiB | tinygrad_mha peak MiB | memory ratio |")
    lines = [head, "|---|---|---:|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if with_torch else "")
             + "---:|---:|---:|"]
    for r in rows:
        torch_cells = ""
        if with_torch:
            torch_cells = (f" {r['torch_ms']:.3f} | {r['torch_ratio']:.2f}x |" if "torch_ms" in r else " - | - |")
        lines.append(f"| {r['size']} | {','.join(map(str, r['shape']))} | {r['numpy_ms']:.3f} | {r['ref']} | "
                     f"{r['other_ms']:.3f} | {r['tm_ms']:.3f} | {r['ratio']:.2f}x | "
                     f"{r['reference_ms']:.3f} | {r['reference_ratio']:.2f}x |{torch_cells} "
                     f"{r['numpy_mib']:.2f} | {r['tm_mib']:.2f} | {r['mem_ratio']:.2f}x |")
    return "\n".join(lines)


def verdict(rows) -> str:
    lines = []
    for r in rows:
        t, m = r["ratio"] <= TARGETS[r["size"]], r["mem_ratio"] <= MEMORY_TARGET
        lines.append(f"- {r['size']}: time {r['ratio']:.2f}x (target <= {TARGETS[r['size']]}x) "
                     f"{'met' if t else 'NOT met'}; memory {r['mem_ratio']:.2f}x (target <= "
                     f"{MEMORY_TARGET}x) {'met' if m else 'NOT met'}")
    return "\n".join(lines)


def section(rows, args, checks) -> str:
    rounds = QUICK_ROUNDS if args.quick else ROUNDS
    torch_note = (f"PyTorch {torch.__version__} (`torch.nn.MultiheadAttention`, CPU eager,\n"
                  f"`need_weights=False`, {args.threads} thread(s), the same weights) is shown for "
                  "comparison. It is timed in\nits own rounds right after the others: its OpenMP "
                  "threads spin after each op and slowed\nwhatever ran next by up to 1.5x when "
                  "interleaved. Its memory is not visible to tracemalloc." if torch is not None
                  else "PyTorch was not importable, so its column is left out.")
    torch_source = ""
    if torch is not None and not os.path.abspath(torch.__file__).startswith(os.path.abspath(sys.prefix)):
        torch_source = (" (for this table it came from a separate virtual environment:\n"
                        "`PYTHONPATH=<its site-packages> python benchmarks/bench_mha.py`)")
    return f"""{HEADING}

One Keras-style self-attention training step in float32: x of shape (B, T, E),
`MultiHeadAttention(num_heads=H, key_dim=E/H)` with biases and the output projection,
loss `sum(out * R)`, gradients for x and all 8 weights. *numpy step* is the faster of two
hand-written NumPy versions of the same forward and backward formulas (`separate`: three
projection matmuls; `fused`: the three kernels concatenated into one matmul); the other is
*other numpy ms*.

{torch_note}

Checks before timing: {checks}; at every size below, every gradient of every
implementation matches a float64 NumPy evaluation.

Medians of interleaved rounds in one process ({", ".join(f"{k}: {v}" for k, v in rounds.items())}
rounds, after warm-up), {args.threads} BLAS thread(s), {args.allocator}. Peak memory is
tracemalloc's peak during one step minus what was allocated when it started (the NumPy
reference's row is for the faster variant).

Machine: {machine()}.

{table(rows)}

*tinygrad_mha step* runs the kernels (`tinygrad_mha/kernels/`, the default); *reference ops*
is the same step under `tm.use_kernels(False)`, on the reference definitions in
`tinygrad_mha/ops/` that the tutorials print, timed in the same interleaved rounds. Their
ratio is what the kernels buy. The machine is shared (2 cores, other jobs running), so
absolute times are noisy; ratios measured in the same rounds are the figures to read.

Targets (issue 6: time <= 1.15x NumPy at medium and large, <= 1.5x at small; memory <= 1.3x):
{verdict(rows)}

How to read it (kernels): the step records 7 ops forward (three projections, each one `TensorDot` node
that is one matrix product plus its bias; one attention node for scores, softmax and context;
the output projection; the loss' product and sum). Without create_graph nothing records a
backward, so the projection gradients, the attention gradients and the bias sums run straight
on arrays, and the engine orders the 7 nodes by their sequence numbers. From the medium size
on, the matmuls and the softmax dominate and run at NumPy's speed; what remains is the float32
passes the layer structure adds (the loss' product and its gradient, summing x's three gradient
contributions, the scale applied to a copy of the query). At the small size the step is
Python: about 0.15 ms of dispatch and bookkeeping (a (1, 2, 4, 1) step takes ~0.2 ms against
NumPy's ~0.05 ms), plus three separate projection matmuls (as Keras keeps the weights) where
the fused NumPy version makes one. (Stacking the three kernels each step to make one matmul
was tried: the stack, its gradient and the strided query/key/value views cost what the single
matmul saved.)

GPU figures pending: no GPU was available for this run. The test suite runs every
device-parametrised test on "cuda" through `tests/fake_cupy.py`, a NumPy-made stand-in that
refuses host arrays as CuPy does, so every op is known to go through `tinygrad_mha.backend`
and keep its arrays on the device; CuPy's own kernels and speed are not measured.

Reproduce: `python benchmarks/bench_mha.py [--threads N] [--quick]` or `python -m tinygrad_mha bench`.
PyTorch is used when importable; it is no dependency{torch_source}.
"""


def main(args=ARGS) -> int:
    rounds = QUICK_ROUNDS if args.quick else ROUNDS
    sizes = selected_sizes(args)
    args.allocator = pin_allocator() if args.malloc == "pinned" else "default malloc"
    print(f"# {machine()}; {args.threads} thread(s); {args.allocator}"
          f"{'; torch ' + torch.__version__ if torch is not None else '; no torch'}"
          f"{'; quick' if args.quick else ''}", flush=True)
    rng = np.random.default_rng(0)
    checks = check_references(rng)
    print(f"# checks: {checks}".replace("\n", " "), flush=True)
    bar = tqdm(total=sum(rounds[s] for s in sizes) * (2 if torch is not None else 1), desc="bench_mha")
    rows = [bench_size(size, rounds[size], rng, bar) for size in sizes]
    bar.close()
    print(table(rows))
    print(verdict(rows), flush=True)
    if (not args.quick or args.write) and not args.no_write:
        write_section(HEADING, section(rows, args, checks))
        print(f"\nwrote {os.path.join('benchmarks', 'RESULTS.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
