"""Every kernel against the reference op it replaces: forward and gradients, float64.

Each case runs once with kernels on and once under ``tm.use_kernels(False)``, on random
inputs (edge shapes included) and a random upstream gradient, on both devices. The switch
itself is tested at the end.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import tinygrad_mha as tm
from tinygrad_mha.kernels import kernel_for, kernels_enabled

MASK = np.array([[True, True, False, True], [False, False, False, False],
                 [True, False, True, True]])


def _run(fn, arrays, device, create_graph):
    """fn's output and the gradients of sum(out * R) for every input."""
    ts = [tm.Tensor(a, requires_grad=True, device=device) for a in arrays]
    out = fn(*ts)
    out = out[0] if isinstance(out, tuple) else out
    R = tm.Tensor(np.random.default_rng(99).standard_normal(out.shape), device=device)
    grads = tm.grad((out * R).sum(), ts, create_graph=create_graph)
    if create_graph:  # differentiate once more: sum of every gradient, w.r.t. every input
        total = sum((g * g).sum() for g in grads)
        grads = grads + tm.grad(total, ts)
    return out, [out.numpy()] + [g.numpy() for g in grads]


def _check(fn, shapes, device, create_graph=False, positive=False):
    rng = np.random.default_rng(len(shapes))
    arrays = [rng.uniform(0.5, 2, s) if positive else rng.standard_normal(s) for s in shapes]
    with tm.use_kernels(True):
        out, fast = _run(fn, arrays, device, create_graph)
        assert type(out._ctx).__module__.startswith("tinygrad_mha.kernels"), type(out._ctx)
    with tm.use_kernels(False):
        out, ref = _run(fn, arrays, device, create_graph)
        assert not type(out._ctx).__module__.startswith("tinygrad_mha.kernels")
    for got, want in zip(fast, ref):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- contraction planner
EINSUM = [
    ("bqhd,bkhd->bhqk", [(2, 3, 2, 4), (2, 5, 2, 4)], {"scale": 0.5}),
    ("aecd,abcd->acbe", [(2, 4, 3, 2), (2, 3, 3, 2)], {}),
    ("acbe,aecd->abcd", [(2, 3, 4, 5), (2, 5, 3, 2)], {}),
    ("abc,cde->abde", [(2, 3, 4), (4, 2, 3)], {"bias": (2, 3)}),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)], {}),
    ("...ij,...jk->...ik", [(2, 1, 3, 4), (5, 4, 2)], {}),
    ("ii->i", [(3, 3)], {}),
    ("ii->", [(3, 3)], {}),
    ("iij,jk->ik", [(2, 2, 3), (3, 4)], {}),
    ("ij,ij->i", [(3, 4), (3, 4)], {}),
    ("i,j->ij", [(3,), (4,)], {"scale": 2.0}),
    ("ij,jk->ik", [(3, 0), (0, 4)], {}),        # empty contraction: zeros
    ("ij,jk->ik", [(0, 2), (2, 3)], {}),        # empty result
    ("bij,bjk->bik", [(1, 2, 3), (4, 3, 2)], {}),  # a size-1 axis broadcasts
]


@pytest.mark.parametrize("equation, shapes, kw", EINSUM, ids=[e[0] for e in EINSUM])
def test_contraction_planner_matches_the_reference_einsum(equation, shapes, kw, device):
    extra = [kw["bias"]] if "bias" in kw else []

    def fn(*ts):
        bias = ts[-1] if extra else None
        return tm.einsum(equation, *ts[:len(shapes)], scale=kw.get("scale"), bias=bias)
    _check(fn, shapes + extra, device)


@pytest.mark.parametrize("equation, shapes, kw", EINSUM[:5], ids=[e[0] for e in EINSUM[:5]])
def test_contraction_planner_second_derivatives_match(equation, shapes, kw, device):
    _check(lambda *ts: tm.einsum(equation, *ts, scale=kw.get("scale")), shapes, device,
           create_graph=True)


# ---------------------------------------------------------------- fused attention
DOT, COMBINE = "bshd,bthd->bhts", "bhts,bshd->bthd"
QKV = [(2, 3, 2, 3), (2, 4, 2, 3), (2, 4, 2, 2)]
ATTENTION = {
    "plain": {},
    "scale-mask": {"scale": 0.4, "mask": MASK},
    "dropout": {"mask": MASK, "dropout_rate": 0.3, "seed": 7},
    "probs": {"mask": MASK, "return_probs": True},
}


