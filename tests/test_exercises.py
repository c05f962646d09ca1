"""The exercises and their grader (``python -m tinygrad_mha.exercises``).

Proves that every reference solution in tutorials/solutions/ passes its grader, that every
untouched stub in tutorials/exercises/ fails with a message that says what to do, and that
wrong answers are caught with a message naming the case, the element, expected and got.

Every test carries the marker of its exercise, so a learner grades one step with

    pytest tests/test_exercises.py -m softmax_backward

where ``test_your_exercise`` grades *their* file: an expected failure (xfail) while it is
still the stub, a pass once it is right, a failure with the grader's report otherwise.
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
EXERCISE_DIR = ROOT / "tutorials" / "exercises"
SOLUTION_DIR = ROOT / "tutorials" / "solutions"
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
    assert f"exercises{os.sep}{name}.py" in result.message
    assert "NotImplementedError" in result.message and "docstring" in result.message
    assert result.report().startswith(f"[TODO] {name}: ")


@pytest.mark.parametrize("name", marked(NAMES))
def test_your_exercise(name):
    """Grades tutorials/exercises/<name>.py: xfail while it is the stub, pass when it is right."""
    result = exercises.grade(name, directory=EXERCISE_DIR)
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


def test_finds_the_folders_from_the_repo_root_from_tutorials_and_from_elsewhere(tmp_path):
    assert exercises.find_directory(start=ROOT) == EXERCISE_DIR
    assert exercises.find_directory(solutions=True, start=ROOT / "tutorials") == SOLUTION_DIR
    assert exercises.find_directory(start=EXERCISE_DIR) == EXERCISE_DIR
    assert exercises.find_directory(start=tmp_path) == EXERCISE_DIR  # falls back to the repo


def test_numerical_vjp_matches_a_known_gradient():
    from tinygrad_mha.exercises.checks import numerical_vjp
    x, g = np.array([[1.0, -2.0], [0.5, 3.0]]), np.array([[1.0, 2.0], [3.0, 4.0]])
    (grad,) = numerical_vjp(lambda x: x ** 3, [x], g)
    np.testing.assert_allclose(grad, 3 * x ** 2 * g, rtol=1e-8)


# ---------------------------------------------------------------- the command line
@pytest.mark.softmax_backward
def test_cli_check_untouched_stub_exits_1_and_says_where_to_start():
    if not is_untouched_stub(EXERCISE_DIR / "softmax_backward.py"):
        pytest.skip("softmax_backward.py has been edited")
    proc = run_cli("check", "softmax_backward")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "[TODO] softmax_backward: not implemented yet: open tutorials/exercises/softmax_backward.py" \
        in proc.stdout


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
