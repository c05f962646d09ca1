"""The building blocks: Dense, Embedding, LayerNormalization, PositionalEncoding, Sequential/Model.

Each block is gradchecked in float64 (every element of the input and of every weight), its
forward pass is compared with a NumPy reference written out here, and, where Keras 3.15 is
installed, with the Keras layer given the same weights.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import tinygrad_mha as tm
from tinygrad_mha.layers import (Dense, Embedding, LayerNormalization, Model, PositionalEncoding,
                                 Sequential)

os.environ.setdefault("KERAS_BACKEND", "jax")  # normally already set by conftest.py


@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras")


def f64(rng, *shape, requires_grad=True):
    return tm.Tensor(rng.standard_normal(shape), requires_grad=requires_grad)


# ---------------------------------------------------------------- Dense
@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 4)])
@pytest.mark.parametrize("activation", [None, "relu", "tanh", "sigmoid"])
def test_dense_forward_matches_numpy(rng, shape, activation):
    layer = Dense(5, activation=activation, bias_initializer="random_normal")
    x = rng.standard_normal(shape).astype("float32")
    out = layer(x).numpy()
    w, b = layer.get_weights()
    z = x @ w + b
    want = {None: z, "relu": np.maximum(z, 0), "tanh": np.tanh(z), "sigmoid": 1 / (1 + np.exp(-z))}[activation]
    assert out.shape == shape[:-1] + (5,)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape,use_bias", [((3, 4), True), ((2, 3, 4), True), ((2, 3, 4), False)])
def test_dense_gradcheck(rng, shape, use_bias):
    layer = Dense(3, activation="tanh", use_bias=use_bias, bias_initializer="random_normal", dtype="float64")
    x = f64(rng, *shape)
    layer(x)
    assert len(layer.weights) == (2 if use_bias else 1)
    assert tm.gradcheck(lambda x, *w: layer(x), (x, *layer.weights))


def test_dense_matches_keras(rng, keras):
    ours = Dense(6, activation="relu")
    theirs = keras.layers.Dense(6, activation="relu")
    x = rng.standard_normal((2, 3, 4)).astype("float32")
    theirs(x)
    weights = [w + 0.1 * rng.standard_normal(w.shape).astype("float32") for w in theirs.get_weights()]
    theirs.set_weights(weights)
    ours(x)
    ours.set_weights(weights)
    assert [w.shape for w in ours.weights] == [tuple(w.shape) for w in theirs.weights]
    np.testing.assert_allclose(ours(x).numpy(), np.asarray(theirs(x)), rtol=1e-5, atol=1e-6)


def test_dense_validation_messages():
    with pytest.raises(ValueError, match="units must be a positive integer, got units=0"):
        Dense(0)
    with pytest.raises(ValueError, match="activation must be one of"):
        Dense(3, activation="swishy")
    with pytest.raises(TypeError, match="use_bias must be a bool"):
        Dense(3, use_bias="yes")
    with pytest.raises(ValueError, match="unknown initializer"):
        Dense(3, kernel_initializer="nope")
    layer = Dense(3)
    layer(np.ones((2, 4), dtype="float32"))
    with pytest.raises(ValueError, match="built for inputs with 4 features"):
        layer(np.ones((2, 5), dtype="float32"))
    with pytest.raises(ValueError, match="rank >= 2"):
        Dense(3).build((4,))


def test_dense_config_round_trip_and_regularizer(rng):
    layer = Dense(4, activation="relu", use_bias=False, kernel_regularizer=tm.regularizers.L2(0.1))
    cfg = layer.get_config()
    json.dumps(cfg)
    clone = Dense.from_config({**cfg, "name": "clone"})
    assert (clone.units, clone.activation, clone.use_bias) == (4, "relu", False)
    layer(rng.standard_normal((2, 3)).astype("float32"))
    (penalty,) = layer.losses
    np.testing.assert_allclose(penalty.item(), 0.1 * np.sum(layer.get_weights()[0] ** 2), rtol=1e-5)
    assert layer.compute_output_shape((7, 2, 3)) == (7, 2, 4)


# ---------------------------------------------------------------- Embedding
def test_embedding_forward_is_row_lookup(rng):
    layer = Embedding(7, 3)
    ids = np.array([[0, 6, 2], [2, 2, 5]])
    out = layer(ids)
    (table,) = layer.get_weights()
    assert out.shape == (2, 3, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out.numpy(), table[ids])
    assert np.all(np.abs(table) <= 0.05)  # Keras' "uniform": RandomUniform(-0.05, 0.05)


def test_embedding_gradient_adds_repeated_ids(rng):
    layer = Embedding(5, 2, dtype="float64")
    ids = np.array([[1, 1, 3], [1, 4, 4]])
    out = layer(ids)
    g = rng.standard_normal(out.shape)
    out.backward(g)
    one_hot = np.eye(5)[ids.reshape(-1)]                      # (6, 5): an independent reference,
    want = one_hot.T @ g.reshape(-1, 2)                       # embedding = one_hot @ table
    np.testing.assert_allclose(layer.embeddings.grad, want, rtol=1e-12)
    assert np.all(layer.embeddings.grad[[0, 2]] == 0)


def test_embedding_gradcheck(rng):
    layer = Embedding(6, 3, embeddings_initializer="random_normal", dtype="float64")
    ids = rng.integers(0, 6, size=(2, 5))
    layer(ids)
    assert tm.gradcheck(lambda table: layer(ids), (layer.embeddings,))


def test_embedding_matches_keras(rng, keras):
    ids = rng.integers(0, 9, size=(2, 4))
    theirs = keras.layers.Embedding(9, 5)
    theirs(ids)
    ours = Embedding(9, 5)
    ours(ids)
    ours.set_weights(theirs.get_weights())
    np.testing.assert_array_equal(ours(ids).numpy(), np.asarray(theirs(ids)))


def test_embedding_validation_and_mask():
    with pytest.raises(ValueError, match="input_dim must be a positive integer, got input_dim=0"):
        Embedding(0, 3)
    with pytest.raises(ValueError, match="output_dim must be a positive integer"):
        Embedding(4, -1)
    layer = Embedding(4, 2, mask_zero=True)
    with pytest.raises(ValueError, match=r"ids must lie in \[0, input_dim=4\), got values from 0 to 4"):
        layer(np.array([[0, 4]]))
    with pytest.raises(ValueError, match="got values from -1"):
        layer(np.array([[-1, 2]]))
    with pytest.raises(TypeError, match="not whole numbers"):
        layer(np.array([[0.5, 2.0]]))
    assert layer(np.array([[1.0, 2.0]])).shape == (1, 2, 2)  # whole-number floats are ids
    np.testing.assert_array_equal(layer.compute_mask(np.array([[0, 3, 0]])), [[False, True, False]])
    assert Embedding(4, 2).compute_mask(np.array([[0]])) is None
    cfg = layer.get_config()
    json.dumps(cfg)
    assert Embedding.from_config({**cfg, "name": "e2"}).mask_zero is True


# ---------------------------------------------------------------- LayerNormalization
def layer_norm_reference(x, axes, gamma, beta, eps):
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


@pytest.mark.parametrize("axis,param_shape", [(-1, (1, 1, 5)), ((1, 2), (1, 3, 5)), (1, (1, 3, 1))])
def test_layer_norm_forward_matches_numpy(rng, axis, param_shape):
    layer = LayerNormalization(axis=axis, gamma_initializer="random_normal", beta_initializer="random_normal",
                               dtype="float64")
    x = rng.standard_normal((2, 3, 5)) * 3 + 1
    out = layer(x).numpy()
    gamma, beta = layer.get_weights()
    axes = tuple(np.atleast_1d(axis) % 3)
    want = layer_norm_reference(x, axes, gamma.reshape(param_shape), beta.reshape(param_shape), 1e-3)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("axis", [-1, (1, 2), 1])
def test_layer_norm_gradcheck(rng, axis):
    layer = LayerNormalization(axis=axis, gamma_initializer="random_normal", beta_initializer="random_normal",
                               dtype="float64")
    x = f64(rng, 2, 3, 4)
    layer(x)
    assert tm.gradcheck(lambda x, *w: layer(x), (x, *layer.weights))


def test_layer_norm_matches_keras(rng, keras):
    x = (rng.standard_normal((2, 3, 6)) * 2 + 0.5).astype("float32")
    theirs = keras.layers.LayerNormalization()
    theirs(x)
    weights = [w + rng.standard_normal(w.shape).astype("float32") for w in theirs.get_weights()]
    theirs.set_weights(weights)
    ours = LayerNormalization()
    ours(x)
    ours.set_weights(weights)
    assert theirs.epsilon == ours.epsilon == 1e-3
    np.testing.assert_allclose(ours(x).numpy(), np.asarray(theirs(x)), rtol=1e-5, atol=1e-5)


def test_layer_norm_options_and_validation(rng):
    assert [w.name.split("/")[-1] for w in _built(LayerNormalization(), (2, 3)).weights] == ["gamma", "beta"]
    assert _built(LayerNormalization(center=False, scale=False), (2, 3)).weights == []
    x = rng.standard_normal((2, 4))
    out = LayerNormalization(center=False, scale=False, epsilon=0.0, dtype="float64")(x).numpy()
    np.testing.assert_allclose(out.mean(-1), 0, atol=1e-12)
    np.testing.assert_allclose(out.std(-1), 1, rtol=1e-10)
    with pytest.raises(TypeError, match="axis must be an int or a non-empty list/tuple of ints, got axis='x'"):
        LayerNormalization(axis="x")
    with pytest.raises(ValueError, match="epsilon must be a non-negative finite number, got epsilon=-1"):
        LayerNormalization(epsilon=-1)
    with pytest.raises(TypeError, match="center must be a bool"):
        LayerNormalization(center=1)
    with pytest.raises(ValueError, match="axis 3 is out of range for inputs of rank 2"):
        LayerNormalization(axis=3)(x)
    layer = _built(LayerNormalization(), (2, 4))
    with pytest.raises(ValueError, match=r"built for inputs of shape \(2, 4\)"):
        layer(np.ones((2, 5), dtype="float32"))
    json.dumps(LayerNormalization(axis=(1, 2)).get_config())


def _built(layer, shape):
    layer(np.ones(shape, dtype="float32"))
    return layer


# ---------------------------------------------------------------- PositionalEncoding
def test_positional_encoding_is_the_vaswani_formula(rng):
    length, d = 6, 8
    pe = np.zeros((length, d))
    for pos in range(length):          # the formula of "Attention Is All You Need", element by element
        for i in range(d // 2):
            angle = pos / 10000 ** (2 * i / d)
            pe[pos, 2 * i], pe[pos, 2 * i + 1] = np.sin(angle), np.cos(angle)
    x = rng.standard_normal((2, length, d))
    layer = PositionalEncoding(dtype="float64")
    np.testing.assert_allclose(layer(x).numpy(), x + pe, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(PositionalEncoding.table(length, d), pe, atol=1e-12)
    shifted = layer(x[:, :2], start_index=4).numpy()
    np.testing.assert_allclose(shifted, x[:, :2] + pe[4:6], atol=1e-12)
    assert layer.weights == []


def test_positional_encoding_gradcheck_and_validation(rng):
    layer = PositionalEncoding(max_wavelength=100, dtype="float64")
    x = f64(rng, 2, 5, 3)  # odd feature count: the last feature is a sin
    assert tm.gradcheck(layer, (x,))
    with pytest.raises(ValueError, match="max_wavelength must be a finite number > 1"):
        PositionalEncoding(max_wavelength=0)
    with pytest.raises(ValueError, match="rank >= 2"):
        layer(np.ones(3))
    with pytest.raises(ValueError, match="start_index must be a non-negative int"):
        layer(np.ones((1, 2, 3)), start_index=-1)
    cfg = layer.get_config()
    json.dumps(cfg)
    assert PositionalEncoding.from_config({**cfg, "name": "pe2"}).max_wavelength == 100


# ---------------------------------------------------------------- Sequential and Model.fit
def test_sequential_is_the_composition_and_gradchecks(rng):
    tm.set_seed(0)
    embed, norm, dense = Embedding(6, 4, dtype="float64"), LayerNormalization(dtype="float64"), \
        Dense(3, activation="tanh", dtype="float64")
    model = Sequential([embed, PositionalEncoding(dtype="float64"), norm, dense])
    ids = rng.integers(0, 6, size=(2, 5))
    out = model(ids)
    manual = dense(norm(embed(ids) + PositionalEncoding.table(5, 4)))
    np.testing.assert_allclose(out.numpy(), manual.numpy(), rtol=1e-12)
    assert model.weights == embed.weights + norm.weights + dense.weights
    assert tm.gradcheck(lambda *w: model(ids), model.weights)


def test_sequential_validation_and_config():
    with pytest.raises(TypeError, match="every layer must be a Layer instance, got int"):
        Sequential([Dense(2), 3])
    with pytest.raises(TypeError, match="layers must be a list of Layer instances"):
        Sequential(Dense(2))
    d = Dense(2)
    with pytest.raises(ValueError, match="already in this model"):
        Sequential([d, d])
    with pytest.raises(ValueError, match="has no layers"):
        Sequential()(np.ones((1, 2)))
    model = Sequential([Embedding(5, 3), PositionalEncoding(), LayerNormalization(), Dense(2, activation="relu")])
    cfg = model.get_config()
    json.dumps(cfg)
    clone = Sequential.from_config(json.loads(json.dumps(cfg)))
    assert [type(layer).__name__ for layer in clone.layers] == [
        "Embedding", "PositionalEncoding", "LayerNormalization", "Dense"]


def _blobs(rng, n=240):
    """Three well-separated Gaussian blobs in 2-D: a task any small MLP learns."""
    centers = np.array([[2.0, 0.0], [-2.0, 2.0], [-2.0, -2.0]])
    y = rng.integers(0, 3, size=n)
    return (centers[y] + 0.5 * rng.standard_normal((n, 2))).astype("float32"), y


def test_fit_learns_and_reports_history(rng):
    tm.set_seed(0)
    x, y = _blobs(rng)
    model = Sequential([Dense(16, activation="relu"), Dense(3)])
    seen = []
    history = model.fit(x, y, loss="sparse_categorical_crossentropy", epochs=8,
                        optimizer=lambda params: tm.optimizers.Adam(params, learning_rate=0.02),
                        batch_size=32, metrics=["accuracy"], callback=lambda step, logs: seen.append(step),
                        seed=0, progress=False)
    assert len(history.history["loss"]) == len(history.steps) == 8 * 8 == len(seen)
    assert np.mean(history["loss"][-8:]) < 0.5 * np.mean(history["loss"][:8])
    pred = model.predict(x).argmax(-1)
    assert np.mean(pred == y) > 0.9  # chance is 1/3
    assert model.evaluate(x, y, loss="sparse_categorical_crossentropy")["accuracy"] == np.mean(pred == y)


def test_fit_is_deterministic_with_seeds(rng):
    x, y = _blobs(rng, 64)

    def run():
        tm.set_seed(3)
        model = Sequential([Dense(8, activation="tanh"), Dense(3)])
        model.fit(x, y, loss="sparse_categorical_crossentropy", steps=10, batch_size=16, seed=5, progress=False)
        return model.get_weights()

    for a, b in zip(run(), run()):
        np.testing.assert_array_equal(a, b)


def test_fit_adds_regularization_and_stops_on_callback(rng):
    x, y = _blobs(rng, 32)
    model = Sequential([Dense(3, kernel_regularizer=tm.regularizers.L2(10.0))])
    history = model.fit(x, y, loss="sparse_categorical_crossentropy", optimizer="sgd", steps=20,
                        batch_size=32, shuffle=False, callback=lambda step, logs: step < 2, progress=False)
    assert len(history.steps) == 3
    model2 = Sequential([Dense(3)])
    model2(x[:1])
    model2.set_weights(model.get_weights())
    plain = tm.losses.softmax_cross_entropy(model2(x), y).item()
    penalty = 10.0 * np.sum(model.get_weights()[0] ** 2)
    np.testing.assert_allclose(model.evaluate(x, y, loss="sparse_categorical_crossentropy")["loss"], plain, rtol=1e-5)
    last = model.fit(x, y, loss="sparse_categorical_crossentropy", optimizer="sgd", steps=1, batch_size=32,
                     shuffle=False, progress=False)
    np.testing.assert_allclose(last["loss"][0], plain + penalty, rtol=1e-4)


def test_fit_validation_messages(rng):
    x, y = _blobs(rng, 16)
    model = Sequential([Dense(3)])
    fit = lambda **kw: model.fit(x, y, **{"loss": "mse", "progress": False, **kw})  # noqa: E731
    with pytest.raises(ValueError, match="give epochs or steps, not both"):
        fit(epochs=1, steps=1)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got batch_size=0"):
        fit(batch_size=0)
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        fit(loss="hinge")
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        fit(optimizer="rmsprop")
    with pytest.raises(ValueError, match="unknown metric"):
        fit(metrics=["auc"])
    with pytest.raises(ValueError, match="x has 16 examples but y has 3"):
        model.fit(x, y[:3], loss="mse", progress=False)
    with pytest.raises(ValueError, match="holds none of this model's weights"):
        fit(optimizer=tm.optimizers.SGD([tm.Tensor(np.zeros(2), requires_grad=True)]))


def test_model_subclass_with_attention_gradchecks():
    from tinygrad_mha.demo import gradcheck_small_model
    passed, n = gradcheck_small_model(seed=1)
    assert passed and n > 100


def test_model_subclass_pattern(rng):
    class Tiny(Model):
        def __init__(self):
            super().__init__()
            self.embed = Embedding(4, 3)
            self.out = Dense(4)

        def call(self, ids, training=None):
            return self.out(self.embed(ids))

    model = Tiny()
    ids = rng.integers(0, 4, size=(20, 3))
    history = model.fit(ids, ids, loss="sparse_categorical_crossentropy", steps=3, batch_size=8, progress=False)
    assert len(model.weights) == 3 and len(history.steps) == 3
