"""Layer plumbing through MultiHeadAttention: weight order and shapes, get/set/save/load,
configs, explicit build, shape and argument validation, and devices."""

import json
import os

import numpy as np
import pytest

import tinygrad_mha as tm
from tinygrad_mha import constraints, initializers, regularizers

MHA = tm.MultiHeadAttention
RANDOM_BIAS = {"class_name": "RandomNormal", "config": {"stddev": 0.5, "seed": 3}}


def built(*shapes, **kwargs):
    kwargs.setdefault("bias_initializer", RANDOM_BIAS)
    heads = kwargs.pop("num_heads", 2)
    kdim = kwargs.pop("key_dim", 3)
    layer = MHA(heads, kdim, **kwargs)
    layer.build(*shapes)
    return layer


def snapshot(layer):
    return [w.copy() for w in layer.get_weights()]


def assert_weights_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


# ---------------------------------------------------------------- weights: order and shapes
def test_weight_order_names_and_shapes():
    layer = built((2, 3, 5), (2, 4, 6), (2, 4, 7), num_heads=4, key_dim=3, value_dim=2)
    names = [w.name.split("/")[-2:] for w in layer.weights]
    assert names == [["query", "kernel"], ["query", "bias"], ["key", "kernel"], ["key", "bias"],
                     ["value", "kernel"], ["value", "bias"],
                     ["attention_output", "kernel"], ["attention_output", "bias"]]
    assert [w.shape for w in layer.weights] == [
        (5, 4, 3), (4, 3),   # query: (query_features, heads, key_dim)
        (7, 4, 3), (4, 3),   # key: (key_features, heads, key_dim)
        (6, 4, 2), (4, 2),   # value: (value_features, heads, value_dim)
        (4, 2, 5), (5,),     # output: (heads, value_dim, query_features)
    ]
    assert layer.trainable_weights == layer.weights or all(
        a is b for a, b in zip(layer.trainable_weights, layer.weights))
    assert all(isinstance(w, tm.layers.Parameter) for w in layer.weights)
    assert [a.shape for a in layer.get_weights()] == [w.shape for w in layer.weights]


def test_weight_order_with_gate_and_output_shape():
    layer = built((2, 3, 5), (2, 4, 6), num_heads=2, key_dim=3, value_dim=4, use_gate=True,
                  output_shape=(2, 3))
    names = [w.name.split("/")[-2] for w in layer.weights]
    assert names == ["query", "query", "key", "key", "gate", "gate", "value", "value",
                     "attention_output", "attention_output"]
    assert [w.shape for w in layer.weights] == [
        (5, 2, 3), (2, 3), (6, 2, 3), (2, 3), (5, 2, 4), (2, 4), (6, 2, 4), (2, 4),
        (2, 4, 2, 3), (2, 3)]


def test_weights_without_bias_and_for_rank4_inputs():
    layer = built((2, 3, 4, 5), (2, 6, 7, 8), use_bias=False, output_shape=9)
    assert [w.shape for w in layer.weights] == [(5, 2, 3), (8, 2, 3), (8, 2, 3), (2, 3, 9)]
    assert [w.name.split("/")[-1] for w in layer.weights] == ["kernel"] * 4
    assert layer.trainable_weights == layer.weights or len(layer.trainable_weights) == 4


def test_weights_empty_before_build():
    layer = MHA(2, 3)
    assert layer.weights == [] and layer.get_weights() == [] and not layer.built


# ---------------------------------------------------------------- get / set
def test_get_set_weights_round_trip():
    a = built((2, 3, 4), (2, 5, 4))
    b = built((2, 3, 4), (2, 5, 4), bias_initializer="zeros")
    b.set_weights(a.get_weights())
    assert_weights_equal(a.get_weights(), b.get_weights())
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(a(x, x).numpy(), b(x, x).numpy())
    got = a.get_weights()
    got[0][...] = 123.0  # get_weights returns copies
    assert not np.any(a.get_weights()[0] == 123.0)
    identities = [id(w) for w in a.weights]
    a.set_weights([w * 2 for w in a.get_weights()])
    assert [id(w) for w in a.weights] == identities  # parameters keep their identity


