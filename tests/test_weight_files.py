"""Weight files: exact round trips, hostile files refused with a ValueError and nothing loaded
(also under random corruption), and saves that never leave a partial file behind."""

import os
import zipfile

import numpy as np
import pytest

import tinygrad_mha as tm
from tinygrad_mha.layers import Dense, Embedding, LayerNormalization, Sequential

MHA = tm.MultiHeadAttention
RANDOM_BIAS = {"class_name": "RandomNormal", "config": {"stddev": 0.5}}


def mha(q_shape=(2, 3, 4), v_shape=(2, 5, 6), **kwargs):
    kwargs.setdefault("bias_initializer", RANDOM_BIAS)
    layer = MHA(2, 3, **kwargs)
    layer.build(q_shape, v_shape)
    return layer


def same(a, b):
    return len(a) == len(b) and all(x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
                                    for x, y in zip(a, b))


CONFIGS = {
    "float32": dict(),
    "float64_gate": dict(dtype="float64", use_gate=True),
    "float16_no_bias": dict(dtype="float16", use_bias=False),
    "rank4_output_shape": dict(q_shape=(2, 3, 2, 4), v_shape=(2, 3, 5, 6), attention_axes=(2,),
                               output_shape=(2, 3)),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_save_load_round_trip_is_bit_exact_and_the_outputs_agree(name, tmp_path):
    config = dict(CONFIGS[name])
    a, b = mha(**config), mha(**config)
    assert not same(a.get_weights(), b.get_weights())
    path = tmp_path / "w.npz"
    a.save_weights(path)
    ids = [id(w) for w in b.weights]
    b.load_weights(str(path))
    assert same(a.get_weights(), b.get_weights())
    assert [id(w) for w in b.weights] == ids  # loaded in place
    q_shape, v_shape = config.get("q_shape", (2, 3, 4)), config.get("v_shape", (2, 5, 6))
    rng = np.random.default_rng(0)
    q, v = rng.standard_normal(q_shape), rng.standard_normal(v_shape)
    assert a(q, v).numpy().tobytes() == b(q, v).numpy().tobytes()
    with zipfile.ZipFile(path) as archive:  # a plain .npz: one .npy per weight, no pickles
        assert len(archive.namelist()) == len(a.weights)
        assert all(n.endswith(".npy") for n in archive.namelist())
    with np.load(path, allow_pickle=False) as data:
        assert all(data[k].dtype == a.dtype for k in data.files)


def test_round_trip_for_a_model_of_building_blocks(tmp_path):
    def model():
        m = Sequential([Embedding(7, 4, embeddings_initializer=RANDOM_BIAS), Dense(5, activation="tanh"),
                        LayerNormalization(beta_initializer=RANDOM_BIAS), Dense(3)])
        m(np.array([[1, 2, 3]]))
        return m

    a, b = model(), model()
    a.save_weights(tmp_path / "m.npz")
    b.load_weights(tmp_path / "m.npz")
    assert same(a.get_weights(), b.get_weights())
    ids = np.array([[0, 6, 2, 2]])
    assert a(ids).numpy().tobytes() == b(ids).numpy().tobytes()


def test_saving_again_replaces_the_file_atomically(tmp_path):
    a = mha()
    path = tmp_path / "w.npz"
    a.save_weights(path)
    a.set_weights([w * 2 for w in a.get_weights()])
    a.save_weights(path)
    b = mha()
    b.load_weights(path)
    assert same(a.get_weights(), b.get_weights())
    assert os.listdir(tmp_path) == ["w.npz"]


@pytest.mark.parametrize("compressed", [False, True])
def test_random_corruption_is_refused_with_a_value_error_or_loads_the_same_numbers(tmp_path, compressed):
    source = mha()
    good = tmp_path / "good.npz"
    source.save_weights(good)
    if compressed:  # a compressed archive with the same names also loads
        with np.load(good, allow_pickle=False) as data:
            np.savez_compressed(good, **{k: data[k] for k in data.files})
    raw = good.read_bytes()
    target = mha()
    before = target.get_weights()
    rng = np.random.default_rng(1)
    refused = 0
    bad = tmp_path / "bad.npz"
    for trial in range(150):
        blob = bytearray(raw)
        if trial % 3 == 0:
            blob = blob[: int(rng.integers(0, len(raw)))]      # truncated
        else:
            for i in rng.integers(0, len(raw), size=int(rng.integers(1, 4))):
                blob[i] = int(rng.integers(0, 256))            # a few bytes overwritten
        bad.write_bytes(bytes(blob))
        try:
            target.load_weights(bad)
        except ValueError as exc:
            refused += 1
            assert "load_weights" in str(exc)
            assert same(target.get_weights(), before), f"trial {trial}: a refused file changed the layer"
        else:
            # only harmless bytes were hit (zip timestamps, padding): the numbers are the saved ones
            assert same(target.get_weights(), source.get_weights()), f"trial {trial}: wrong numbers loaded"
            target.set_weights(before)
    assert refused > 100


def test_a_file_for_another_layer_is_refused_and_nothing_is_loaded(tmp_path):
    other = mha(v_shape=(2, 5, 7))   # key/value kernels of another shape
    other.save_weights(tmp_path / "other.npz")
    layer = mha()
    before = layer.get_weights()
    with pytest.raises(ValueError, match=r"key/kernel.*\(6, 2, 3\)"):
        layer.load_weights(tmp_path / "other.npz")
    assert same(layer.get_weights(), before)
    gated = mha(use_gate=True)
    gated.save_weights(tmp_path / "gated.npz")
    with pytest.raises(ValueError, match="gate"):
        layer.load_weights(tmp_path / "gated.npz")
    assert same(layer.get_weights(), before)


# ---------------------------------------------------------------- failed saves
class DiskFull(OSError):
    pass


def half_written_savez(file, **arrays):
    """Write the start of a real archive, then fail as a full disk would."""
    file.write(b"PK\x03\x04" + b"\0" * 100)
    raise DiskFull("no space left on device")


@pytest.mark.parametrize("existing", [False, True])
@pytest.mark.parametrize("failure", ["savez", "interrupt", "rename"])
def test_a_failed_save_leaves_no_partial_file_and_the_old_one_intact(tmp_path, monkeypatch, failure, existing):
    layer = mha()
    target = tmp_path / "w.npz"
    if existing:
        layer.save_weights(target)
        old = target.read_bytes()
        layer.set_weights([w + 1 for w in layer.get_weights()])
    if failure == "savez":
        monkeypatch.setattr(np, "savez", half_written_savez)
        expected = DiskFull
    elif failure == "interrupt":  # Ctrl-C in the middle of the write
        def interrupted(file, **arrays):
            file.write(b"PK\x03\x04partial")
            raise KeyboardInterrupt
        monkeypatch.setattr(np, "savez", interrupted)
        expected = KeyboardInterrupt
    else:  # everything written, then the rename fails
        def no_rename(src, dst):
            raise PermissionError("rename refused")
        monkeypatch.setattr(os, "replace", no_rename)
        expected = PermissionError
    with pytest.raises(expected):
        layer.save_weights(target)
    monkeypatch.undo()
    if existing:
        assert os.listdir(tmp_path) == ["w.npz"] and target.read_bytes() == old
        reloaded = mha()
        reloaded.load_weights(target)  # still a valid file
    else:
        assert os.listdir(tmp_path) == []


def test_save_onto_a_folder_fails_and_leaves_nothing_behind(tmp_path):
    (tmp_path / "w.npz").mkdir()
    with pytest.raises(OSError):
        mha().save_weights(tmp_path / "w.npz")
    assert os.listdir(tmp_path) == ["w.npz"] and (tmp_path / "w.npz").is_dir()
