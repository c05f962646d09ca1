"""Stress: very deep graphs back-propagate (iteratively, no recursion limit); thousands of
training steps keep memory flat and leave no reference cycles behind; inference under
``no_grad`` records no graph at all. The slow ones are marked ``slow`` and still run in CI.
"""

import gc
import tracemalloc
import weakref

import numpy as np
import pytest

import tinygrad_mha as tm
from tinygrad_mha.layers import Dense, LayerNormalization, Sequential
from tinygrad_mha.optimizers import Adam


NUMPY_DATA = tracemalloc.DomainFilter(True, 389047)  # NumPy traces array data in this domain


def live_tensors() -> int:
    return sum(isinstance(o, tm.Tensor) for o in gc.get_objects())


# ---------------------------------------------------------------- deep graphs
@pytest.mark.slow
def test_100000_op_chain_of_mixed_ops_backpropagates():
    x = tm.Tensor(np.array([[0.5, -1.0], [2.0, 0.25]]), requires_grad=True)
    y = x
    for i in range(25_000):  # four ops per turn: 100,000 nodes, each depending on the last
        y = (y * (2.0 if i % 2 else 0.5)).reshape(4).reshape(2, 2) + 1e-3
    first = weakref.ref(y._ctx)
    loss = (y * y).sum()
    (g,) = tm.grad(loss, [x], retain_graph=True)   # through tm.grad, keeping the graph ...
    np.testing.assert_allclose(g.numpy(), 2 * y.numpy(), rtol=1e-12)  # the scalings cancel exactly
    y.backward(np.ones((2, 2)))                      # ... then through backward, which frees it
    np.testing.assert_array_equal(x.grad, np.ones((2, 2)))
    with pytest.raises(RuntimeError, match="second time"):
        y.backward(np.ones((2, 2)))
    del y, loss
    assert first() is None  # the whole chain is released once nothing refers to it


@pytest.mark.slow
def test_100000_op_chain_of_nonlinear_ops_matches_finite_differences():
    x = tm.Tensor(np.array([0.3, -0.2]), requires_grad=True)

    def chain(t):
        for _ in range(50_000):  # tanh, then a multiply: 100,000 ops
            t = t.tanh() * 1.0001
        return t

    assert tm.gradcheck(chain, (x,), eps=1e-6, atol=1e-9, rtol=1e-5)


def test_1000_dense_layers_backpropagate_and_match_finite_differences():
    layers = [Dense(4, activation="tanh", dtype="float64", kernel_initializer=tm.initializers.Orthogonal(seed=i),
                    bias_initializer=tm.initializers.RandomNormal(stddev=0.1, seed=i)) for i in range(1000)]
    model = Sequential(layers)
    x = tm.Tensor(np.random.default_rng(0).standard_normal((3, 4)), requires_grad=True)
    out = model(x)
    assert len(model.weights) == 2000
    out.sum().backward()
    assert np.isfinite(x.grad).all() and np.abs(x.grad).max() > 0
    assert all(w.grad is not None and np.isfinite(w.grad).all() for w in model.weights)
    x.zero_grad()
    assert tm.gradcheck(lambda x, *weights: model(x), (x, layers[0].kernel, layers[500].kernel, layers[-1].bias),
                        fast=True, atol=1e-8, rtol=1e-5)


@pytest.mark.slow
def test_1000_attention_blocks_with_residuals_backpropagate():
    rng = np.random.default_rng(1)
    blocks = [tm.MultiHeadAttention(1, 2, dtype="float64", seed=i,
                                    kernel_initializer=tm.initializers.RandomNormal(stddev=0.05, seed=i))
              for i in range(1000)]
    norm = LayerNormalization(dtype="float64")

    def model(x):
        for block in blocks:
            x = x + block(x, x)
        return norm(x)

    x = tm.Tensor(rng.standard_normal((1, 3, 2)), requires_grad=True)
    model(x).sum().backward()
    assert np.isfinite(x.grad).all()
    assert all(np.isfinite(w.grad).all() for b in blocks for w in b.weights)
    x.zero_grad()
    assert tm.gradcheck(model, (x,), fast=True, atol=1e-7, rtol=1e-4)


# ---------------------------------------------------------------- memory over many steps
def small_model():
    tm.set_seed(0)
    attention = tm.MultiHeadAttention(2, 4, kernel_regularizer="l2")
    head = Dense(3)
    x = np.random.default_rng(0).standard_normal((4, 5, 6)).astype(np.float32)
    head(attention(x, x))
    params = attention.weights + head.weights
    return attention, head, params