def test_set_weights_wrong_count_changes_nothing():
    layer = built((2, 3, 4), (2, 5, 4))
    before = snapshot(layer)
    arrays = [w + 1 for w in before]
    for bad in (arrays[:-1], arrays + [arrays[-1]], []):
        with pytest.raises(ValueError, match=rf"8 weights.*{len(bad)} arrays|{len(bad)}.*8"):
            layer.set_weights(bad)
        assert_weights_equal(snapshot(layer), before)


@pytest.mark.parametrize("index", [0, 3, 7])
def test_set_weights_wrong_shape_names_weight_and_shapes_and_changes_nothing(index):
    layer = built((2, 3, 4), (2, 5, 4))
    before = snapshot(layer)
    arrays = [w + 1 for w in before]
    good_shape = arrays[index].shape
    arrays[index] = np.zeros(good_shape + (2,))
    with pytest.raises(ValueError) as info:
        layer.set_weights(arrays)
    message = str(info.value)
    assert layer.weights[index].name in message
    assert str(good_shape) in message and str(good_shape + (2,)) in message
    assert_weights_equal(snapshot(layer), before)


# ---------------------------------------------------------------- save / load
def test_save_load_round_trip_is_exact(tmp_path):
    a = built((2, 3, 4), (2, 5, 6), dtype="float64", use_gate=True)
    path = tmp_path / "mha.npz"
    a.save_weights(path)
    b = built((2, 3, 4), (2, 5, 6), dtype="float64", use_gate=True, bias_initializer="ones")
    b.load_weights(str(path))
    assert_weights_equal(a.get_weights(), b.get_weights())
    with np.load(path, allow_pickle=False) as data:  # a plain npz, no pickles
        assert len(data.files) == 10


def keyed(path):
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def test_load_refuses_wrong_names(tmp_path):
    other = built((2, 3, 4), (2, 5, 4), use_gate=True)
    other.save_weights(tmp_path / "gate.npz")
    layer = built((2, 3, 4), (2, 5, 4))
    before = snapshot(layer)
    with pytest.raises(ValueError):
        layer.load_weights(tmp_path / "gate.npz")
    assert_weights_equal(snapshot(layer), before)
    # the same number of arrays under different names
    layer.save_weights(tmp_path / "good.npz")
    arrays = keyed(tmp_path / "good.npz")
    renamed = {f"renamed_{i}": v for i, v in enumerate(arrays.values())}
    np.savez(tmp_path / "renamed.npz", **renamed)
    with pytest.raises(ValueError, match="renamed_0"):
        layer.load_weights(tmp_path / "renamed.npz")
    assert_weights_equal(snapshot(layer), before)


def test_load_refuses_wrong_shapes_and_changes_nothing(tmp_path):
    layer = built((2, 3, 4), (2, 5, 4))
    layer.save_weights(tmp_path / "good.npz")
    arrays = keyed(tmp_path / "good.npz")
    last = sorted(arrays)[-1]
    arrays = {k: v + 1 for k, v in arrays.items()}
    arrays[last] = np.zeros(arrays[last].shape + (1,), dtype=np.float32)
    np.savez(tmp_path / "bad_shape.npz", **arrays)
    before = snapshot(layer)
    with pytest.raises(ValueError, match="shape"):
        layer.load_weights(tmp_path / "bad_shape.npz")
    assert_weights_equal(snapshot(layer), before)
    # a layer built for other input features refuses the good file too
    wider = built((2, 3, 5), (2, 5, 4))
    wider_before = snapshot(wider)
    with pytest.raises(ValueError, match="shape"):
        wider.load_weights(tmp_path / "good.npz")
    assert_weights_equal(snapshot(wider), wider_before)


def test_load_refuses_pickled_object_arrays(tmp_path):
    layer = built((2, 3, 4), (2, 5, 4))
    layer.save_weights(tmp_path / "good.npz")
    arrays = keyed(tmp_path / "good.npz")
    first = sorted(arrays)[0]
    evil = np.empty(arrays[first].shape, dtype=object)
    evil[...] = 1.0
    arrays[first] = evil
    np.savez(tmp_path / "pickled.npz", **arrays)
    before = snapshot(layer)
    with pytest.raises(ValueError):
        layer.load_weights(tmp_path / "pickled.npz")
    assert_weights_equal(snapshot(layer), before)


