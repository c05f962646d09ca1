"""What the engine keeps alive for backward, and the shortcuts it takes (issue 6).

A node keeps only what its backward reads (``Function.uses_inputs`` / ``uses_output``); other
inputs are replaced by stand-ins that share the input's graph node but hold no data. The
engine adds a third gradient contribution and later ones in place, into a sum it made itself.
Each shortcut is checked here against the plain result.
"""

import gc
import weakref

import numpy as np
import pytest

import tinygrad_mha as tm
from tinygrad_mha.gradcheck import gradcheck, gradgradcheck
from tinygrad_mha.tensor import Function


def T(data, **kw):
    return tm.Tensor(np.asarray(data, dtype=kw.pop("dtype", np.float64)), **kw)


def rng():
    return np.random.default_rng(0)


# ---------------------------------------------------------------- stand-ins free memory
def test_softmax_input_is_freed_after_forward_but_backward_still_works():
    x = T(rng().standard_normal((2, 3, 4)), requires_grad=True)
    scores = x * 2.0  # a computed tensor that only softmax reads
    ref = weakref.ref(scores.data)
    probs = tm.softmax(scores, axis=-1)
    loss = (probs * T(rng().standard_normal((2, 3, 4)))).sum()
    del scores
    gc.collect()
    assert ref() is None  # softmax's backward reads its output, not its input
    loss.backward()
    assert gradcheck(lambda x: (tm.softmax(x * 2.0, axis=-1) * T(rng().standard_normal((2, 3, 4)))).sum(),
                     [x])


def test_product_keeps_an_operand_only_for_the_other_operands_gradient():
    w = T(rng().standard_normal(3), requires_grad=True)
    hidden = w.exp()  # computed: a stand-in can take its place
    constant = T(rng().standard_normal(3))
    kept_for_w = hidden * w  # w wants a gradient: hidden's values are needed
    not_needed = hidden.sum()  # sum reads no values
    ref = weakref.ref(hidden.data)
    out = (kept_for_w.sum() + not_needed) * 1.0 + (hidden * constant).sum()
    del hidden
    gc.collect()
    assert ref() is not None  # exp's gradient and w's gradient both still read it
    out.backward()
    e = np.exp(w.numpy())
    np.testing.assert_allclose(w.grad, e * w.numpy() + e + e + e * constant.numpy(), rtol=1e-12)


def test_stand_in_has_no_data_and_a_backward_reading_it_fails_loudly():
    class ReadsInput(Function):  # wrongly declares that it reads no input values
        uses_inputs, uses_output = "none", False

        def forward(self, a):
            return a * a

        def backward(self, g):
            return g * 2 * self.inputs[0]

    x = T([1.0, 2.0], requires_grad=True)
    out = ReadsInput.apply(x * 1.0)
    assert out._ctx.inputs[0].data is None
    assert out._ctx.inputs[0].shape == (2,) and out._ctx.inputs[0].dtype == np.float64
    with pytest.raises((TypeError, AttributeError)):
        out.sum().backward()


def test_user_function_with_default_declarations_may_read_its_output():
    class Cube(Function):  # no declarations: everything is kept, self.output works
        def forward(self, a):
            return a ** 3

        def backward(self, g):
            return g * 3 * self.output / self.inputs[0]

    x = T([1.0, 2.0], requires_grad=True)
    Cube.apply(x).sum().backward()  # sum's stand-in replaces Cube's output: the node keeps its data
    np.testing.assert_allclose(x.grad, 3 * x.numpy() ** 2)


def test_retain_grad_through_a_stand_in():
    x = T([1.0, -2.0], requires_grad=True)
    middle = (x * 3.0).retain_grad()
    (middle.sum() + middle.sum()).backward()  # both consumers hold stand-ins of middle
    np.testing.assert_allclose(middle.grad, [2.0, 2.0])
    np.testing.assert_allclose(x.grad, [6.0, 6.0])


def test_grad_of_an_intermediate_seen_only_through_stand_ins():
    x = T([1.0, 2.0], requires_grad=True)
    middle = x * 3.0
    out = tm.softmax(middle).sum() + middle.sum()
    (g,) = tm.grad(out, [middle])
    np.testing.assert_allclose(g.numpy(), [1.0, 1.0], atol=1e-12)  # softmax sums to 1: no gradient