@pytest.mark.parametrize("kw", ATTENTION.values(), ids=ATTENTION.keys())
@pytest.mark.parametrize("create_graph", [False, True], ids=["grad", "second-order"])
def test_fused_attention_matches_the_reference_composition(kw, create_graph, device):
    _check(lambda q, k, v: tm.ops.attention(q, k, v, DOT, COMBINE, **kw), QKV, device,
           create_graph=create_graph)


@pytest.mark.parametrize("shapes", [[(1, 1, 1, 1), (1, 1, 1, 1), (1, 1, 1, 1)],
                                    [(2, 0, 2, 3), (2, 4, 2, 3), (2, 4, 2, 2)]],
                         ids=["ones", "no-queries"])
def test_fused_attention_edge_shapes(shapes, device):
    _check(lambda q, k, v: tm.ops.attention(q, k, v, DOT, COMBINE, scale=0.5), shapes, device)


def test_unfusable_attention_equation_matches_the_reference(device):
    shapes = [(2, 3, 2, 1), (2, 4, 2, 3), (2, 4, 2, 2)]
    _check(lambda q, k, v: tm.ops.attention(q, k, v, "bshe,bthd->bhts", COMBINE), shapes, device)


# ---------------------------------------------------------------- softmax
SOFTMAX = {
    "last": ((3, 4), {}),
    "joint": ((2, 3, 4), {"axis": (1, 2)}),
    "masked": ((2, 3, 4), {"mask": MASK}),
    "one": ((3, 1), {}),
    "empty-axis": ((3, 0), {}),
    "empty-batch": ((0, 4), {"mask": np.ones(4, bool)}),
}


@pytest.mark.parametrize("shape, kw", SOFTMAX.values(), ids=SOFTMAX.keys())
@pytest.mark.parametrize("create_graph", [False, True], ids=["grad", "second-order"])
def test_softmax_kernel_matches_the_reference(shape, kw, create_graph, device):
    _check(lambda x: tm.softmax(x, **kw), [shape], device, create_graph=create_graph)


# ---------------------------------------------------------------- tensordot with bias
TENSORDOT = {
    "feature-bias": ([(2, 3, 4), (4, 5), (5,)], 1),
    "two-axes": ([(2, 3, 4), (3, 4, 2, 3), (2, 3)], 2),
    "broadcast-bias": ([(2, 3, 4), (4, 5), (3, 1)], 1),
    "no-contraction": ([(2, 3), (4,), (4,)], 0),
    "empty": ([(0, 4), (4, 5), (5,)], 1),
}


@pytest.mark.parametrize("shapes, n", TENSORDOT.values(), ids=TENSORDOT.keys())
@pytest.mark.parametrize("create_graph", [False, True], ids=["grad", "second-order"])
def test_tensordot_kernel_matches_the_reference(shapes, n, create_graph, device):
    _check(lambda a, b, c: tm.tensordot(a, b, axes=n, bias=c), shapes, device,
           create_graph=create_graph)


def test_tensordot_without_bias(device):
    _check(lambda a, b: tm.tensordot(a, b, axes=1), [(2, 3, 4), (4, 5)], device)


# ---------------------------------------------------------------- the switch
def test_use_kernels_is_a_context_manager_that_restores_state():
    before = kernels_enabled()
    with tm.use_kernels(False):
        assert not kernels_enabled() and kernel_for("einsum") is None
        with tm.use_kernels(True):
            assert kernels_enabled() and kernel_for("einsum") is not None
        assert not kernels_enabled()
    assert kernels_enabled() == before
    with pytest.raises(RuntimeError):
        with tm.use_kernels(False):
            raise RuntimeError("inside")
    assert kernels_enabled() == before


def test_use_kernels_is_a_decorator():
    @tm.use_kernels(False)
    def inside(depth):
        return kernels_enabled() if depth == 0 else inside(depth - 1)
    assert inside(2) is False
    assert tm.use_kernels is tm.kernels.use_kernels


def test_environment_variable_turns_kernels_off():
    code = ("import tinygrad_mha as tm, numpy as np; from tinygrad_mha.kernels import "
            "kernels_enabled; x = tm.Tensor(np.ones((2, 2)), requires_grad=True); "
            "print(kernels_enabled(), type(tm.einsum('ij,jk->ik', x, x)._ctx).__name__)")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "TINYGRAD_MHA_KERNELS": "0",
           "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "Einsum"]