@pytest.mark.parametrize("keep", [0, 10, 0.5, 0.9])
def test_load_refuses_truncated_or_garbage_files(tmp_path, keep):
    layer = built((2, 3, 4), (2, 5, 4))
    layer.save_weights(tmp_path / "good.npz")
    raw = (tmp_path / "good.npz").read_bytes()
    n = keep if isinstance(keep, int) else int(len(raw) * keep)
    (tmp_path / "cut.npz").write_bytes(raw[:n])
    before = snapshot(layer)
    with pytest.raises(ValueError):
        layer.load_weights(tmp_path / "cut.npz")
    assert_weights_equal(snapshot(layer), before)


def test_load_refuses_a_plain_npy_and_a_missing_file(tmp_path):
    layer = built((2, 3, 4), (2, 5, 4))
    np.save(tmp_path / "one.npy", np.zeros(3))
    before = snapshot(layer)
    with pytest.raises(ValueError):
        layer.load_weights(tmp_path / "one.npy")
    with pytest.raises((ValueError, OSError)):
        layer.load_weights(tmp_path / "missing.npz")
    assert_weights_equal(snapshot(layer), before)


def test_save_and_load_need_a_built_layer(tmp_path):
    with pytest.raises(ValueError):
        MHA(2, 3).save_weights(tmp_path / "x.npz")
    assert not (tmp_path / "x.npz").exists()
    built((2, 3, 4), (2, 5, 4)).save_weights(tmp_path / "x.npz")
    with pytest.raises(ValueError):
        MHA(2, 3).load_weights(tmp_path / "x.npz")


def test_failed_save_leaves_no_partial_file(tmp_path, monkeypatch):
    layer = built((2, 3, 4), (2, 5, 4))

    def broken_savez(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    target = tmp_path / "w.npz"
    with pytest.raises(OSError, match="disk full"):
        layer.save_weights(target)
    assert os.listdir(tmp_path) == []
    # an existing file survives a failed overwrite untouched
    monkeypatch.undo()
    layer.save_weights(target)
    good = target.read_bytes()
    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError):
        layer.save_weights(target)
    assert os.listdir(tmp_path) == ["w.npz"] and target.read_bytes() == good


def test_save_into_a_missing_folder_fails_without_creating_anything(tmp_path):
    layer = built((2, 3, 4), (2, 5, 4))
    with pytest.raises(OSError):
        layer.save_weights(tmp_path / "nope" / "w.npz")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- config
def test_get_config_is_json_and_from_config_rebuilds_an_equivalent_layer():
    layer = MHA(3, 2, value_dim=4, dropout=0.25, use_bias=True, output_shape=(2, 3),
                attention_axes=(1, 2), kernel_initializer=initializers.HeNormal(seed=4),
                bias_initializer="ones", kernel_regularizer=regularizers.L2(0.1),
                bias_regularizer="l1", activity_regularizer=regularizers.L1L2(0.01, 0.02),
                kernel_constraint=constraints.MaxNorm(2.0, axis=0), bias_constraint="non_neg",
                use_gate=True, sliding_window=3, seed=11, name="attn", dtype="float64")
    config = layer.get_config()
    text = json.dumps(config)
    config = json.loads(text)
    clone = MHA.from_config(config)
    assert clone.get_config() == config
    assert clone.name == "attn"

    rng = np.random.default_rng(0)
    q, v = rng.standard_normal((2, 3, 2, 4)), rng.standard_normal((2, 2, 3, 4))
    out = layer(q, v)
    clone(q, v)
    assert [w.shape for w in clone.weights] == [w.shape for w in layer.weights]
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(clone(q, v).numpy(), out.numpy())
    np.testing.assert_allclose([x.item() for x in clone.losses], [x.item() for x in layer.losses])
    # dropout with the same seed matches too
    layer._dropout_rng = clone._dropout_rng = None
    np.testing.assert_array_equal(clone(q, v, training=True).numpy(), layer(q, v, training=True).numpy())


