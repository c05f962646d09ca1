"""The main job: train a tiny attention model on a digit task, check its gradients, draw it.

    python -m tinygrad_mha demo                  # reverse 8 digits (default)
    python -m tinygrad_mha demo --task sort --seed 1 --out /tmp/plots

The tasks need attention: to reverse a sequence, output position i must copy the digit at
input position n-1-i, a position only attention can fetch; to sort, each position must see
every digit. The model is one transformer encoder block:

    digits -> Embedding -> + sinusoidal PositionalEncoding
           -> x + MultiHeadAttention(x, x) -> LayerNormalization
           -> x + Dense(relu) -> Dense -> LayerNormalization
           -> Dense(10): one set of logits per position

trained with cross-entropy and Adam through ``Model.fit``. Everything (data, initial weights,
batch order) comes from ``--seed``, and BLAS runs on one thread, so a run is bit-identical.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import backend
from .gradcheck import GradcheckError, gradcheck
from .layers import (Dense, Embedding, LayerNormalization, Model, MultiHeadAttention,
                     PositionalEncoding)
from .optimizers import Adam
from .tensor import Tensor, no_grad

VOCAB = 10  # the digits 0..9


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    target: Callable[[np.ndarray], np.ndarray]  # (N, L) digits -> (N, L) targets
    default_steps: int


TASKS = {
    "reverse": Task("reverse", "reverse a sequence of digits", lambda x: x[:, ::-1].copy(), 600),
    "sort": Task("sort", "sort a sequence of digits", lambda x: np.sort(x, axis=1), 1000),
}


def make_data(task: str, n: int, length: int, rng: np.random.Generator):
    """``n`` random digit sequences of ``length`` and their targets for ``task``."""
    x = rng.integers(0, VOCAB, size=(n, length))
    return x, TASKS[task].target(x)


# ---------------------------------------------------------------- the model
class AttentionModel(Model):
    """One transformer encoder block with a per-position classifier (see the module docstring)."""

    def __init__(self, vocab=VOCAB, d_model=32, num_heads=2, ff_dim=64, name=None, dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        self.config = dict(vocab=vocab, d_model=d_model, num_heads=num_heads, ff_dim=ff_dim)
        self.embed = Embedding(vocab, d_model, dtype=dtype)
        self.position = PositionalEncoding(dtype=dtype)
        self.attention = MultiHeadAttention(num_heads, key_dim=d_model // num_heads, dtype=dtype)
        self.norm1 = LayerNormalization(dtype=dtype)
        self.ff1 = Dense(ff_dim, activation="relu", dtype=dtype)
        self.ff2 = Dense(d_model, dtype=dtype)
        self.norm2 = LayerNormalization(dtype=dtype)
        self.classifier = Dense(vocab, dtype=dtype)

    def call(self, tokens, training=None, return_attention_scores=False):
        x = self.position(self.embed(tokens))
        attended, scores = self.attention(x, x, return_attention_scores=True, training=training)
        x = self.norm1(x + attended)
        x = self.norm2(x + self.ff2(self.ff1(x)))
        logits = self.classifier(x)
        return (logits, scores) if return_attention_scores else logits

    def describe(self) -> str:
        c = self.config
        return (f"Embedding({c['vocab']}, {c['d_model']}) + sinusoidal PositionalEncoding -> "
                f"MultiHeadAttention({c['num_heads']} heads, "
                f"key_dim {c['d_model'] // c['num_heads']}) "
                f"+ residual, LayerNorm -> Dense({c['ff_dim']}, relu), "
                f"Dense({c['d_model']}) + residual, "
                f"LayerNorm -> Dense({c['vocab']})")


# ---------------------------------------------------------------- training
@dataclass
class Result:
    model: AttentionModel
    history: object
    x_test: np.ndarray
    y_test: np.ndarray
    predictions: np.ndarray
    token_accuracy: float
    sequence_accuracy: float
    seconds: float


@contextlib.contextmanager
def blas_threads(n):
    """Limit BLAS to ``n`` threads inside the block (threadpoolctl, when installed).

    The demo's matrices are tiny (64*8 x 32), so threads only add synchronisation: one
    thread is several times faster, and much faster still on a busy machine.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield


def train(task="reverse", steps=None, seed=0, device="cpu", length=8, batch_size=64,
          learning_rate=3e-3, n_train=20000, n_test=2000, progress=True, model_kwargs=None,
          threads=1) -> Result:
    """Train an ``AttentionModel`` on ``task`` and measure it on held-out sequences.

    ``threads``: BLAS threads while training (None: leave BLAS as it is).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(TASKS)}")
    steps = TASKS[task].default_steps if steps is None else steps
    backend.set_seed(seed)  # initial weights
    rng = np.random.default_rng(seed)  # data
    x_train, y_train = make_data(task, n_train, length, rng)
    x_test, y_test = make_data(task, n_test, length, rng)
    model = AttentionModel(**(model_kwargs or {}))
    if device != "cpu":
        model.to(device)
    start = time.perf_counter()
    with blas_threads(threads) if threads else contextlib.nullcontext():
        history = model.fit(x_train, y_train, loss="sparse_categorical_crossentropy",
                            optimizer=lambda params: Adam(params, learning_rate=learning_rate),
                            steps=steps, batch_size=batch_size, metrics=["accuracy"], seed=seed,
                            progress=progress, progress_desc=task)
        seconds = time.perf_counter() - start
        predictions = model.predict(x_test, batch_size=500).argmax(-1)
    return Result(model, history, x_test, y_test, predictions,
                  token_accuracy=float(np.mean(predictions == y_test)),
                  sequence_accuracy=float(np.mean(np.all(predictions == y_test, axis=1))),
                  seconds=seconds)


# ---------------------------------------------------------------- gradient checks
def gradcheck_small_model(seed=0) -> tuple[bool, int]:
    """Every partial derivative of a tiny float64 copy of the architecture, by finite differences.

    Checks d(logits)/d(every weight): embeddings, attention projections, layer norms, dense
    layers. Returns (passed, number of scalar weights checked).
    """
    backend.set_seed(seed)
    model = AttentionModel(vocab=5, d_model=4, num_heads=2, ff_dim=6, dtype="float64")
    tokens = np.random.default_rng(seed).integers(0, 5, size=(2, 4))
    model(tokens)  # build
    weights = model.weights
    passed = gradcheck(lambda *w: model(tokens), weights)
    return passed, sum(w.size for w in weights)


def gradcheck_trained(model: AttentionModel, tokens: np.ndarray) -> tuple[bool, int]:
    """A float64 copy of the trained model: one random directional derivative per weight tensor."""
    copy = AttentionModel(**model.config, dtype="float64")
    copy(tokens[:1])
    copy.set_weights(model.get_weights())
    weights = copy.weights
    passed = gradcheck(lambda *w: copy(tokens), weights, fast=True, atol=1e-6, rtol=1e-4)
    return passed, len(weights)


def engine_check(seed=0) -> bool:
    """Scaled dot-product attention written with raw ops, gradchecked: the engine in one line."""
    from .ops import einsum, softmax

    rng = np.random.default_rng(seed)
    q, k, v = (Tensor(rng.standard_normal((2, 4, 3)), requires_grad=True) for _ in range(3))
    causal = np.tril(np.ones((4, 4), dtype=bool))

    def attention(q, k, v):
        scores = einsum("btd,bsd->bts", q, k) / np.sqrt(3)
        return einsum("bts,bsd->btd", softmax(scores, axis=-1, mask=causal), v)

    return gradcheck(attention, (q, k, v))


# ---------------------------------------------------------------- plots
def write_plots(result: Result, task: str, out: str) -> list[str]:
    """Loss curve and the attention of every head on the first test sequence."""
    from . import plotting

    tokens = result.x_test[:1]
    with no_grad():
        _, scores = result.model(tokens, return_attention_scores=True)
    digits = " ".join(map(str, tokens[0]))
    return [
        plotting.loss_curve(result.history, os.path.join(out, f"loss_{task}.png"),
                            title=f"Training loss: {TASKS[task].description}"),
        plotting.attention_heatmaps(scores, os.path.join(out, f"attention_{task}.png"),
                                    title=f"{task}: where each output position looks "
                                          f"(input {digits})",
                                    queries=[f"{i}: {d}"
                                             for i, d in enumerate(result.predictions[0])],
                                    keys=[f"{i}: {d}" for i, d in enumerate(tokens[0])],
                                    query_label="output position: predicted digit",
                                    key_label="input position: digit"),
    ]


# ---------------------------------------------------------------- the command
def _checked(check, *args):
    """Run a gradient check; (passed, size, "passed" or the GradcheckError's message)."""
    try:
        passed, size = check(*args)
    except GradcheckError as exc:
        return False, "?", f"FAILED: {exc}"
    return passed, size, "passed" if passed else "FAILED"


def run(args, out=sys.stdout) -> int:
    """``python -m tinygrad_mha demo``; returns the exit status (0: learned and all checks
    passed)."""
    backend.xp_for(args.device)  # a missing CuPy or GPU is reported before any work starts
    start = time.perf_counter()
    task = TASKS[args.task]
    steps = task.default_steps if args.steps is None else args.steps
    say = lambda *a: print(*a, file=out, flush=True)  # noqa: E731
    say(f"tinygrad_mha demo: {task.description} (task {task.name!r}, {args.length} digits), "
        f"seed {args.seed}, device {args.device}, {steps} steps")
    with blas_threads(args.threads):
        say(f"engine: gradcheck of causal scaled dot-product attention built from raw ops: "
            f"{'passed' if engine_check(args.seed) else 'FAILED'}")
        result = train(args.task, steps=steps, seed=args.seed, device=args.device,
                       length=args.length, batch_size=args.batch_size, progress=not args.quiet,
                       threads=args.threads)
        model = result.model
        say(f"model: {model.describe()}; {sum(w.size for w in model.weights)} weights")
        say(f"trained {len(result.history.steps)} steps of {args.batch_size} sequences in "
            f"{result.seconds:.1f} s")
        met = result.token_accuracy >= args.target
        say(f"accuracy on {len(result.x_test)} held-out sequences: "
            f"{100 * result.token_accuracy:.2f}% of digits, "
            f"{100 * result.sequence_accuracy:.2f}% of whole sequences (chance: 10% of digits) "
            f"-> {'OK' if met else 'BELOW'} the {100 * args.target:.0f}% target")
        digits = lambda row: " ".join(map(str, row))  # noqa: E731
        for x, pred, want in zip(result.x_test[:3], result.predictions[:3], result.y_test[:3]):
            verdict = "correct" if np.array_equal(pred, want) else f"target {digits(want)}"
            say(f"  input {digits(x)}  ->  predicted {digits(pred)}  ({verdict})")
        small_ok, n_small, why = _checked(gradcheck_small_model, args.seed)
        say(f"gradcheck: tiny float64 copy of the architecture, all {n_small} weights "
            f"elementwise: {why}")
        trained_ok, n_tensors, why = _checked(gradcheck_trained, model, result.x_test[:4])
        say(f"gradcheck: float64 copy of the trained model, a random direction in each of its "
            f"{n_tensors} weight tensors: {why}")
    if not args.no_plots:
        try:
            paths = write_plots(result, args.task, args.out)
            say("plots: " + ", ".join(paths))
        except RuntimeError as exc:  # matplotlib missing
            say(f"plots: skipped ({exc})")
    say(f"done in {time.perf_counter() - start:.1f} s")
    return 0 if met and small_ok and trained_ok else 1
