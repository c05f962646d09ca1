"""A catalogue of bad inputs: each one must fail early, with the right exception type, a message
that names the argument and says what was expected, and no state changed (weights, built flag,
losses, gradients, tensors, the random state, files on disk).

Every case is one row: an id, a ``setup`` that makes the objects involved (a dict), a
``trigger`` that feeds them the bad input, the expected exception type, and regular expressions
that must all be found in the message (the argument's name, and what was expected).
The test snapshots everything in the setup dict and the random state before the trigger and
compares after it. (RuntimeError is used only for autograd misuse, as in PyTorch.)
"""

from __future__ import annotations

import io
import pickle
import re
import zipfile
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest

import tinygrad_mha as tm
from tinygrad_mha import backend, constraints, initializers, optimizers, regularizers
from tinygrad_mha.layers import Dense, EinsumDense, Embedding, LayerNormalization, Layer
from tinygrad_mha.tensor import is_grad_enabled

from fake_cupy import install

MHA = tm.MultiHeadAttention
Q_SHAPE, V_SHAPE = (2, 3, 4), (2, 5, 4)
RANDOM_BIAS = {"class_name": "RandomNormal", "config": {"stddev": 0.5, "seed": 3}}


# ---------------------------------------------------------------- helpers
@pytest.fixture(autouse=True)
def cuda_device(monkeypatch):
    """"cuda" is the real GPU when there is one, else the strict CuPy stand-in of fake_cupy,
    so every "operands on different devices" check sees a true device array."""
    if not tm.cuda_available():
        install(monkeypatch)


def fake_cuda(array) -> tm.Tensor:
    t = tm.Tensor(np.asarray(array, dtype=np.float32), device="cuda")
    assert t.device == "cuda"
    return t


def q():
    return np.random.default_rng(1).standard_normal(Q_SHAPE).astype(np.float32)


def v():
    return np.random.default_rng(2).standard_normal(V_SHAPE).astype(np.float32)


def built_mha(**kwargs):
    """A built layer with random (not all-zero) biases, a regularizer (so ``losses`` is not
    empty) and one call made, so that an activity loss exists too."""
    kwargs.setdefault("bias_initializer", RANDOM_BIAS)
    kwargs.setdefault("kernel_regularizer", "l2")
    kwargs.setdefault("activity_regularizer", "l1")
    layer = MHA(2, 3, **kwargs)
    layer(q(), v())
    return layer


def fresh_mha(**kwargs):
    return MHA(2, 3, **kwargs)


def leaf(shape=(3,), grad=True):
    x = tm.Tensor(np.arange(1.0, 1.0 + np.prod(shape)).reshape(shape), requires_grad=True)
    if grad:
        x.grad = np.full(shape, 0.5)
    return x


def saved_weights(tmp_path, name="good.npz", **kwargs):
    layer = built_mha(**kwargs)
    path = tmp_path / name
    layer.save_weights(path)
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    return layer, path, arrays


