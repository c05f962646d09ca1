"""The exercises and their grader (``python -m tinygrad_mha.exercises``).

Proves that every reference solution (tinygrad_mha/exercises/solutions/) passes its grader,
that every untouched stub (tinygrad_mha/exercises/stubs/) fails with a message that says what
to do, that `init` and `check` find the files in a folder of any name, and that wrong answers
are caught with a message naming the case, the element, expected and got, and the mistake.

Every test carries the marker of its exercise, so one step is tested with

    pytest tests/test_exercises.py -m softmax_backward

and ``test_your_exercise`` grades *your* copy when TINYGRAD_MHA_EXERCISES names its folder:

    TINYGRAD_MHA_EXERCISES=my_exercises pytest tests/test_exercises.py -m softmax_backward
"""

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import tinygrad_mha as tm
from tinygrad_mha import exercises

ROOT = Path(__file__).resolve().parents[1]
EXERCISE_DIR = exercises.STUBS
SOLUTION_DIR = exercises.SOLUTIONS
NAMES = exercises.names()


def marked(names):
    return [pytest.param(n, marks=getattr(pytest.mark, n), id=n) for n in names]


def public_functions(path: Path) -> list[ast.FunctionDef]:
    tree = ast.parse(path.read_text())
    return [n for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")]


def is_untouched_stub(path: Path) -> bool:
    """True when every function in the file is still a docstring plus `raise NotImplementedError`."""
    def stub(fn):
        body = fn.body[1:] if ast.get_docstring(fn) is not None else fn.body
        if len(body) != 1 or not isinstance(body[0], ast.Raise):
            return False
        exc = body[0].exc
        exc = exc.func if isinstance(exc, ast.Call) else exc
        return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"
    functions = public_functions(path)
    return bool(functions) and all(stub(f) for f in functions)


def run_cli(*args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "tinygrad_mha.exercises", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------- the syllabus is complete
def test_at_least_eight_exercises_each_with_stub_and_solution():
    assert len(NAMES) >= 8
    assert sorted(p.stem for p in EXERCISE_DIR.glob("*.py")) == sorted(NAMES)
    assert sorted(p.stem for p in SOLUTION_DIR.glob("*.py")) == sorted(NAMES)


@pytest.mark.parametrize("name", marked(NAMES))
def test_stub_states_the_same_task_as_its_solution(name):
    """Same public functions, signatures and docstrings in the stub and the solution."""
    if not is_untouched_stub(EXERCISE_DIR / f"{name}.py"):
        pytest.skip(f"{name}.py has been edited")
    stub = {f.name: f for f in public_functions(EXERCISE_DIR / f"{name}.py")}
    solution = {f.name: f for f in public_functions(SOLUTION_DIR / f"{name}.py")}
    assert stub.keys() == solution.keys()
    for fn_name, fn in stub.items():
        assert ast.dump(fn.args) == ast.dump(solution[fn_name].args), fn_name
        doc = ast.get_docstring(fn)
        assert doc and doc == ast.get_docstring(solution[fn_name]), fn_name
        assert "Returns" in doc and "Args" in doc, f"{fn_name}: the docstring must state inputs and output"


def test_untouched_stub_detection(tmp_path):
    """The stub tests skip edited files; make sure they recognise a real stub (and only that)."""
    stub, done = tmp_path / "stub.py", tmp_path / "done.py"
    stub.write_text('def f(x):\n    """Task."""\n    raise NotImplementedError("f: write your code here")\n')
    done.write_text('def f(x):\n    """Task."""\n    return x\n')
    assert is_untouched_stub(stub) and not is_untouched_stub(done)
    assert is_untouched_stub(SOLUTION_DIR / "sum_to.py") is False


# ---------------------------------------------------------------- solutions and stubs
@pytest.mark.parametrize("name", marked(NAMES))
def test_solution_passes_its_grader(name):
    result = exercises.grade(name, solutions=True, directory=SOLUTION_DIR)
    assert result.passed, result.report()
    assert result.path == (SOLUTION_DIR / f"{name}.py").resolve()


@pytest.mark.parametrize("name", marked(NAMES))
def test_untouched_stub_fails_with_a_helpful_message(name):
    path = EXERCISE_DIR / f"{name}.py"
    if not is_untouched_stub(path):
        pytest.skip(f"{path.name} has been edited; test_your_exercise grades it")
    result = exercises.grade(name, directory=EXERCISE_DIR)
    assert not result.passed and result.status == "not implemented"
    assert result.message.startswith("not implemented yet: open ")
    assert f"stubs{os.sep}{name}.py" in result.message
    assert "NotImplementedError" in result.message and "docstring" in result.message
    assert result.report().startswith(f"[TODO] {name}: ")


@pytest.mark.parametrize("name", marked(NAMES))
def test_your_exercise(name):
    """Grades $TINYGRAD_MHA_EXERCISES/<name>.py: xfail while it is the stub, pass when it is right."""
    folder = os.environ.get("TINYGRAD_MHA_EXERCISES")
    if not folder:
        pytest.skip("set TINYGRAD_MHA_EXERCISES to the folder of your exercises (see `exercises init`)")
    result = exercises.grade(name, directory=folder)
    if result.status == "not implemented":
        pytest.xfail(result.message)
    assert result.passed, "\n" + result.report()


# ---------------------------------------------------------------- wrong answers are caught
WRONG = {
    "softmax_backward": ("""
        import numpy as np
        def softmax_backward(x, g, axis=-1):   # only the diagonal of the Jacobian
            y = np.exp(x - x.max(axis, keepdims=True))
            y = y / y.sum(axis, keepdims=True)
            return g * y * (1 - y)
        """, ["wrong gradient with respect to x from softmax_backward(x=", "at element (",
              "expected ", "(central finite difference), got ", "elements are off", "hint: ",
              "reproduce with: python -m tinygrad_mha.exercises check softmax_backward --seed 7"]),
    "sigmoid_backward": ("""
        import numpy as np
        def sigmoid_backward(x, g):            # overflows at x = -800
            return g * np.exp(-x) / (1 + np.exp(-x)) ** 2
        """, ["wrong gradient with respect to x", "got nan", "inf or nan"]),
    "sum_to": ("""
        def sum_to(g, shape):
            return g.sum(axis=0)
        """, ["result has shape (3, 4) but must have shape (3, 1)", "sum_to(g=<float64 array of shape (2, 3, 4)>"]),
    "matmul_backward": ("""
        import numpy as np
        def matmul_backward(a, b, g):          # forgets to undo the broadcast batch axis
            return g @ np.swapaxes(b, -1, -2), np.swapaxes(a, -1, -2) @ g
        """, ["gradient with respect to b (returned value 1, gb) has shape (2, 4, 5) but must have shape (4, 5)"]),
    "dropout_backward": ("""
        def dropout_backward(g, keep, rate):   # forgets the 1 / (1 - rate) scale
            return g * keep
        """, ["wrong gradient with respect to x from dropout_backward(g=", "keep=[", "rate=0.5"]),
    "tanh_backward": ("""
        def tanh_backward(x, g):
            g * (1 - x)
        """, ["returned None", "did you forget `return`?"]),
    "logsumexp_backward": ("""
        import numpy as np
        def logsumexp_backward(x, g, axis=-1):  # g is not expanded back over the axis
            return g * np.exp(x) / np.exp(x).sum(axis, keepdims=True)
        """, ["raised ValueError", "logsumexp_backward.py\", line 4, in logsumexp_backward"]),
    "layernorm_backward": ("""
        from tinygrad_mha.exercises import load
        right = load("layernorm_backward", %r).layernorm_backward
        def layernorm_backward(x, gamma, beta, g, epsilon=1e-3):
            gx, ggamma, gbeta = right(x, gamma, beta, g, epsilon)
            return gx, ggamma, g               # beta's gradient not summed over the rows
        """ % str(SOLUTION_DIR),
        ["gradient with respect to beta (returned value 2, gbeta) has shape (4, 6) but must have shape (6,)"]),
    "einsum_backward": ("""
        import numpy as np
        def matmul_einsum_backward(a, b, g):
            return np.einsum("ik,jk->ij", g, b), np.einsum("ij,ik->jk", a, g)
        def attention_einsum_backward(q, k, g):
            return np.einsum("bhqk,bkhd->bqhd", g, k), np.einsum("bhqk,bqhd->bkhd", g, q)
        def diagonal_einsum_backward(a, g):    # g on every row, not only on the diagonal
            return np.einsum("i,j->ij", np.ones(len(g)), g)
        """, ["from diagonal_einsum_backward(a=", "expected 0 (central finite difference)"]),
    "masked_softmax": ("""
        import tinygrad_mha as tm
        def masked_softmax(x, mask, axis=-1):
            return tm.softmax(x, axis=axis, mask=mask)
        """, ["not from tm.softmax"]),
    "attention_scores": ("""
        import math
        import tinygrad_mha as tm
        def attention_scores(query, key, attention_axes):   # softmax over the wrong axis
            logits = tm.einsum("bthd,bshd->bhts", query, key) / math.sqrt(query.shape[-1])
            return tm.softmax(logits, axis=-2)
        """, ["wrong scores from attention_scores(query=<float64 array of shape (2, 3, 2, 4)>"]),
    "online_softmax": ("""
        import numpy as np
        def online_softmax(score_block, values, block):   # forgets to rescale the old sums
            S, D = values.shape
            m, l, acc = None, 0.0, 0.0
            for j0 in range(0, S, block):
                s = score_block(j0, min(S, j0 + block))
                m = s.max(1, keepdims=True) if m is None else np.maximum(m, s.max(1, keepdims=True))
                m0 = np.where(np.isfinite(m), m, 0.0)
                p = np.exp(s - m0)
                l = l + p.sum(1, keepdims=True)
                acc = acc + p @ values[j0:j0 + s.shape[1]]
            return acc / np.where(l == 0, 1, l), (m + np.log(l))[:, 0]
        """, ["wrong out from online_softmax(", "block=1)"]),
}


@pytest.mark.parametrize("name", marked(sorted(WRONG)))
def test_wrong_answer_is_reported_precisely(name, tmp_path):
    source, expected = WRONG[name]
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    result = exercises.grade(name, directory=tmp_path, seed=7)
    assert result.status == "failed", result.report()
    for fragment in expected:
        assert fragment in result.message, f"{fragment!r} not in:\n{result.message}"


def test_every_exercise_has_a_wrong_answer_test():
    assert sorted(WRONG) == sorted(NAMES)


# ---------------------------------------------------------------- the catalogue
# Typical wrong solutions, each caught with a hint that names the mistake (the fragments), and
# correct solutions written differently from the reference, each of which must pass. Add to it
# whenever a learner finds a way through.
MISTAKES = [
    ("softmax_backward", "global_max", """
        import numpy as np
        def softmax_backward(x, g, axis=-1):   # tutorial 05's big - big.max(), carried over
            y = np.exp(x - x.max())
            y = y / y.sum(axis, keepdims=True)
            return y * (g - (g * y).sum(axis, keepdims=True))
        """, ["global maximum", "each slice's own", "keepdims=True"]),
    ("softmax_backward", "diagonal_only", WRONG["softmax_backward"][0], ["only the diagonal of the Jacobian"]),
    ("softmax_backward", "sum_over_all_axes", """
        import numpy as np
        def softmax_backward(x, g, axis=-1):
            y = np.exp(x - x.max(axis, keepdims=True))
            y = y / y.sum(axis, keepdims=True)
            return y * (g - (g * y).sum())
        """, ["summed g * y over every axis"]),
    ("logsumexp_backward", "global_max", """
        import numpy as np
        def logsumexp_backward(x, g, axis=-1):
            e = np.exp(x - x.max())
            return e / e.sum(axis, keepdims=True) * np.expand_dims(g, axis)
        """, ["global maximum", "each slice's own"]),
    ("logsumexp_backward", "forgets_g", """
        import numpy as np
        def logsumexp_backward(x, g, axis=-1):
            e = np.exp(x - x.max(axis, keepdims=True))
            return e / e.sum(axis, keepdims=True)
        """, ["multiplied by g"]),
    ("masked_softmax", "global_max", """
        import numpy as np, tinygrad_mha as tm
        def masked_softmax(x, mask, axis=-1):
            keep = np.broadcast_to(mask, x.shape)
            top = np.where(keep, x.data, -np.inf).max()           # one max for the whole array
            e = tm.where(keep, x - top, -np.inf).exp()
            s = e.sum(axis=axis, keepdims=True)
            return e / tm.where(s.data == 0, 1.0, s)
        """, ["global maximum", "each slice's own"]),
    ("masked_softmax", "minus_1e9", """
        import numpy as np, tinygrad_mha as tm
        def masked_softmax(x, mask, axis=-1):     # -1e9 instead of exact zeros
            z = tm.where(mask, x, -1e9)
            z = z - z.data.max(axis=axis, keepdims=True)
            e = z.exp()
            return e / e.sum(axis=axis, keepdims=True)
        """, ["keeps nothing", "-1e9", "mask=[[", "(bool, 1 = True, shape (3, 5))"]),
    ("dropout_backward", "missing_scale", WRONG["dropout_backward"][0], ["the missing 1/(1 - rate)"]),
    ("dropout_backward", "times_keep_prob", """
        def dropout_backward(g, keep, rate):
            return g * keep * (1 - rate)
        """, ["multiplied by (1 - rate)"]),
    ("dropout_backward", "no_mask", """
        def dropout_backward(g, keep, rate):
            return g / (1 - rate)
        """, ["the mask is missing"]),
    ("layernorm_backward", "ddof1", """
        import numpy as np
        def layernorm_backward(x, gamma, beta, g, epsilon=1e-3):   # sample variance
            n = x.shape[-1]
            mu = x.mean(-1, keepdims=True)
            inv = 1 / np.sqrt(x.var(-1, ddof=1, keepdims=True) + epsilon)
            xhat = (x - mu) * inv
            lead = tuple(range(x.ndim - 1))
            gxhat = g * gamma
            gx = inv / n * (n * gxhat - gxhat.sum(-1, keepdims=True)
                            - n / (n - 1) * xhat * (gxhat * xhat).sum(-1, keepdims=True))
            return gx, (g * xhat).sum(lead), g.sum(lead)
        """, ["ddof=1", "population"]),
    ("layernorm_backward", "constant_statistics", """
        import numpy as np
        def layernorm_backward(x, gamma, beta, g, epsilon=1e-3):
            mu = x.mean(-1, keepdims=True)
            inv = 1 / np.sqrt(x.var(-1, keepdims=True) + epsilon)
            lead = tuple(range(x.ndim - 1))
            return g * gamma * inv, (g * (x - mu) * inv).sum(lead), g.sum(lead)
        """, ["mu and var treated as constants"]),
    ("layernorm_backward", "beta_not_summed", WRONG["layernorm_backward"][0], ["broadcast axes not summed"]),
    ("matmul_backward", "transposed", """
        import numpy as np
        def matmul_backward(a, b, g):           # no transposes
            return g @ b, a @ g
        """, ["transposed matmul gradient"]),
    ("matmul_backward", "broadcast_not_summed", WRONG["matmul_backward"][0], ["broadcast axes not summed"]),
    ("sum_to", "no_keepdims", """
        import numpy as np
        def sum_to(g, shape):
            lead = g.ndim - len(shape)
            g = g.sum(axis=tuple(range(lead)))
            axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
            return g.sum(axis=axes)             # the 1-axes vanish
        """, ["must have shape (3, 1)"]),
    ("sigmoid_backward", "x_not_s", """
        def sigmoid_backward(x, g):
            return g * x * (1 - x)
        """, ["s = sigmoid(x), not x (1 - x)"]),
    ("sigmoid_backward", "overflow", WRONG["sigmoid_backward"][0], ["inf or nan"]),
    ("tanh_backward", "x_not_tanh", """
        def tanh_backward(x, g):
            return g * (1 - x ** 2)
        """, ["not 1 - x^2"]),
    ("einsum_backward", "diagonal_everywhere", WRONG["einsum_backward"][0], ["expected 0"]),
    ("attention_scores", "no_scale", """
        import tinygrad_mha as tm
        from tinygrad_mha.exercises import load
        def attention_scores(query, key, attention_axes):
            d = query.shape[-1]
            return load("attention_scores", %r).attention_scores(query * d ** 0.5, key, attention_axes)
        """ % str(SOLUTION_DIR), ["no 1/sqrt(key_dim) scale"]),
    ("online_softmax", "no_rescale", WRONG["online_softmax"][0],
     ["sums l and acc kept their old shift", "exp(m_old - m_new)"]),
]

RIGHT = [
    ("online_softmax", "running_log_sum_exp", """
        import numpy as np
        def online_softmax(score_block, values, block):   # carries lse itself, not m and l
            S, D = values.shape
            lse = out = None
            for j0 in range(0, S, block):
                s = score_block(j0, min(S, j0 + block))
                if lse is None:
                    lse, out = np.full(s.shape[0], -np.inf), np.zeros((s.shape[0], D))
                new = np.logaddexp(lse, np.logaddexp.reduce(s, axis=1))
                shift = np.where(np.isfinite(new), new, 0.0)
                out = (out * np.exp(lse - shift)[:, None]
                       + np.exp(s - shift[:, None]) @ values[j0:j0 + s.shape[1]])
                lse = new
            return out, lse
        """),
    ("softmax_backward", "explicit_jacobian", """
        import numpy as np
        def softmax_backward(x, g, axis=-1):
            x, g = np.moveaxis(x, axis, -1), np.moveaxis(g, axis, -1)
            y = np.exp(x - x.max(-1, keepdims=True))
            y /= y.sum(-1, keepdims=True)
            jac = y[..., :, None] * (np.eye(y.shape[-1]) - y[..., None, :])   # dy_i/dx_j
            return np.moveaxis(np.einsum("...i,...ij->...j", g, jac), -1, axis)
        """),
    ("logsumexp_backward", "logaddexp", """
        import numpy as np
        def logsumexp_backward(x, g, axis=-1):
            lse = np.logaddexp.reduce(x, axis=axis, keepdims=True)
            return np.exp(x - lse) * np.expand_dims(g, axis)
        """),
    ("masked_softmax", "log_domain", """
        import numpy as np, tinygrad_mha as tm
        def masked_softmax(x, mask, axis=-1):
            keep = np.broadcast_to(mask, x.shape)
            any_kept = keep.any(axis=axis, keepdims=True)
            top = np.where(any_kept, np.where(keep, x.data, -np.inf).max(axis=axis, keepdims=True), 0.0)
            z = tm.where(keep, x - top, 0.0)
            e = tm.where(keep, z.exp(), 0.0)
            total = e.sum(axis=axis, keepdims=True) + tm.Tensor((~any_kept).astype(float))
            return e / total
        """),
    ("dropout_backward", "where", """
        import numpy as np
        def dropout_backward(g, keep, rate):
            return np.where(keep, g / (1.0 - rate), 0.0)
        """),
    ("layernorm_backward", "through_the_engine", """
        import tinygrad_mha as tm
        def layernorm_backward(x, gamma, beta, g, epsilon=1e-3):
            xs, gs, bs = (tm.Tensor(a, requires_grad=True) for a in (x, gamma, beta))
            mu = xs.mean(axis=-1, keepdims=True)
            var = ((xs - mu) ** 2).mean(axis=-1, keepdims=True)
            y = gs * (xs - mu) / (var + epsilon).sqrt() + bs
            y.backward(g)
            return xs.grad, gs.grad, bs.grad
        """),
    ("matmul_backward", "einsum_and_loops", """
        import numpy as np
        def _down(grad, shape):
            while grad.ndim > len(shape):
                grad = grad.sum(axis=0)
            for i, n in enumerate(shape):
                if n == 1 and grad.shape[i] != 1:
                    grad = grad.sum(axis=i, keepdims=True)
            return grad
        def matmul_backward(a, b, g):
            return (_down(np.einsum("...ik,...jk->...ij", g, b), a.shape),
                    _down(np.einsum("...ki,...kj->...ij", a, g), b.shape))
        """),
    ("sum_to", "loop", """
        def sum_to(g, shape):
            while g.ndim > len(shape):
                g = g.sum(axis=0)
            for i, n in enumerate(shape):
                if n == 1 and g.shape[i] != 1:
                    g = g.sum(axis=i, keepdims=True)
            return g
        """),
    ("sigmoid_backward", "tanh_identity", """
        import numpy as np
        def sigmoid_backward(x, g):
            return g * 0.25 * (1 - np.tanh(x / 2) ** 2)
        """),
    ("tanh_backward", "cosh", """
        import numpy as np
        def tanh_backward(x, g):
            return g / np.cosh(np.clip(x, -350, 350)) ** 2
        """),
    ("einsum_backward", "numpy_ops", """
        import numpy as np
        def matmul_einsum_backward(a, b, g):
            return g @ b.T, a.T @ g
        def attention_einsum_backward(q, k, g):
            return (np.einsum("bhqk,bkhd->bqhd", g, k), np.einsum("bhqk,bqhd->bkhd", g, q))
        def diagonal_einsum_backward(a, g):
            return np.diag(g)
        """),
    ("attention_scores", "own_softmax", """
        import math
        import numpy as np, tinygrad_mha as tm
        def attention_scores(query, key, attention_axes):
            r = query.ndim
            axes = tuple(a % r for a in attention_axes)
            batch = [a for a in range(r - 2) if a not in axes]
            order = batch + [r - 2] + list(axes) + [r - 1]
            q, k = query.transpose(*order), key.transpose(*order)
            lead = q.shape[:len(batch) + 1]
            tq, sk = q.shape[len(batch) + 1:-1], k.shape[len(batch) + 1:-1]
            d = query.shape[-1]
            q2 = q.reshape(*lead, -1, d)
            k2 = k.reshape(*lead, -1, d)
            logits = (q2 @ k2.swapaxes(-1, -2)) * (1 / math.sqrt(d))
            e = (logits - logits.data.max(axis=-1, keepdims=True)).exp()
            return (e / e.sum(axis=-1, keepdims=True)).reshape(*lead, *tq, *sk)
        """),
]


@pytest.mark.parametrize("name, label, source, fragments",
                         [pytest.param(*m, marks=getattr(pytest.mark, m[0]), id=f"{m[0]}-{m[1]}")
                          for m in MISTAKES])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_catalogue_mistake_is_caught_and_named(name, label, source, fragments, seed, tmp_path):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    result = exercises.grade(name, directory=tmp_path, seed=seed)
    assert result.status == "failed", result.report()
    for fragment in fragments:
        assert fragment in result.message, f"{fragment!r} not in:\n{result.message}"


@pytest.mark.parametrize("name, label, source",
                         [pytest.param(*r, marks=getattr(pytest.mark, r[0]), id=f"{r[0]}-{r[1]}") for r in RIGHT])
@pytest.mark.parametrize("seed", [0, 1])
def test_catalogue_correct_alternative_passes(name, label, source, seed, tmp_path):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    result = exercises.grade(name, directory=tmp_path, seed=seed)
    assert result.passed, result.report()


def test_the_catalogue_covers_every_exercise():
    assert {m[0] for m in MISTAKES} == set(NAMES) and {r[0] for r in RIGHT} == set(NAMES)


def test_the_issue_example_is_caught_per_slice():
    """[[1000, 1001, 999], [0, 1, -1]]: a global shift gives NaN in the second row."""
    from tinygrad_mha.exercises.checks import _softmax, _softmax_global_max
    x = np.array([[1000.0, 1001, 999], [0, 1, -1]])
    assert np.isfinite(_softmax(x, -1)).all()
    with np.errstate(all="ignore"):
        assert np.isnan(_softmax_global_max(x, -1)[1]).all()


@pytest.mark.masked_softmax
@pytest.mark.parametrize("source, fragment", [
    ("""
     import numpy as np, tinygrad_mha as tm
     def masked_softmax(x, mask, axis=-1):     # right numbers, but computed outside the graph
         e = np.where(mask, np.exp(x.data - x.data.max()), 0)
         s = e.sum(axis, keepdims=True)
         return tm.Tensor(e / np.where(s == 0, 1, s))
     """, "is not connected to its inputs"),
    ("""
     import numpy as np
     def masked_softmax(x, mask, axis=-1):
         return np.zeros(x.shape)
     """, "must return a tinygrad_mha Tensor"),
    ("""
     import numpy as np, tinygrad_mha as tm
     def masked_softmax(x, mask, axis=-1):     # no shift: overflows at logits near 1000
         e = tm.where(mask, x, -np.inf).exp()
         s = e.sum(axis=axis, keepdims=True)
         return e / tm.where(s.data == 0, 1.0, s)
     """, "inf or nan"),
])
def test_masked_softmax_mistakes(source, fragment, tmp_path):
    (tmp_path / "masked_softmax.py").write_text(textwrap.dedent(source))
    result = exercises.grade("masked_softmax", directory=tmp_path, seed=3)
    assert result.status == "failed" and fragment in result.message, result.report()
    assert tm.softmax(tm.Tensor([0.0, 0.0])).numpy().tolist() == [0.5, 0.5]  # switched back on


@pytest.mark.online_softmax
def test_online_softmax_must_stream(tmp_path):
    """Reading the whole row at once (the dense softmax) is refused, however right the numbers."""
    (tmp_path / "online_softmax.py").write_text(textwrap.dedent("""
        import numpy as np
        def online_softmax(score_block, values, block):
            s = score_block(0, values.shape[0])
            m = np.max(s, 1, keepdims=True)
            e = np.exp(s - m)
            return e / e.sum(1, keepdims=True) @ values, (m + np.log(e.sum(1, keepdims=True)))[:, 0]
        """))
    result = exercises.grade("online_softmax", directory=tmp_path, seed=7)
    assert result.status == "failed" and "more than block=1" in result.message, result.report()


@pytest.mark.attention_scores
def test_gradient_cut_off_is_caught_by_gradcheck(tmp_path):
    (tmp_path / "attention_scores.py").write_text(textwrap.dedent("""
        from tinygrad_mha.exercises import load
        right = load("attention_scores", %r).attention_scores
        def attention_scores(query, key, attention_axes):   # key detached: no gradient reaches it
            return right(query, key.detach(), attention_axes)
        """ % str(SOLUTION_DIR)))
    result = exercises.grade("attention_scores", directory=tmp_path, seed=1)
    assert result.status == "failed"
    assert "disagrees with finite differences" in result.message
    assert "gradcheck failed for input 1" in result.message, result.message


def test_syntax_error_names_the_line(tmp_path):
    (tmp_path / "sum_to.py").write_text("def sum_to(g, shape)\n    return g\n")
    result = exercises.grade("sum_to", directory=tmp_path)
    assert result.status == "failed"
    assert "SyntaxError" in result.message and "line 1" in result.message


def test_inputs_are_fresh_unless_a_seed_is_given(tmp_path):
    (tmp_path / "softmax_backward.py").write_text(textwrap.dedent(WRONG["softmax_backward"][0]))
    a, b = (exercises.grade("softmax_backward", directory=tmp_path) for _ in range(2))
    assert a.seed != b.seed and a.message != b.message
    c, d = (exercises.grade("softmax_backward", directory=tmp_path, seed=11) for _ in range(2))
    assert c.message == d.message and "--seed 11" in c.message


def test_unknown_exercise_raises_key_error_naming_the_choices():
    with pytest.raises(KeyError, match="softmax_backward"):
        exercises.grade("softmax_backwards")


def test_finds_your_files_in_a_folder_of_any_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="init"):
        exercises.find_directory(start=tmp_path)
    assert exercises.find_directory(solutions=True, start=tmp_path) == SOLUTION_DIR
    mine = tmp_path / "whatever name"
    written = exercises.init(mine)
    assert exercises.find_directory(start=mine) == mine.resolve()
    assert sorted(p.name for p in written) == sorted(f"{n}.py" for n in NAMES)
    for path in written:  # byte-for-byte copies of the one copy in the package
        assert path.read_bytes() == (EXERCISE_DIR / path.name).read_bytes()


def test_init_never_overwrites_and_writes_nothing_when_it_refuses(tmp_path):
    (tmp_path / "sum_to.py").write_text("# my work\n")
    with pytest.raises(FileExistsError, match="sum_to.py"):
        exercises.init(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["sum_to.py"]
    assert (tmp_path / "sum_to.py").read_text() == "# my work\n"


def test_the_stubs_and_solutions_are_package_data():
    """They ship in the wheel: pyproject's package-data globs cover every file."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["tinygrad_mha.exercises"]
    package = Path(exercises.__file__).parent
    shipped = {p for pattern in globs for p in package.glob(pattern)}
    assert shipped == set(EXERCISE_DIR.glob("*.py")) | set(SOLUTION_DIR.glob("*.py"))
    assert not (ROOT / "tutorials" / "exercises").exists()  # one copy of each stub, not two


def test_numerical_vjp_matches_a_known_gradient():
    from tinygrad_mha.exercises.checks import numerical_vjp
    x, g = np.array([[1.0, -2.0], [0.5, 3.0]]), np.array([[1.0, 2.0], [3.0, 4.0]])
    (grad,) = numerical_vjp(lambda x: x ** 3, [x], g)
    np.testing.assert_allclose(grad, 3 * x ** 2 * g, rtol=1e-8)


# ---------------------------------------------------------------- the command line
@pytest.mark.softmax_backward
def test_cli_init_then_check_inside_the_folder_without_dir(tmp_path):
    folder = tmp_path / "ex"
    proc = run_cli("init", str(folder), cwd=tmp_path)
    assert proc.returncode == 0 and f"wrote {len(NAMES)} exercise stubs" in proc.stdout
    proc = run_cli("check", "softmax_backward", cwd=folder)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "[TODO] softmax_backward: not implemented yet: open softmax_backward.py" in proc.stdout
    (folder / "softmax_backward.py").write_bytes((SOLUTION_DIR / "softmax_backward.py").read_bytes())
    proc = run_cli("check", "softmax_backward", cwd=folder)
    assert proc.returncode == 0 and "[PASS] softmax_backward" in proc.stdout
    proc = run_cli("check", "softmax_backward", "--dir", str(folder), cwd=tmp_path)
    assert proc.returncode == 0 and "[PASS] softmax_backward" in proc.stdout
    proc = run_cli("init", str(folder), cwd=tmp_path)  # refuses; the solved file stays
    assert proc.returncode == 2 and "not overwriting" in proc.stderr
    assert (folder / "softmax_backward.py").read_bytes() == (SOLUTION_DIR / "softmax_backward.py").read_bytes()


def test_cli_check_without_files_says_to_run_init(tmp_path):
    proc = run_cli("check", "sum_to", cwd=tmp_path)
    assert proc.returncode == 2 and "init DIR" in proc.stderr and "--dir" in proc.stderr
    proc = run_cli("list", cwd=tmp_path)
    assert proc.returncode == 0 and "your files: none" in proc.stdout and "init DIR" in proc.stdout


def test_cli_check_with_no_name_grades_every_file_found(tmp_path):
    for name in ("sum_to", "tanh_backward"):
        (tmp_path / f"{name}.py").write_bytes((SOLUTION_DIR / f"{name}.py").read_bytes())
    proc = run_cli("check", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 of 2 exercises passed" in proc.stdout
    proc = run_cli("list", cwd=tmp_path)
    assert f"your files: {tmp_path.resolve()} (2 of {len(NAMES)}" in proc.stdout


def test_cli_check_all_solutions_exits_0():
    proc = run_cli("check", "--solutions")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(NAMES)} of {len(NAMES)} exercises passed" in proc.stdout
    assert proc.stdout.count("[PASS]") == len(NAMES)


def test_cli_wrong_answer_exits_1_with_the_report(tmp_path):
    (tmp_path / "dropout_backward.py").write_text(textwrap.dedent(WRONG["dropout_backward"][0]))
    proc = run_cli("check", "dropout_backward", "--dir", str(tmp_path), "--seed", "5")
    assert proc.returncode == 1
    assert "[FAIL] dropout_backward: wrong gradient with respect to x" in proc.stdout
    assert "--seed 5" in proc.stdout


def test_cli_list_and_usage_errors(tmp_path):
    proc = run_cli("list", cwd=ROOT / "tutorials")
    assert proc.returncode == 0 and all(n in proc.stdout for n in NAMES)
    proc = run_cli("check", "no_such_exercise")
    assert proc.returncode == 2 and "unknown exercise" in proc.stderr and "list" in proc.stderr
    proc = run_cli()
    assert proc.returncode == 2
    proc = run_cli("check", "sum_to", "--dir", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "is not a folder" in proc.stderr