def test_default_config_round_trip():
    config = MHA(2, 3).get_config()
    json.dumps(config)
    assert MHA.from_config(config).get_config() == config
    assert config["value_dim"] == 3 and config["output_shape"] is None and config["attention_axes"] is None


# ---------------------------------------------------------------- build and shape checks
def test_explicit_build_then_call():
    layer = MHA(2, 3, dtype="float64")
    layer.build((2, 4, 5), (2, 6, 7))
    assert layer.built and len(layer.weights) == 8
    rng = np.random.default_rng(0)
    out = layer(rng.standard_normal((2, 4, 5)), rng.standard_normal((2, 6, 7)))
    assert out.shape == (2, 4, 5)
    # the batch and the index sizes may change after build, the features may not
    assert layer(rng.standard_normal((3, 2, 5)), rng.standard_normal((3, 5, 7))).shape == (3, 2, 5)

    keyed_layer = MHA(2, 3)
    keyed_layer.build((2, 4, 5), (2, 6, 7), (2, 6, 8))
    assert keyed_layer.weights[2].shape == (8, 2, 3)
    q = rng.standard_normal((2, 4, 5)).astype(np.float32)
    assert keyed_layer(q, rng.standard_normal((2, 6, 7)), rng.standard_normal((2, 6, 8))).shape == (2, 4, 5)


@pytest.mark.parametrize("which", ["query", "value", "key"])
def test_feature_size_changed_after_build(which):
    rng = np.random.default_rng(0)
    shapes = {"query": (2, 3, 4), "value": (2, 5, 6), "key": (2, 5, 7)}
    layer = MHA(2, 3)
    layer(*(rng.standard_normal(shapes[n]).astype(np.float32) for n in ("query", "value", "key")))
    before = snapshot(layer)
    shapes[which] = shapes[which][:-1] + (shapes[which][-1] + 1,)
    with pytest.raises(ValueError, match=which):
        layer(*(rng.standard_normal(shapes[n]) for n in ("query", "value", "key")))
    assert_weights_equal(snapshot(layer), before)


def test_rank_changed_after_build():
    layer = MHA(2, 3)
    x = np.zeros((2, 3, 4), dtype=np.float32)
    layer(x, x)
    y = np.zeros((2, 3, 3, 4), dtype=np.float32)
    with pytest.raises(ValueError):
        layer(y, y)


def test_key_and_value_index_dims_must_agree():
    layer = MHA(2, 3)
    with pytest.raises(ValueError, match=r"\(2, 5, 4\).*\(2, 6, 4\)"):
        layer(np.zeros((2, 3, 4)), np.zeros((2, 5, 4)), np.zeros((2, 6, 4)))
    with pytest.raises(ValueError):
        layer.build((2, 3, 4), (2, 5, 4), (2, 6, 4))
    assert not layer.built and layer.weights == []


def test_query_and_value_batch_axes_must_agree():
    layer = MHA(2, 3, attention_axes=(2,))
    with pytest.raises(ValueError):
        layer(np.zeros((2, 3, 4, 5)), np.zeros((2, 4, 4, 5)))
    with pytest.raises(ValueError):
        MHA(2, 3)(np.zeros((2, 3, 4)), np.zeros((3, 3, 4)))


@pytest.mark.parametrize("q_shape, v_shape", [((3, 4), (3, 4)), ((2, 3, 4), (3, 4)), ((4,), (4,))])
def test_rank_below_three_is_refused(q_shape, v_shape):
    layer = MHA(2, 3)
    with pytest.raises(ValueError, match="rank"):
        layer(np.zeros(q_shape), np.zeros(v_shape))
    assert not layer.built


@pytest.mark.parametrize("axes, rank", [
    ((0,), 3), ((-1,), 3), ((2,), 3), ((3,), 4), ((-4,), 4), ((5,), 4), ((-7,), 4),
    ((1, 1), 4), ((1, -3), 4), ((2, -3, 1), 5), ((1, 0), 4),
])
def test_bad_attention_axes_are_refused_at_build(axes, rank):
    layer = MHA(2, 3, attention_axes=axes)
    shape = (2,) + (3,) * (rank - 2) + (4,)
    with pytest.raises(ValueError, match="axis|axes"):
        layer(np.zeros(shape), np.zeros(shape))
    with pytest.raises(ValueError, match="axis|axes"):
        layer.build(shape, shape)
    assert not layer.built and layer.weights == []