def train_step(attention, head, opt, x, y, training=True):
    out = head(attention(x, x, training=training))
    loss = ((out - y) ** 2).mean() + sum(attention.losses)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


@pytest.mark.slow
def test_2000_training_steps_keep_memory_flat_and_release_every_graph():
    attention, head, params = small_model()
    opt = Adam(params, learning_rate=1e-3)
    rng = np.random.default_rng(1)
    batches = [tm.Tensor(rng.standard_normal((4, 5, 6)).astype(np.float32)) for _ in range(8)]
    targets = [rng.standard_normal((4, 5, 3)).astype(np.float32) for _ in range(8)]

    gc.collect()
    gc.disable()  # only reference counting frees memory now: a cycle anywhere would pile up
    tracemalloc.start()
    try:
        memory, arrays = {}, {}
        for step in range(1, 2001):
            loss = train_step(attention, head, opt, batches[step % 8], targets[step % 8])
            if step == 1:
                first_loss = loss.item()
            if step % 250 == 0:
                graph = weakref.ref(loss._ctx)
                node = weakref.ref(loss)
                del loss
                assert node() is None and graph() is None  # freed at once, by refcount alone
            if step in (200, 1000, 2000):
                memory[step] = tracemalloc.get_traced_memory()[0]
                if step != 1000:
                    snapshot = tracemalloc.take_snapshot().filter_traces([NUMPY_DATA])
                    arrays[step] = sum(s.size for s in snapshot.statistics("filename"))
            if step == 200:
                tensors_200 = live_tensors()
        tensors_2000 = live_tensors()
    finally:
        tracemalloc.stop()
        gc.enable()
    assert tensors_2000 <= tensors_200, (tensors_200, tensors_2000)
    # array data (NumPy's own tracemalloc domain) does not grow at all ...
    assert arrays[2000] - arrays[200] <= 4096, arrays
    # ... and the rest only by CPython's bounded free lists (2000 tuples per size, dicts ...),
    # which fill up over the first few hundred steps and then stay put
    assert memory[2000] - memory[200] < 256 * 1024, memory
    assert memory[2000] - memory[1000] < 16 * 1024, memory
    assert gc.collect() == 0  # the 2000 steps left no cyclic garbage at all
    assert opt.iterations == 2000
    assert train_step(attention, head, opt, batches[0], targets[0]).item() < first_loss


def test_dropout_training_and_failed_steps_leave_no_cycles():
    attention, head, params = small_model()
    attention.dropout = 0.3
    opt = Adam(params)
    x = tm.Tensor(np.ones((4, 5, 6), np.float32))
    y = np.zeros((4, 5, 3), np.float32)
    train_step(attention, head, opt, x, y)  # the first step creates every parameter's .grad
    gc.collect()
    gc.disable()
    try:
        before = live_tensors()
        for _ in range(30):
            train_step(attention, head, opt, x, y)
            with pytest.raises(ValueError):  # a failing call midway records nothing that lingers
                attention(x, np.ones((4, 5, 7), np.float32))
        after = live_tensors()
    finally:
        gc.enable()
    assert after <= before
    assert gc.collect() == 0


# ---------------------------------------------------------------- inference records nothing
def test_no_grad_inference_allocates_no_graph():
    attention, head, params = small_model()
    x = tm.Tensor(np.random.default_rng(2).standard_normal((4, 5, 6)).astype(np.float32), requires_grad=True)
    with tm.no_grad():
        out, scores = attention(x, x, return_attention_scores=True)
        logits = head(out)
    for t in (out, scores, logits):
        assert t._ctx is None and not t.requires_grad

    @tm.no_grad()
    def predict(inputs):
        return head(attention(inputs, inputs))

    assert predict(x)._ctx is None
    # with grad on, the same call does record a graph (so the check above means something)
    assert head(attention(x, x))._ctx is not None


def test_no_grad_inference_keeps_only_its_outputs_in_memory():
    attention, head, params = small_model()
    x = tm.Tensor(np.random.default_rng(3).standard_normal((64, 16, 6)).astype(np.float32))
    with tm.no_grad():
        head(attention(x, x))  # warm caches (einsum plans, lru caches)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        with tm.no_grad():
            logits = head(attention(x, x))
        kept = tracemalloc.get_traced_memory()[0] - base
        with_graph = head(attention(x, x))
        kept_with_graph = tracemalloc.get_traced_memory()[0] - base - kept
    finally:
        tracemalloc.stop()
    assert kept < logits.data.nbytes + 16 * 1024, kept
    assert kept_with_graph > 10 * logits.data.nbytes  # the graph holds the intermediates alive
    del with_graph