def write_npz(path, arrays, compressed=False):
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def forged_header_npz(path, arrays, key, shape):
    """An .npz whose member ``key`` has a header claiming ``shape`` but (almost) no data."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": shape})
    with zipfile.ZipFile(path, "w") as archive:
        for k, a in arrays.items():
            if k == key:
                archive.writestr(k + ".npy", header.getvalue() + b"\0" * 16)
            else:
                body = io.BytesIO()
                np.save(body, a)
                archive.writestr(k + ".npy", body.getvalue())
    return path


def flip_bytes(path, at: float):
    raw = bytearray(path.read_bytes())
    i = int(len(raw) * at)
    raw[i:i + 8] = bytes(b ^ 0xFF for b in raw[i:i + 8])
    path.write_bytes(bytes(raw))
    return path


# ---------------------------------------------------------------- state snapshots
def _array(a):
    return None if a is None else np.array(backend.to_numpy(a), copy=True)


def snapshot(obj):
    """Everything observable about ``obj`` that a failed call must leave alone."""
    if isinstance(obj, Layer):
        return ("layer", obj.built, len(obj.weights), [w.copy() for w in obj.get_weights()],
                [float(x.numpy()) for x in obj.losses], [id(w) for w in obj.weights])
    if isinstance(obj, tm.Tensor):
        return ("tensor", _array(obj.data), _array(obj.grad), obj.requires_grad, obj._ctx is None)
    if isinstance(obj, optimizers.Optimizer):
        return ("optimizer", obj.iterations, [snapshot(p) for p in obj.params],
                [{k: _array(s) for k, s in state.items()} for state in obj._states])
    if hasattr(obj, "is_dir") and obj.is_dir():  # a folder: its files and their bytes
        return ("folder", sorted((p.name, p.read_bytes()) for p in obj.iterdir()))
    if isinstance(obj, (list, tuple)):
        return tuple(snapshot(o) for o in obj)
    return ("other",)


def assert_same(before, after, where):
    if isinstance(before, np.ndarray) or isinstance(after, np.ndarray):
        assert before is not None and after is not None, where
        assert before.shape == after.shape and before.dtype == after.dtype, where
        np.testing.assert_array_equal(before, after, err_msg=where)
    elif isinstance(before, (tuple, list)):
        assert isinstance(after, (tuple, list)) and len(before) == len(after), where
        for i, (b, a) in enumerate(zip(before, after)):
            assert_same(b, a, f"{where}[{i}]")
    elif isinstance(before, dict):
        assert before.keys() == after.keys(), where
        for k in before:
            assert_same(before[k], after[k], f"{where}[{k!r}]")
    else:
        assert before == after, where


# ---------------------------------------------------------------- the catalogue
@dataclass
class Case:
    id: str
    setup: Callable[..., dict]     # (tmp_path) -> the objects involved, by name
    trigger: Callable[[dict], Any]  # feeds them the bad input
    error: type
    patterns: tuple[str, ...]      # all must be found in the message (argument, expectation)

    def __repr__(self):
        return self.id


def nothing(tmp_path):
    return {}


def with_leaf(tmp_path):
    return {"x": leaf()}


def with_matrix(tmp_path):
    return {"x": tm.Tensor(np.ones((2, 3)), requires_grad=True)}


def with_graph(tmp_path):
    x = leaf()
    return {"x": x, "y": x * 2}


def with_freed_graph(tmp_path):
    x = leaf()
    loss = (x * x).sum()
    loss.backward()
    return {"x": x, "loss": loss}


def with_built(tmp_path):
    return {"layer": built_mha()}


def with_fresh(**kwargs):
    return lambda tmp_path: {"layer": fresh_mha(**kwargs)}


def with_params(tmp_path):
    return {"p": leaf()}


def with_saved(tmp_path):
    layer, path, arrays = saved_weights(tmp_path)
    return {"layer": layer, "path": path, "arrays": arrays, "folder": tmp_path}


def with_file(make):
    """A built layer plus a hostile file made by ``make(tmp_path, arrays) -> path``."""
    def setup(tmp_path):
        layer, good, arrays = saved_weights(tmp_path)
        good.unlink()
        path = make(tmp_path, arrays)
        return {"layer": layer, "path": path, "folder": tmp_path}
    return setup


def pickled_object_array(tmp_path, arrays):
    arrays = dict(arrays)
    first = sorted(arrays)[0]
    evil = np.empty(arrays[first].shape, dtype=object)
    evil[...] = 1.0
    arrays[first] = evil
    return write_npz(tmp_path / "pickled.npz", arrays)


def raw_pickle(tmp_path, arrays):
    path = tmp_path / "raw_pickle.npz"
    path.write_bytes(pickle.dumps(arrays))
    return path


def truncated(tmp_path, arrays):
    path = write_npz(tmp_path / "full.npz", arrays)
    raw = path.read_bytes()
    path.unlink()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(raw[: len(raw) * 2 // 3])
    return cut


def corrupted(tmp_path, arrays):
    return flip_bytes(write_npz(tmp_path / "corrupt.npz", arrays), 0.5)


def corrupted_compressed(tmp_path, arrays):
    arrays = {k: np.random.default_rng(0).standard_normal(a.shape).astype(a.dtype) for k, a in arrays.items()}
    return flip_bytes(write_npz(tmp_path / "corrupt_z.npz", arrays, compressed=True), 0.4)


def renamed(tmp_path, arrays):
    return write_npz(tmp_path / "renamed.npz", {f"w{i}": a for i, a in enumerate(arrays.values())})


def missing_one(tmp_path, arrays):
    arrays = dict(arrays)
    arrays.pop(sorted(arrays)[-1])
    return write_npz(tmp_path / "short.npz", arrays)


def wrong_shape(tmp_path, arrays):
    arrays = {k: a + 1 for k, a in arrays.items()}
    last = sorted(arrays)[-1]
    arrays[last] = np.zeros(arrays[last].shape + (2,), np.float32)
    return write_npz(tmp_path / "shape.npz", arrays)


def huge_header(tmp_path, arrays):
    return forged_header_npz(tmp_path / "huge.npz", arrays, sorted(arrays)[0], (10 ** 11,))


def string_array(tmp_path, arrays):
    arrays = dict(arrays)
    first = sorted(arrays)[0]
    arrays[first] = np.full(arrays[first].shape, "x")
    return write_npz(tmp_path / "strings.npz", arrays)


def plain_npy(tmp_path, arrays):
    path = tmp_path / "one.npz"
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))
    return path


def raw_member(tmp_path, arrays):
    """A zip whose member has the weight's name but is not an .npy file at all."""
    path = tmp_path / "raw_member.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for k, a in arrays.items():
            body = io.BytesIO()
            np.save(body, a)
            archive.writestr(k if k == sorted(arrays)[0] else k + ".npy",
                             b"hello" if k == sorted(arrays)[0] else body.getvalue())
    return path