@pytest.mark.parametrize("kwargs, name", [
    ({"num_heads": 0}, "num_heads"), ({"num_heads": -2}, "num_heads"), ({"num_heads": 2.0}, "num_heads"),
    ({"num_heads": True}, "num_heads"), ({"key_dim": -1}, "key_dim"), ({"key_dim": None}, "key_dim"),
    ({"value_dim": 2.5}, "value_dim"), ({"value_dim": 0}, "value_dim"), ({"dropout": 1.0}, "dropout"),
    ({"dropout": -0.1}, "dropout"), ({"dropout": "0.5"}, "dropout"), ({"output_shape": "x"}, "output_shape"),
    ({"output_shape": (2, 0)}, "output_shape"), ({"output_shape": ()}, "output_shape"),
    ({"attention_axes": "a"}, "attention_axes"), ({"attention_axes": (1.5,)}, "attention_axes"),
    ({"attention_axes": ()}, "attention_axes"), ({"sliding_window": 0}, "sliding_window"),
    ({"sliding_window": 1.5}, "sliding_window"), ({"seed": -1}, "seed"), ({"seed": "s"}, "seed"),
    ({"use_bias": "yes"}, "use_bias"), ({"use_gate": 1}, "use_gate"), ({"dtype": "int32"}, "dtype"),
    ({"kernel_initializer": "no_such_init"}, "no_such_init"),
    ({"kernel_regularizer": "no_such_reg"}, "no_such_reg"),
    ({"bias_constraint": 5}, "constraint"),
])
def test_bad_constructor_arguments_name_the_argument(kwargs, name):
    args = {"num_heads": 2, "key_dim": 3, **kwargs}
    with pytest.raises((ValueError, TypeError), match=name):
        MHA(**args)


def test_wrong_attention_mask_shape_names_both_shapes():
    layer = MHA(2, 3)
    q, v = np.zeros((2, 3, 4), np.float32), np.zeros((2, 5, 4), np.float32)
    for bad in [np.ones((2, 3, 4), bool), np.ones((5, 3), bool), np.ones((5,), bool),
                np.ones((2, 2, 2, 3, 5), bool), np.ones((3, 3, 5), bool), np.ones((2, 3, 3, 5), bool)]:
        with pytest.raises(ValueError) as info:
            layer(q, v, attention_mask=bad)
        message = str(info.value)
        assert "attention_mask" in message and str(bad.shape) in message
        assert "(2, 2, 3, 5)" in message or "(2, 3, 5)" in message


@pytest.mark.parametrize("name, shape", [("query_mask", (2, 5)), ("value_mask", (2, 3)),
                                         ("key_mask", (2, 5, 1)), ("query_mask", (3, 3))])
def test_wrong_input_mask_shape_names_both_shapes(name, shape):
    layer = MHA(2, 3)
    q, v = np.zeros((2, 3, 4), np.float32), np.zeros((2, 5, 4), np.float32)
    expected = (2, 3) if name == "query_mask" else (2, 5)
    with pytest.raises(ValueError) as info:
        layer(q, v, **{name: np.ones(shape, bool)})
    message = str(info.value)
    assert name in message and str(shape) in message and str(expected) in message


def test_bad_mask_dtype_is_refused():
    layer = MHA(2, 3)
    q = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(TypeError, match="attention_mask"):
        layer(q, q, attention_mask=np.array([["a"] * 3] * 3))


