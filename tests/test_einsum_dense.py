"""EinsumDense: Keras equation forms, kernel and bias shapes, values against np.einsum,
gradients, the fans its initializers see, and refused equations."""

import json
import math

import numpy as np
import pytest

import tinygrad_mha as tm
from tinygrad_mha import initializers
from tinygrad_mha.layers import EinsumDense

RANDOM_BIAS = {"class_name": "RandomNormal", "config": {"stddev": 1.0, "seed": 2}}


def dense64(equation, output_shape, **kwargs):
    kwargs.setdefault("bias_initializer", RANDOM_BIAS)
    return EinsumDense(equation, output_shape, dtype="float64", **kwargs)


# equation, output_shape, bias_axes, input shape, kernel shape, bias shape, output shape
# (every row checked against Keras 3.15: with a leading '...' output_shape sizes every
# letter of the output; otherwise every letter after the first, the batch axis)
FORMS = [
    ("ab,bc->ac", 4, "c", (3, 5), (5, 4), (4,), (3, 4)),
    ("ab,bc->ac", (4,), None, (3, 5), (5, 4), None, (3, 4)),
    ("...b,bc->...c", 4, "c", (2, 3, 5), (5, 4), (4,), (2, 3, 4)),
    ("...b,bc->...c", 4, "c", (2, 3, 2, 5), (5, 4), (4,), (2, 3, 2, 4)),
    ("...b,bc->...c", (4,), None, (4, 5), (5, 4), None, (4, 4)),
    ("...bc,cd->...bd", (3, 4), "bd", (2, 7, 3, 5), (5, 4), (3, 4), (2, 7, 3, 4)),
    ("...b,bcd->...cd", (2, 3), "c", (2, 3, 5), (5, 2, 3), (2, 1), (2, 3, 2, 3)),
    ("ab...,bc->ac...", 4, "c", (3, 5, 2, 3), (5, 4), (4, 1, 1), (3, 4, 2, 3)),
    ("abc,cde->abde", (None, 2, 3), "de", (2, 3, 5), (5, 2, 3), (2, 3), (2, 3, 2, 3)),
    ("abc,cde->abde", (3, 2, 4), "d", (2, 3, 5), (5, 2, 4), (2, 1), (2, 3, 2, 4)),
    ("abc,cde->abde", (None, 2, 4), "e", (2, 3, 5), (5, 2, 4), (4,), (2, 3, 2, 4)),
    ("abc,cd->abd", (3, 4), "bd", (2, 3, 5), (5, 4), (3, 4), (2, 3, 4)),
    ("abcd,cde->abe", (None, 4), "e", (2, 3, 2, 5), (2, 5, 4), (4,), (2, 3, 4)),
    ("abc,cbd->ad", 4, "d", (2, 3, 5), (5, 3, 4), (4,), (2, 4)),
]


def reference(equation, x, kernel, bias, bias_shape):
    y = np.einsum(equation, x, kernel)
    return y if bias is None else y + bias.reshape(bias_shape)