CASES = [
    # ------------------------------------------------------------ Tensor and autograd
    Case("tensor-str-data", nothing, lambda c: tm.Tensor("abc"), TypeError,
         (r"Tensor data", r"number|list|array")),
    Case("tensor-object-array", nothing, lambda c: tm.Tensor(np.array([{}, 1], dtype=object)), TypeError,
         (r"Tensor data", r"numeric")),
    Case("tensor-ragged-list", nothing, lambda c: tm.Tensor([[1.0, 2.0], [3.0]]), ValueError,
         (r"Tensor data", r"rectangular")),
    Case("tensor-complex-dtype", nothing, lambda c: tm.Tensor([1.0], dtype="complex64"), TypeError,
         (r"dtype", r"float16|float")),
    Case("tensor-int-requires-grad", nothing, lambda c: tm.Tensor([1, 2], requires_grad=True), TypeError,
         (r"requires_grad", r"floating point")),
    Case("tensor-unknown-device", nothing, lambda c: tm.Tensor([1.0], device="tpu"), ValueError,
         (r"device", r"cpu.*cuda", r"tpu")),
    Case("tensor-to-unknown-device", with_leaf, lambda c: c["x"].to("gpu"), ValueError,
         (r"device", r"cpu.*cuda")),
    Case("grad-assigned-wrong-shape", with_leaf, lambda c: setattr(c["x"], "grad", np.ones(4)), ValueError,
         (r"grad", r"\(3,\)", r"\(4,\)")),
    Case("backward-non-scalar-without-grad", with_graph, lambda c: c["y"].backward(), ValueError,
         (r"grad", r"single-element", r"\(3,\)")),
    Case("backward-grad-wrong-shape", with_graph, lambda c: c["y"].backward(np.ones(5)), ValueError,
         (r"grad", r"\(3,\)", r"\(5,\)")),
    Case("backward-twice-without-retain-graph", with_freed_graph, lambda c: c["loss"].backward(), RuntimeError,
         (r"second time", r"retain_graph=True")),
    Case("backward-without-requires-grad", nothing, lambda c: tm.Tensor(np.ones(3)).sum().backward(),
         RuntimeError, (r"backward", r"require[s]? grad")),
    Case("item-of-many-elements", with_matrix, lambda c: c["x"].item(), ValueError,
         (r"item", r"one element", r"\(2, 3\)")),
    Case("grad-of-input-without-requires-grad", with_graph,
         lambda c: tm.grad(c["y"].sum(), [tm.Tensor(np.ones(3))]), ValueError,
         (r"inputs\[0\]", r"requires_grad=True")),
    Case("grad-outputs-count", with_graph,
         lambda c: tm.grad([c["y"].sum(), c["y"].sum()], [c["x"]], grad_outputs=[None]), ValueError,
         (r"grad_outputs", r"1 entr", r"2 outputs")),
    # ------------------------------------------------------------ ops
    Case("reshape-wrong-size", with_matrix, lambda c: c["x"].reshape(4, 2), ValueError,
         (r"reshape", r"\(2, 3\)", r"\(4, 2\)")),
    Case("matmul-inner-mismatch", with_matrix, lambda c: c["x"] @ np.ones((2, 3)), ValueError,
         (r"matmul", r"\(2, 3\)", r"last axis")),
    Case("sum-axis-out-of-range", with_matrix, lambda c: c["x"].sum(axis=2), ValueError,
         (r"axis 2", r"out of range", r"2 dimensions")),
    Case("sum-axis-not-int", with_matrix, lambda c: c["x"].sum(axis=1.0), TypeError,
         (r"axis", r"int")),
    Case("einsum-subscripts-not-str", with_matrix, lambda c: tm.einsum(3, c["x"]), TypeError,
         (r"subscripts", r"str")),
    Case("einsum-operand-count", with_matrix, lambda c: tm.einsum("ij,jk->ik", c["x"]), ValueError,
         (r"einsum", r"2 operand", r"1 w")),
    Case("einsum-size-mismatch", with_matrix, lambda c: tm.einsum("ij,jk", c["x"], np.ones((4, 2))),
         ValueError, (r"subscript 'j'", r"size 3", r"4")),
    Case("softmax-float-mask", with_matrix, lambda c: tm.softmax(c["x"], mask=np.ones((2, 3))), TypeError,
         (r"mask", r"boolean", r"float64")),
    Case("softmax-string-mask", with_matrix, lambda c: tm.softmax(c["x"], mask=np.full((2, 3), "a")),
         TypeError, (r"mask", r"boolean", r"<U1")),
    Case("softmax-mask-wrong-shape", with_matrix, lambda c: tm.softmax(c["x"], mask=np.ones(4, bool)),
         ValueError, (r"mask", r"\(4,\)", r"\(2, 3\)")),
    Case("softmax-axis-repeated", with_matrix, lambda c: tm.softmax(c["x"], axis=(0, 0)), ValueError,
         (r"axis", r"repeats")),
    Case("dropout-rate-one", with_matrix, lambda c: tm.dropout(c["x"], 1.0), ValueError,
         (r"rate", r"\[0, 1\)")),
    Case("dropout-rate-negative", with_matrix, lambda c: tm.dropout(c["x"], -0.1), ValueError,
         (r"rate", r"\[0, 1\)")),
    Case("dropout-integer-tensor", nothing, lambda c: tm.dropout(tm.Tensor(np.arange(4)), 0.5), TypeError,
         (r"dropout", r"floating point", r"int")),
    Case("dropout-seed-not-int", with_matrix, lambda c: tm.dropout(c["x"], 0.5, seed="abc"), TypeError,
         (r"seed", r"int", r"'abc'")),
    Case("dropout-training-not-bool", with_matrix, lambda c: tm.dropout(c["x"], 0.5, training="no"),
         TypeError, (r"training", r"True or False")),
    Case("concatenate-shape-mismatch", with_matrix,
         lambda c: tm.concatenate([c["x"], tm.Tensor(np.ones((3, 2)))]), ValueError,
         (r"concatenate", r"\(3, 2\)", r"\(2, 3\)")),
    Case("where-string-cond", with_matrix, lambda c: tm.where(np.full(3, "a"), c["x"], 0.0), TypeError,
         (r"cond", r"boolean")),
    Case("where-cond-wrong-shape", with_matrix, lambda c: tm.where(np.ones(5, bool), c["x"], 0.0),
         ValueError, (r"cond", r"\(5,\)", r"\(2, 3\)")),
    Case("broadcast-to-incompatible", with_matrix, lambda c: c["x"].broadcast_to((3, 3)), ValueError,
         (r"broadcast", r"\(2, 3\)", r"\(3, 3\)")),
    Case("operands-on-different-devices", with_leaf, lambda c: c["x"] + fake_cuda(np.ones(3)), ValueError,
         (r"device", r"cpu", r"cuda")),
    Case("einsum-operands-on-different-devices", with_leaf,
         lambda c: tm.einsum("i,i->", c["x"], fake_cuda(np.ones(3))), ValueError,
         (r"einsum", r"device", r"cuda")),
    Case("set-seed-negative", nothing, lambda c: tm.set_seed(-1), ValueError,
         (r"seed", r"non-negative")),
    # ------------------------------------------------------------ gradcheck
    Case("gradcheck-nothing-requires-grad", nothing,
         lambda c: tm.gradcheck(lambda a: a * 2, (tm.Tensor(np.ones(2)),)), ValueError,
         (r"requires_grad", r"nothing to check")),
    Case("gradcheck-input-not-tensor", with_leaf,
         lambda c: tm.gradcheck(lambda a, b: a * b, (c["x"], np.ones(3))), TypeError,
         (r"inputs\[1\]", r"Tensor", r"ndarray")),
    Case("gradcheck-fn-returns-array", with_leaf,
         lambda c: tm.gradcheck(lambda a: a.numpy(), (c["x"],)), TypeError,
         (r"fn", r"Tensor", r"ndarray")),
    Case("gradcheck-fn-not-callable", with_leaf, lambda c: tm.gradcheck(3, (c["x"],)), TypeError,
         (r"fn", r"callable")),
    Case("gradcheck-eps-zero", with_leaf, lambda c: tm.gradcheck(lambda a: a * a, (c["x"],), eps=0),
         ValueError, (r"eps", r"positive", r"eps=0")),
    Case("gradcheck-atol-negative", with_leaf,
         lambda c: tm.gradcheck(lambda a: a * a, (c["x"],), atol=-1e-5), ValueError,
         (r"atol", r"non-negative")),
    Case("gradgradcheck-eps-not-number", with_leaf,
         lambda c: tm.gradgradcheck(lambda a: a * a, (c["x"],), eps="1e-6"), TypeError,
         (r"eps", r"number")),
    # ------------------------------------------------------------ MultiHeadAttention: shapes
    Case("mha-rank2-query", with_fresh(), lambda c: c["layer"](np.zeros((3, 4)), v()), ValueError,
         (r"query", r"rank >= 3", r"\(3, 4\)")),
    Case("mha-rank2-value", with_fresh(), lambda c: c["layer"](q(), np.zeros((5, 4))), ValueError,
         (r"value", r"rank >= 3", r"\(5, 4\)")),
    Case("mha-rank1-key", with_fresh(), lambda c: c["layer"](q(), v(), np.zeros(4)), ValueError,
         (r"key", r"rank >= 3", r"\(4,\)")),
    Case("mha-query-features-changed-after-build", with_built,
         lambda c: c["layer"](np.zeros((2, 3, 5)), v()), ValueError,
         (r"query", r"\(2, 3, 5\)", r"built for shape \(\*, \*, 4\)")),
    Case("mha-value-features-changed-after-build", with_built,
         lambda c: c["layer"](q(), np.zeros((2, 5, 7))), ValueError,
         (r"value", r"\(2, 5, 7\)", r"built for")),
    Case("mha-rank-changed-after-build", with_built,
         lambda c: c["layer"](np.zeros((2, 3, 3, 4)), np.zeros((2, 3, 5, 4))), ValueError,
         (r"query", r"\(2, 3, 3, 4\)", r"built for")),
    Case("mha-key-value-index-dims-differ", with_fresh(),
         lambda c: c["layer"](q(), v(), np.zeros((2, 6, 4))), ValueError,
         (r"value and key", r"\(2, 5, 4\)", r"\(2, 6, 4\)")),
    Case("mha-build-key-value-index-dims-differ", with_fresh(),
         lambda c: c["layer"].build(Q_SHAPE, V_SHAPE, (2, 6, 4)), ValueError,
         (r"value and key", r"\(2, 6, 4\)")),
    Case("mha-query-value-batch-differ", with_built, lambda c: c["layer"](q(), np.zeros((3, 5, 4))),
         ValueError, (r"query and value", r"axis 0", r"\(3, 5, 4\)")),
    # ------------------------------------------------------------ MultiHeadAttention: masks
    Case("mha-attention-mask-wrong-shape", with_built,
         lambda c: c["layer"](q(), v(), attention_mask=np.ones((3, 3, 5), bool)), ValueError,
         (r"attention_mask", r"\(3, 3, 5\)", r"\(2, 2, 3, 5\)")),
    Case("mha-attention-mask-too-few-axes", with_built,
         lambda c: c["layer"](q(), v(), attention_mask=np.ones(5, bool)), ValueError,
         (r"attention_mask", r"\(5,\)", r"between 2 and 4 axes")),
    Case("mha-attention-mask-string", with_built,
         lambda c: c["layer"](q(), v(), attention_mask=np.full((2, 3, 5), "yes")), TypeError,
         (r"attention_mask", r"boolean", r"<U3")),
    Case("mha-attention-mask-object", with_built,
         lambda c: c["layer"](q(), v(), attention_mask=np.full((2, 3, 5), None)), TypeError,
         (r"attention_mask", r"boolean", r"object")),
    Case("mha-additive-float-mask", with_built,
         lambda c: c["layer"](q(), v(), attention_mask=np.where(np.eye(3, 5, dtype=bool), 0.0, -1e9)[None]),
         ValueError, (r"attention_mask", r"0/1", r"additive", r"mask == 0")),
    Case("mha-nan-mask", with_built,
         lambda c: c["layer"](q(), v(), value_mask=np.full((2, 5), np.nan)), ValueError,
         (r"value_mask", r"NaN", r"0/1")),
    Case("mha-query-mask-wrong-shape", with_built,
         lambda c: c["layer"](q(), v(), query_mask=np.ones((2, 5), bool)), ValueError,
         (r"query_mask", r"\(2, 3\)", r"\(2, 5\)")),
    Case("mha-value-mask-string", with_built,
         lambda c: c["layer"](q(), v(), value_mask=np.full((2, 5), "a")), TypeError,
         (r"value_mask", r"boolean")),
    Case("mha-key-mask-ragged", with_built,
         lambda c: c["layer"](q(), v(), key_mask=[[1, 0, 1, 1, 1], [1, 1]]), ValueError,
         (r"key_mask", r"rectangular")),
    # ------------------------------------------------------------ MultiHeadAttention: arguments
    Case("mha-attention-axes-out-of-range", with_fresh(attention_axes=(3,)),
         lambda c: c["layer"](q(), v()), ValueError, (r"attention axis 3", r"out of range", r"1\.\.1")),
    Case("mha-attention-axes-duplicated", with_fresh(attention_axes=(1, -3)),
         lambda c: c["layer"](np.zeros((2, 3, 3, 4)), np.zeros((2, 3, 3, 4))), ValueError,
         (r"attention_axes=\(1, -3\)", r"twice")),
    Case("mha-attention-axes-batch", with_fresh(attention_axes=(0,)),
         lambda c: c["layer"].build(Q_SHAPE, V_SHAPE), ValueError, (r"attention axis 0", r"batch", r"1\.\.1")),
    Case("mha-attention-axes-features", with_fresh(attention_axes=(1, -1)),
         lambda c: c["layer"](np.zeros((2, 3, 3, 4)), np.zeros((2, 3, 3, 4))), ValueError,
         (r"attention axis -1", r"feature", r"1\.\.2")),
    Case("mha-attention-axes-wrong-type", nothing, lambda c: MHA(2, 3, attention_axes="1"), TypeError,
         (r"attention_axes", r"int", r"'1'")),
    Case("mha-output-shape-wrong-type", nothing, lambda c: MHA(2, 3, output_shape="x"), TypeError,
         (r"output_shape", r"int.*tuple", r"'x'")),
    Case("mha-output-shape-float-entry", nothing, lambda c: MHA(2, 3, output_shape=(2, 1.5)), TypeError,
         (r"output_shape", r"positive integer", r"1\.5")),
    Case("mha-output-shape-zero-entry", nothing, lambda c: MHA(2, 3, output_shape=(2, 0)), ValueError,
         (r"output_shape", r"positive integer")),
    Case("mha-dropout-one", nothing, lambda c: MHA(2, 3, dropout=1.0), ValueError,
         (r"dropout", r"\[0, 1\)", r"1\.0")),
    Case("mha-dropout-negative", nothing, lambda c: MHA(2, 3, dropout=-0.25), ValueError,
         (r"dropout", r"\[0, 1\)", r"-0\.25")),
    Case("mha-num-heads-zero", nothing, lambda c: MHA(0, 3), ValueError, (r"num_heads", r"positive integer")),
    Case("mha-training-not-bool", with_built, lambda c: c["layer"](q(), v(), training="yes"), TypeError,
         (r"training", r"True, False or None")),
    # ------------------------------------------------------------ MultiHeadAttention: dtypes and devices
    Case("mha-integer-query", with_fresh(), lambda c: c["layer"](q().astype(np.int64), v()), TypeError,
         (r"query", r"floating point", r"int64")),
    Case("mha-bool-value", with_built, lambda c: c["layer"](q(), v() > 0), TypeError,
         (r"value", r"floating point", r"bool")),
    Case("mha-complex-key", with_fresh(), lambda c: c["layer"](q(), v(), v() * 1j), TypeError,
         (r"key", r"numeric|float", r"complex")),
    Case("mha-string-query", with_fresh(), lambda c: c["layer"]("query", v()), TypeError,
         (r"query", r"Tensor or an array", r"str")),
    Case("mha-ragged-query", with_fresh(), lambda c: c["layer"]([[[1.0, 2.0]], [[1.0]]], v()), ValueError,
         (r"query", r"rectangular")),
    Case("mha-query-on-other-device", with_built, lambda c: c["layer"](fake_cuda(q()), v()), ValueError,
         (r"query", r"'cuda'", r"'cpu'")),
    Case("mha-mask-on-other-device", with_built,
         lambda c: c["layer"](q(), v(), attention_mask=fake_cuda(np.ones((2, 3, 5)))), ValueError,
         (r"attention_mask", r"'cuda'", r"'cpu'")),
    Case("mha-initializer-returns-wrong-shape", with_fresh(kernel_initializer=lambda shape, dtype: np.zeros(3)),
         lambda c: c["layer"](q(), v()), ValueError, (r"initializer", r"\(3,\)", r"kernel", r"\(4, 2, 3\)")),
    # ------------------------------------------------------------ set_weights
    Case("set-weights-too-few", with_built, lambda c: c["layer"].set_weights(c["layer"].get_weights()[:-1]),
         ValueError, (r"set_weights", r"8 weights", r"7 arrays")),
    Case("set-weights-too-many", with_built,
         lambda c: c["layer"].set_weights(c["layer"].get_weights() + [np.zeros(3)]), ValueError,
         (r"set_weights", r"8 weights", r"9 arrays")),
    Case("set-weights-wrong-shape", with_built,
         lambda c: c["layer"].set_weights([w + 1 for w in c["layer"].get_weights()[:-1]] + [np.zeros((4, 1))]),
         ValueError, (r"attention_output/bias", r"\(4,\)", r"\(4, 1\)")),
    Case("set-weights-strings", with_built,
         lambda c: c["layer"].set_weights([np.full(w.shape, "1") for w in c["layer"].get_weights()]),
         TypeError, (r"set_weights", r"query/kernel", r"numbers", r"<U1")),
    Case("set-weights-not-a-list", with_built, lambda c: c["layer"].set_weights(5), TypeError,
         (r"set_weights", r"arrays", r"list of 8")),
    Case("set-weights-ragged", with_built,
         lambda c: c["layer"].set_weights([[[1.0], [1.0, 2.0]]] * 8), ValueError,
         (r"set_weights", r"query/kernel", r"rectangular")),
    # ------------------------------------------------------------ other layers
    Case("dense-rank1-input", nothing, lambda c: Dense(3)(np.ones(4, np.float32)), ValueError,
         (r"Dense", r"rank >= 2", r"\(4,\)")),
    Case("dense-units-zero", nothing, lambda c: Dense(0), ValueError, (r"units", r"positive integer")),
    Case("embedding-id-out-of-range", nothing, lambda c: Embedding(5, 2)(np.array([[1, 7]])), ValueError,
         (r"ids", r"input_dim=5", r"7")),
    Case("layernorm-negative-epsilon", nothing, lambda c: LayerNormalization(epsilon=-1e-3), ValueError,
         (r"epsilon", r"non-negative")),
    Case("einsum-dense-bad-equation", nothing, lambda c: EinsumDense("ab->b", 3).build((2, 3)), ValueError,
         (r"equation", r"'ab->b'", r"ab,bc->ac")),
    # ------------------------------------------------------------ initializers, regularizers, constraints
    Case("unknown-initializer-name", nothing, lambda c: initializers.get("glorot_unifrom"), ValueError,
         (r"initializer 'glorot_unifrom'", r"known names.*glorot_uniform")),
    Case("unknown-regularizer-name", nothing, lambda c: regularizers.get("l3"), ValueError,
         (r"regularizer 'l3'", r"known names.*l2")),
    Case("unknown-constraint-name", nothing, lambda c: constraints.get("max_nrom"), ValueError,
         (r"constraint 'max_nrom'", r"known names.*max_norm")),
    Case("mha-unknown-initializer-name", nothing, lambda c: MHA(2, 3, kernel_initializer="nope"), ValueError,
         (r"initializer 'nope'", r"known names")),
    Case("initializer-identifier-wrong-type", nothing, lambda c: initializers.get(5), TypeError,
         (r"initializer identifier 5", r"name, a config dict")),
    Case("initializer-negative-shape", nothing, lambda c: initializers.GlorotUniform()((3, -1)), ValueError,
         (r"shape", r"non-negative")),
    Case("initializer-integer-dtype", nothing, lambda c: initializers.HeNormal()((3, 3), dtype="int32"),
         TypeError, (r"dtype", r"float16, float32 or float64", r"int32")),
    Case("variance-scaling-bad-mode", nothing, lambda c: initializers.VarianceScaling(mode="fan_sum"),
         ValueError, (r"mode", r"fan_in", r"'fan_sum'")),
    Case("l1-negative-factor", nothing, lambda c: regularizers.L1(-0.01), ValueError,
         (r"l1", r"non-negative", r"-0\.01")),
    Case("l2-negative-factor", nothing, lambda c: regularizers.L2(-1), ValueError,
         (r"l2", r"non-negative", r"-1")),
    Case("l1l2-negative-factor", nothing, lambda c: regularizers.L1L2(l1=0.1, l2=-0.5), ValueError,
         (r"l2", r"non-negative", r"-0\.5")),
    Case("regularizer-config-negative-factor", nothing,
         lambda c: regularizers.get({"class_name": "L2", "config": {"l2": -2.0}}), ValueError,
         (r"l2", r"non-negative")),
    Case("mha-negative-kernel-regularizer", nothing,
         lambda c: MHA(2, 3, kernel_regularizer={"class_name": "L1", "config": {"l1": -1.0}}), ValueError,
         (r"l1", r"non-negative")),
    Case("max-norm-negative", nothing, lambda c: constraints.MaxNorm(-1.0), ValueError,
         (r"max_value", r"non-negative")),
    Case("min-max-norm-min-above-max", nothing, lambda c: constraints.MinMaxNorm(2.0, 1.0), ValueError,
         (r"min_value", r"max_value")),
    Case("unit-norm-axis-not-int", nothing, lambda c: constraints.UnitNorm(axis=0.5), TypeError,
         (r"axis", r"int", r"0\.5")),
    # ------------------------------------------------------------ optimizers
    Case("optimizer-empty-params", nothing, lambda c: optimizers.SGD([]), ValueError,
         (r"params", r"non-empty")),
    Case("optimizer-single-tensor", with_params, lambda c: optimizers.Adam(c["p"]), TypeError,
         (r"params", r"list of Tensors", r"wrap it in a list")),
    Case("optimizer-param-without-grad", nothing, lambda c: optimizers.SGD([tm.Tensor(np.ones(2))]),
         ValueError, (r"params\[0\]", r"does not require grad")),
    Case("optimizer-duplicate-param", with_params, lambda c: optimizers.SGD([c["p"], c["p"]]), ValueError,
         (r"params\[1\]", r"more than once")),
    Case("sgd-negative-learning-rate", with_params, lambda c: optimizers.SGD([c["p"]], learning_rate=-0.1),
         ValueError, (r"learning_rate", r"\(0, inf\)", r"-0\.1")),
    Case("sgd-momentum-not-number", with_params, lambda c: optimizers.SGD([c["p"]], momentum="0.9"),
         TypeError, (r"momentum", r"number", r"'0\.9'")),
    Case("adam-beta-1-one", with_params, lambda c: optimizers.Adam([c["p"]], beta_1=1.0), ValueError,
         (r"beta_1", r"\[0, 1\)")),
    Case("adamw-weight-decay-none", with_params, lambda c: optimizers.AdamW([c["p"]], weight_decay=None),
         ValueError, (r"weight_decay", r"number")),
    # ------------------------------------------------------------ weight files
    Case("load-pickled-object-array", with_file(pickled_object_array), lambda c: c["layer"].load_weights(c["path"]),
         ValueError, (r"load_weights", r"pickled\.npz", r"dtype object|pickle")),
    Case("load-raw-pickle", with_file(raw_pickle), lambda c: c["layer"].load_weights(c["path"]), ValueError,
         (r"load_weights", r"raw_pickle\.npz", r"not a valid \.npz")),
    Case("load-truncated", with_file(truncated), lambda c: c["layer"].load_weights(c["path"]), ValueError,
         (r"load_weights", r"cut\.npz", r"not a valid \.npz")),
    Case("load-corrupted-bytes", with_file(corrupted), lambda c: c["layer"].load_weights(c["path"]), ValueError,
         (r"load_weights", r"corrupt\.npz", r"not a valid \.npz")),
    Case("load-corrupted-compressed", with_file(corrupted_compressed),
         lambda c: c["layer"].load_weights(c["path"]), ValueError,
         (r"load_weights", r"corrupt_z\.npz", r"not a valid \.npz")),
    Case("load-wrong-names", with_file(renamed), lambda c: c["layer"].load_weights(c["path"]), ValueError,
         (r"load_weights", r"w0", r"expected.*query/kernel")),
    Case("load-missing-weight", with_file(missing_one), lambda c: c["layer"].load_weights(c["path"]), ValueError,
         (r"load_weights", r"expected.*attention_output/bias")),
    Case("load-wrong-shape", with_file(wrong_shape), lambda c: c["layer"].load_weights(c["path"]), ValueError,
         (r"load_weights", r"shape \(4, 2\)", r"attention_output/bias", r"\(4,\)")),
    Case("load-forged-huge-header", with_file(huge_header), lambda c: c["layer"].load_weights(c["path"]),
         ValueError, (r"load_weights", r"\(100000000000,\)", r"query/kernel")),
    Case("load-string-array", with_file(string_array), lambda c: c["layer"].load_weights(c["path"]), ValueError,
         (r"load_weights", r"dtype <U1", r"numbers")),
    Case("load-plain-npy", with_file(plain_npy), lambda c: c["layer"].load_weights(c["path"]), ValueError,
         (r"load_weights", r"one\.npz", r"not a valid \.npz")),
    Case("load-member-not-npy", with_file(raw_member), lambda c: c["layer"].load_weights(c["path"]), ValueError,
         (r"load_weights", r"raw_member\.npz", r"not a valid \.npz")),
    Case("load-path-none", with_built, lambda c: c["layer"].load_weights(None), TypeError,
         (r"load_weights", r"path", r"NoneType")),
    Case("load-into-unbuilt-layer", with_file(lambda tmp_path, arrays: write_npz(tmp_path / "w.npz", arrays)),
         lambda c: fresh_mha().load_weights(c["path"]), ValueError, (r"load_weights", r"build")),
    Case("save-unbuilt-layer", lambda tmp_path: {"folder": tmp_path},
         lambda c: fresh_mha().save_weights(c["folder"] / "w.npz"), ValueError, (r"save_weights", r"built")),
    Case("save-without-npz-suffix", with_saved, lambda c: c["layer"].save_weights(c["folder"] / "w.bin"),
         ValueError, (r"save_weights", r"path", r"\.npz", r"w\.bin")),
]