@pytest.mark.parametrize("bad", ["query", "value", "key"])
def test_non_float_inputs_raise_type_error(bad):
    arrays = {"query": np.zeros((2, 3, 4), np.float32), "value": np.zeros((2, 5, 4), np.float32),
              "key": np.zeros((2, 5, 4), np.float32)}
    arrays[bad] = np.zeros(arrays[bad].shape, dtype=np.int64)
    layer = MHA(2, 3)
    with pytest.raises(TypeError, match=bad):
        layer(arrays["query"], arrays["value"], arrays["key"])
    assert not layer.built
    with pytest.raises(TypeError):
        layer(np.zeros((2, 3, 4), bool), np.zeros((2, 3, 4), np.float32))
    with pytest.raises(TypeError):
        layer("query", np.zeros((2, 3, 4), np.float32))


def test_training_flag_must_be_a_bool():
    layer = MHA(2, 3)
    q = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(TypeError, match="training"):
        layer(q, q, training="yes")


def test_a_failed_call_keeps_the_last_losses():
    layer = MHA(2, 3, activity_regularizer="l2")
    q = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    layer(q, q)
    before = [x.item() for x in layer.losses]
    with pytest.raises(ValueError):
        layer(q, q, attention_mask=np.ones((7, 7), bool))
    assert [x.item() for x in layer.losses] == before


def test_compute_output_shape():
    assert MHA(2, 3).compute_output_shape((2, 3, 4), (2, 5, 6)) == (2, 3, 4)
    assert MHA(2, 3, output_shape=(2, 7)).compute_output_shape((2, 3, 3, 4), (2, 5, 3, 6)) == (2, 3, 3, 2, 7)


# ---------------------------------------------------------------- devices
def test_to_cuda_without_cupy_or_gpu_is_a_clear_error():
    if tm.cuda_available():
        pytest.skip("CuPy and a GPU are present")
    layer = built((2, 3, 4), (2, 5, 4))
    before = snapshot(layer)
    with pytest.raises(RuntimeError, match="(?i)cupy|gpu|cuda"):
        layer.to("cuda")
    assert layer.device == "cpu" and all(w.device == "cpu" for w in layer.weights)
    assert_weights_equal(snapshot(layer), before)
    with pytest.raises(ValueError, match="device"):
        layer.to("tpu")


def test_layer_on_device_matches_cpu(device):
    rng = np.random.default_rng(0)
    q, v = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4))
    mask = rng.random((2, 3, 5)) < 0.7
    cpu = built((2, 3, 4), (2, 5, 4), dtype="float64", dropout=0.3, seed=4)
    want, want_scores = cpu(q, v, attention_mask=mask, return_attention_scores=True)
    moved = built((2, 3, 4), (2, 5, 4), dtype="float64", dropout=0.3, seed=4)
    moved.set_weights(cpu.get_weights())
    ids = [id(w) for w in moved.weights]
    assert moved.to(device) is moved
    assert [id(w) for w in moved.weights] == ids and all(w.device == device for w in moved.weights)
    qd, vd = tm.Tensor(q, device=device), tm.Tensor(v, device=device)
    out, scores = moved(qd, vd, attention_mask=mask, return_attention_scores=True)
    assert out.device == device
    np.testing.assert_allclose(out.numpy(), want.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(scores.numpy(), want_scores.numpy(), rtol=1e-10, atol=1e-12)
    # gradients land on the device too, and a gradcheck runs unchanged there
    qd = tm.Tensor(q[:1, :2, :], requires_grad=True, device=device)
    vd = tm.Tensor(v[:1, :3, :], requires_grad=True, device=device)
    assert tm.gradcheck(lambda a, b, *w: moved(a, b), (qd, vd, *moved.weights))
    moved(qd, vd).sum().backward()
    assert all(w.grad is not None and tm.backend.device_of(w.grad) == device for w in moved.weights)
    # training-mode dropout runs on the device
    assert moved(qd, vd, training=True).device == device
    # and the layer moves back
    moved.to("cpu")
    np.testing.assert_allclose(moved(q, v, attention_mask=mask).numpy(), want.numpy(), rtol=1e-10, atol=1e-12)


def test_inputs_on_the_wrong_device_are_refused(device):
    if device == "cpu":
        pytest.skip("needs a second device")
    layer = built((2, 3, 4), (2, 5, 4))
    q = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match="device|cuda|cpu"):
        layer(tm.Tensor(q, device="cuda"), tm.Tensor(q, device="cuda"))