@pytest.mark.parametrize("form", FORMS, ids=lambda f: f"{f[0]}|{f[2]}|{len(f[3])}")
def test_equation_forms_shapes_and_values(form):
    equation, output_shape, bias_axes, x_shape, k_shape, b_shape, y_shape = form
    layer = dense64(equation, output_shape, bias_axes=bias_axes)
    x = np.random.default_rng(0).standard_normal(x_shape)
    y = layer(x)
    assert layer.kernel.shape == k_shape
    if b_shape is None:
        assert layer.bias is None and len(layer.weights) == 1
    else:
        assert layer.bias.shape == b_shape
        assert [w.shape for w in layer.weights] == [k_shape, b_shape]
    assert y.shape == y_shape
    assert layer.compute_output_shape(x_shape) == y_shape
    bias = None if b_shape is None else layer.bias.numpy()
    np.testing.assert_allclose(y.numpy(), reference(equation, x, layer.kernel.numpy(), bias, b_shape),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("form", FORMS[::2], ids=lambda f: f"{f[0]}|{f[2]}|{len(f[3])}")
def test_gradcheck(form):
    equation, output_shape, bias_axes, x_shape, *_ = form
    layer = dense64(equation, output_shape, bias_axes=bias_axes, activation="tanh")
    x = tm.Tensor(np.random.default_rng(1).standard_normal(x_shape), requires_grad=True)
    layer(x)
    assert tm.gradcheck(lambda x, *w: layer(x), (x, *layer.weights))


def test_activations_and_ellipsis_input_of_other_batch_rank():
    layer = dense64("...b,bc->...c", 3, bias_axes="c", activation="relu")
    x = np.random.default_rng(2).standard_normal((4, 5))
    y = layer(x).numpy()
    want = np.maximum(x @ layer.kernel.numpy() + layer.bias.numpy(), 0)
    np.testing.assert_allclose(y, want, rtol=1e-12)
    # leading axes are free, the contracted one is fixed
    assert layer(np.zeros((2, 3, 5))).shape == (2, 3, 3)
    with pytest.raises(ValueError, match="5"):
        layer(np.zeros((2, 4)))


def test_contracted_size_fixed_after_build():
    layer = dense64("abc,cde->abde", (None, 2, 3), bias_axes="de")
    layer(np.zeros((2, 3, 5)))
    assert layer(np.zeros((4, 7, 5))).shape == (4, 7, 2, 3)  # free axes may change
    with pytest.raises(ValueError, match=r"\(2, 3, 6\)"):
        layer(np.zeros((2, 3, 6)))
    with pytest.raises(ValueError):
        layer(np.zeros((2, 5)))


# ---------------------------------------------------------------- fans
def sample_var(layer, x_shape):
    layer.build(x_shape)
    return float(np.var(layer.kernel.numpy())), layer.kernel.shape


@pytest.mark.parametrize("equation, output_shape, x_shape, fan_in, fan_out", [
    ("abc,cde->abde", (None, 8, 16), (2, 3, 64), 64, 128),     # MHA query projection
    ("abcd,cde->abe", (None, 64), (2, 3, 8, 16), 128, 64),     # MHA output projection
    ("ab,bc->ac", 96, (2, 48), 48, 96),
    ("...b,bc->...c", 40, (2, 5, 120), 120, 40),
])
def test_initializer_fans_are_contracted_and_new_axes(equation, output_shape, x_shape, fan_in, fan_out):
    """Variance of glorot / fan_in / fan_out scaling matches the einsum fans, not the
    convolution-style fans that ``compute_fans`` would give a rank-3 kernel."""
    glorot = sample_var(EinsumDense(equation, output_shape, kernel_initializer=initializers.GlorotUniform(seed=0),
                                    dtype="float64"), x_shape)[0]
    assert glorot == pytest.approx(2.0 / (fan_in + fan_out), rel=0.06)
    for mode, fan in (("fan_in", fan_in), ("fan_out", fan_out)):
        init = initializers.VarianceScaling(scale=1.0, mode=mode, distribution="uniform", seed=1)
        var, shape = sample_var(EinsumDense(equation, output_shape, kernel_initializer=init,
                                            dtype="float64"), x_shape)
        assert math.prod(shape) >= 4000
        assert var == pytest.approx(1.0 / fan, rel=0.06)
    # glorot uniform's bound is sqrt(6 / (fan_in + fan_out))
    layer = EinsumDense(equation, output_shape, kernel_initializer="glorot_uniform", dtype="float64")
    layer.build(x_shape)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    k = np.abs(layer.kernel.numpy())
    assert k.max() <= limit and k.max() > 0.97 * limit


def test_multi_head_attention_kernels_use_einsum_fans():
    layer = tm.MultiHeadAttention(8, 32, kernel_initializer=initializers.VarianceScaling(
        scale=1.0, mode="fan_in", distribution="uniform", seed=3), dtype="float64")
    layer.build((2, 3, 48), (2, 4, 40))
    wq, _, wk, _, wv, _, wo, _ = layer.get_weights()
    assert np.var(wq) == pytest.approx(1 / 48, rel=0.06)
    assert np.var(wk) == pytest.approx(1 / 40, rel=0.06)
    assert np.var(wo) == pytest.approx(1 / (8 * 32), rel=0.06)  # fan_in = heads * value_dim


# ---------------------------------------------------------------- refused equations
@pytest.mark.parametrize("equation, output_shape, x_shape", [
    ("ab,bc", 4, (3, 5)),                    # no output
    ("ab,bc,cd->ad", 4, (3, 5)),             # three operands
    ("a b,bc->ac", 4, (3, 5)),               # stray space
    ("AB->ab", 4, (3, 5)),                   # no kernel
    ("ab,bc->ad", 4, (3, 5)),                # output axis from nowhere
    ("ab,cd->ac", 4, (3, 5)),                # kernel axis in neither input nor output
    ("abc,cd->abd", (3, 4), (3, 5)),         # rank 2 input for a rank 3 equation
    ("ab,bc->ac", 4, (2, 3, 5)),             # rank 3 input for a plain rank 2 equation
    ("abc,cde->abde", (None, 2), (2, 3, 5)),  # output_shape too short
    ("abc,cde->abde", (None, 2, None), (2, 3, 5)),  # size of a new axis missing
    ("ab,bc->ac", 4, (3, 5, "bias_axes=x")),  # bias axis not in the output
    ("...b,bc...->...c", 4, (3, 5)),         # ellipsis in the kernel
    ("a...b,bc->a...c", 4, (3, 5)),          # ellipsis in the middle
])
def test_bad_equations_raise_value_error(equation, output_shape, x_shape):
    bias_axes = None
    if isinstance(x_shape[-1], str):
        bias_axes = x_shape[-1].split("=")[1]
        x_shape = x_shape[:-1]
    layer = EinsumDense(equation, output_shape, bias_axes=bias_axes)
    with pytest.raises(ValueError, match="EinsumDense"):
        layer.build(x_shape)
    assert layer.weights == []


def test_non_string_equation_and_bad_activation():
    with pytest.raises(TypeError, match="equation"):
        EinsumDense(3, 4)
    with pytest.raises(ValueError, match="activation"):
        EinsumDense("ab,bc->ac", 4, activation="swishy")


def test_config_round_trip():
    layer = EinsumDense("abc,cde->abde", (None, 2, 3), bias_axes="de", activation="sigmoid",
                        kernel_regularizer="l2", kernel_constraint="non_neg")
    config = layer.get_config()
    json.dumps(config)
    clone = EinsumDense.from_config(config)
    assert clone.get_config() == config