def test_computational_graph_draws_each_tensor_once(tmp_path):
    from tinygrad_mha import plotting

    x = T([1.0, 2.0], requires_grad=True)
    m = x.exp()
    out = (m * 2 + m.log()).sum()  # m reaches Mul as a stand-in and Log as itself
    tensors, functions, _ = plotting._graph(out, 80)
    assert len([t for t in tensors.values() if t.shape == (2,) and t._ctx is m._ctx]) == 1


# ---------------------------------------------------------------- in-place accumulation
def test_three_contributions_are_summed_in_place_and_match_numpy():
    a = rng().standard_normal((4, 5))
    x = T(a, requires_grad=True)
    w1, w2, w3 = (T(rng().standard_normal((5, 3)) + i) for i in range(3))
    out = sum((tm.matmul(x, w) ** 2).sum() for w in (w1, w2, w3))
    out.backward()
    want = sum(2 * (a @ w.numpy()) @ w.numpy().T for w in (w1, w2, w3))
    np.testing.assert_allclose(x.grad, want, rtol=1e-12)


def test_in_place_sum_does_not_touch_a_returned_gradient():
    # Add returns the very same gradient tensor to both of its inputs: a sum that reused it
    # would change the other input's gradient too.
    x = T([1.0, 2.0], requires_grad=True)
    y = x * 1.0
    out = (y + y) + y + (x + x)
    out.backward(np.array([1.0, 10.0]))
    np.testing.assert_allclose(x.grad, [5.0, 50.0])


def test_accumulation_with_create_graph_stays_differentiable():
    x = T(rng().standard_normal(3), requires_grad=True)

    def f(x):
        return (x * x).sum() + (x * x * x).sum() + x.exp().sum()

    assert gradgradcheck(f, [x])


def test_self_attention_uses_x_three_times_and_matches_finite_differences():
    layer = tm.MultiHeadAttention(num_heads=2, key_dim=2, dtype="float64")
    x = T(rng().standard_normal((2, 3, 4)), requires_grad=True)
    layer(x, x)
    assert gradcheck(lambda x, *w: layer(x, x), [x, *layer.weights])


# ---------------------------------------------------------------- softmax in the scores' memory
# (the softmax kernel's overwrite_x, which the fused attention kernel uses)
def _kernel_softmax(x, axis=-1, mask=None, overwrite_x=False):
    from tinygrad_mha.kernels.softmax import softmax
    x = x if isinstance(x, tm.Tensor) else T(x)
    mask = None if mask is None else np.asarray(mask)
    return softmax(x, tm.ops.common.normalize_axes(axis, x.ndim), mask, overwrite_x)


@pytest.mark.parametrize("masked", [False, True])
def test_softmax_overwrite_x_reuses_memory_and_changes_no_gradient(masked):
    a = rng().standard_normal((2, 3, 5))
    mask = rng().random((3, 5)) > 0.3 if masked else None
    up = rng().standard_normal((2, 3, 5))
    results = []
    for overwrite in (False, True):
        x = T(a, requires_grad=True)
        scores = x * 1.5
        probs = _kernel_softmax(scores, axis=-1, mask=mask, overwrite_x=overwrite)
        assert np.shares_memory(probs.data, scores.data) == overwrite
        (probs * T(up)).sum().backward()
        results.append((probs.numpy().copy(), x.grad.copy()))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-15)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-15)


def test_softmax_overwrite_x_leaves_a_read_only_array_alone():
    a = np.broadcast_to(np.arange(3.0), (2, 3))  # a read-only view
    out = _kernel_softmax(a, overwrite_x=True)
    np.testing.assert_array_equal(a, np.broadcast_to(np.arange(3.0), (2, 3)))
    np.testing.assert_allclose(out.numpy().sum(-1), 1.0)


def test_reading_output_after_declaring_not_to_says_so():
    class Wrong(Function):
        uses_inputs, uses_output = "all", False

        def forward(self, a):
            return a * 2

        def backward(self, g):
            return g * self.output

    x = T([1.0], requires_grad=True)
    out = Wrong.apply(x).sum()  # Wrong's output lives on only as Sum's stand-in
    with pytest.raises(RuntimeError, match="uses_output = False"):
        out.backward()