def test_the_catalogue_is_large_and_ids_are_unique():
    assert len(CASES) >= 45
    ids = [c.id for c in CASES]
    assert len(set(ids)) == len(ids)


@pytest.fixture
def seeded():
    tm.set_seed(1234)
    backend.generator("cpu")  # exists before the case, so any draw shows in get_state()
    yield
    tm.set_seed(None)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, tmp_path, seeded):
    objects = case.setup(tmp_path)
    backend.generator("cpu")
    before = {name: snapshot(obj) for name, obj in objects.items()}
    rng_before = backend.get_state()

    with pytest.raises(case.error) as info:
        case.trigger(objects)

    message = str(info.value)
    for pattern in case.patterns:
        assert re.search(pattern, message, flags=re.S), f"{case.id}: {pattern!r} not in message {message!r}"
    if case.error is not RuntimeError:  # RuntimeError is kept for autograd misuse
        assert not isinstance(info.value, RuntimeError), case.id
    # nothing changed: the objects involved, the random state, the grad mode
    for name, obj in objects.items():
        assert_same(before[name], snapshot(obj), f"{case.id}: {name}")
    assert backend.get_state() == rng_before, f"{case.id}: the random state moved"
    assert is_grad_enabled()


# ---------------------------------------------------------------- beyond one call: the objects still work
def test_a_layer_that_refused_inputs_still_works_and_matches_a_fresh_copy():
    layer = built_mha(dtype="float64")
    twin = built_mha(dtype="float64")
    twin.set_weights(layer.get_weights())
    for bad in (lambda: layer(np.zeros((2, 3, 5)), v()), lambda: layer(q(), v(), attention_mask=np.ones(7, bool)),
                lambda: layer(fake_cuda(q()), v()), lambda: layer.set_weights([np.zeros(1)] * 8)):
        with pytest.raises((ValueError, TypeError)):
            bad()
    np.testing.assert_array_equal(layer(q(), v()).numpy(), twin(q(), v()).numpy())
    np.testing.assert_array_equal([x.item() for x in layer.losses], [x.item() for x in twin.losses])


