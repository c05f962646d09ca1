"""The reference ops (``tinygrad_mha/ops/``): defects an outside suite found, and the rules
that keep the reference readable (no caches, no grad-mode branches, short functions)."""

import ast
import pathlib

import numpy as np
import pytest

import tinygrad_mha as tm

PACKAGE = pathlib.Path(tm.__file__).parent
BOTH = pytest.mark.parametrize("kernels", [True, False], ids=["kernels", "reference"])


@BOTH
@pytest.mark.parametrize("fn", [tm.softmax, tm.log_softmax], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("shape, axis", [((3, 0), -1), ((0, 4), -1), ((2, 0, 3), (1, 2))])
def test_softmax_over_an_empty_axis_is_empty(fn, shape, axis, kernels, device):
    with tm.use_kernels(kernels):
        x = tm.Tensor(np.ones(shape), requires_grad=True, device=device)
        out = fn(x, axis=axis)
        assert out.shape == shape
        out.sum().backward()
        assert x.grad.shape == shape


@BOTH
@pytest.mark.parametrize("exponent", [0.0, 1.0, 2.0, 3.0])
def test_pow_gradient_at_zero_is_finite(exponent, kernels):
    """d x^b / dx = b x^(b-1): 0 for b = 0 (a constant) and b > 1, 1 for b = 1 (PyTorch agrees)."""
    with tm.use_kernels(kernels):
        x = tm.Tensor(np.array([0.0, 2.0]), requires_grad=True)
        (x ** exponent).sum().backward()
    want = exponent * np.array([0.0, 2.0]) ** max(exponent - 1, 0)
    want[0] = 1.0 if exponent == 1 else 0.0
    np.testing.assert_array_equal(x.grad, want)


def test_pow_exponent_gradient_at_a_zero_base():
    """d a^b / db = a^b log(a): 0 at a = 0 for b > 0 (a^b is 0 there), as PyTorch."""
    a = tm.Tensor(np.array([0.0, 0.0, 2.0]))
    b = tm.Tensor(np.array([0.0, 2.0, 3.0]), requires_grad=True)
    (a ** b).sum().backward()
    np.testing.assert_allclose(b.grad, [0.0, 0.0, 8 * np.log(2.0)])


@pytest.mark.parametrize("op, name", [(lambda a, b: a + b, "add"), (lambda a, b: a - b, "sub"),
                                      (lambda a, b: a * b, "mul"), (lambda a, b: a / b, "div"),
                                      (lambda a, b: a ** b, "pow")])
def test_binary_ops_name_both_shapes_when_they_do_not_broadcast(op, name):
    a, b = tm.Tensor(np.ones((2, 3))), tm.Tensor(np.ones(4))
    with pytest.raises(ValueError, match=rf"{name}: operands of shapes \(2, 3\) and \(4,\) do not"):
        op(a, b)
    with pytest.raises(ValueError, match=rf"{name}: operands of shapes \(2, 3\) and \(4,\)"):
        op(a, np.ones(4))


def _functions(path):
    tree = ast.parse(path.read_text())
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_reference_ops_have_no_cache_no_grad_mode_branch_and_short_functions():
    for path in sorted((PACKAGE / "ops").glob("*.py")) + [PACKAGE / "tensor.py"]:
        text = path.read_text()
        if path.parent.name == "ops":
            for word in ("lru_cache", "is_grad_enabled", "_GradMode", "out="):
                assert word not in text, f"{path.name} uses {word}"
        for fn in _functions(path):
            length = fn.end_lineno - fn.lineno + 1
            assert length <= 55, f"{path.name}: {fn.name} is {length} lines"


def test_package_lines_fit_a_notebook():
    # the tutorials print the library source in notebooks, where longer lines wrap
    long = [f"{p.relative_to(PACKAGE)}:{i}" for p in sorted(PACKAGE.rglob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1) if len(line) > 100]
    assert not long, long


def test_tutorial_lines_fit_a_notebook():
    # code and comments (markdown cells too); a URL or a markdown table row cannot be wrapped
    tutorials = PACKAGE.parent / "tutorials"
    if not tutorials.is_dir():
        pytest.skip("the tutorials are not part of the installed package")
    long = [f"{p.name}:{i}" for p in sorted(tutorials.glob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1)
            if len(line) > 100 and "http" not in line and not line.startswith("# |")]
    assert sorted(tutorials.glob("*.py")) and not long, long