def test_a_second_build_replaces_the_weights_instead_of_adding_to_them():
    layer = MHA(2, 3)
    layer.build(Q_SHAPE, V_SHAPE)
    layer.build((2, 3, 6), V_SHAPE)
    assert len(layer.weights) == 8 and layer.weights[0].shape == (6, 2, 3)
    assert layer(np.zeros((2, 3, 6)), v()).shape == (2, 3, 6)


def test_an_initializer_failing_midway_leaves_the_layer_unbuilt():
    calls = []

    def picky(shape, dtype):  # fine for the query kernel, wrong for every later one
        calls.append(shape)
        return np.zeros(shape if len(calls) == 1 else (1,), dtype)

    layer = MHA(2, 3, kernel_initializer=picky)
    with pytest.raises(ValueError, match="initializer"):
        layer(q(), v())
    assert len(calls) == 2 and not layer.built and layer.weights == [] and layer.losses == []


def test_gradcheck_gives_the_inputs_back_unperturbed_when_fn_raises():
    x = leaf((2, 2), grad=False)
    original = x.numpy().copy()
    count = [0]

    def flaky(a):
        count[0] += 1
        if count[0] == 4:
            raise ArithmeticError("boom")
        return a * a

    for fast in (False, True):
        count[0] = 0
        with pytest.raises(ArithmeticError, match="boom"):
            tm.gradcheck(flaky, (x,), fast=fast)
        np.testing.assert_array_equal(x.numpy(), original)


def test_integer_casts_leave_the_graph():
    # an int cast has no derivative: it must not pass gradients straight through
    x = tm.Tensor(np.array([1.4, 2.6]), requires_grad=True)
    ids = x.astype("int64")
    assert not ids.requires_grad and ids._ctx is None
    with pytest.raises(RuntimeError, match="require"):
        (ids * 2).sum().backward()
    assert x.grad is None


@pytest.mark.skipif(not tm.cuda_available(), reason="mixing real devices needs CuPy and a GPU")
def test_mismatched_real_devices():
    layer = built_mha()
    before = snapshot(layer)
    x = tm.Tensor(np.ones(3), device="cuda")
    with pytest.raises(ValueError, match="device"):
        tm.Tensor(np.ones(3)) + x
    with pytest.raises(ValueError, match=r"query.*cuda.*cpu"):
        layer(tm.Tensor(q(), device="cuda"), v())
    with pytest.raises(ValueError, match=r"attention_mask.*cuda"):
        layer(q(), v(), attention_mask=tm.Tensor(np.ones((2, 3, 5), bool), device="cuda"))
    assert_same(before, snapshot(layer), "layer")


def test_the_cuda_tensors_above_live_on_the_cuda_module():
    # real CuPy or its stand-in: the array's own module answers, whatever was imported before
    t = fake_cuda(np.ones(2))
    assert t.device == "cuda" and backend.device_of(t.data) == "cuda"
    assert backend.array_module(t.data) is backend.xp_for("cuda") is not np
