"""Initializers: statistics against their formulas, seeding, devices, configs, and Keras itself."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import tinygrad_mha as tm
from tinygrad_mha import initializers as I
from tinygrad_mha.backend import to_numpy

BIG = (400, 500)  # 200,000 samples: sample variances land within ~1% of the truth


def keras_reference():
    """Keras 3 as an independent reference, on whichever backend the session chose, or skip."""
    return pytest.importorskip("keras")


def truncated_std():
    """Standard deviation of N(0, 1) conditioned on [-2, 2], from its closed form."""
    density_at_2 = math.exp(-2.0) / math.sqrt(2 * math.pi)
    mass = math.erf(2 / math.sqrt(2))
    return math.sqrt(1 - 2 * 2 * density_at_2 / mass)


def test_truncation_constant_is_the_std_of_a_unit_normal_truncated_at_two():
    assert truncated_std() == pytest.approx(I.TRUNCATED_NORMAL_STDDEV, rel=1e-12)


# ---------------------------------------------------------------- fans
@pytest.mark.parametrize("shape, fans", [
    ((), (1, 1)), ((7,), (7, 7)), ((3, 5), (3, 5)),
    ((3, 3, 64, 32), (9 * 64, 9 * 32)), ((2, 4, 6), (2 * 4, 2 * 6)),
])
def test_compute_fans(shape, fans):
    assert I.compute_fans(shape) == fans


def test_compute_fans_with_explicit_axes():
    assert I.compute_fans((4, 2, 8), input_axes=[0], output_axes=[1, 2]) == (4, 16)


# ---------------------------------------------------------------- statistics
def check_uniform(x, low, high):
    assert x.min() >= low and x.max() < high
    assert x.min() < low + 0.01 * (high - low) and x.max() > high - 0.01 * (high - low)
    assert x.mean() == pytest.approx((low + high) / 2, abs=0.01 * (high - low))
    assert x.var() == pytest.approx((high - low) ** 2 / 12, rel=0.02)


def check_normal(x, mean, std):
    assert x.mean() == pytest.approx(mean, abs=0.01 * std)
    assert x.std() == pytest.approx(std, rel=0.01)


def check_truncated(x, mean, std_before_truncation):
    """Inside mean +- 2 std, reaching close to both ends, with the truncated std."""
    bound = 2 * std_before_truncation
    assert np.all(np.abs(x - mean) <= bound * (1 + 1e-6))
    assert np.abs(x - mean).max() > 0.99 * bound
    check_normal(x, mean, std_before_truncation * truncated_std())


def test_random_normal_statistics():
    check_normal(I.RandomNormal(mean=0.5, stddev=2.0, seed=1)(BIG, "float64"), 0.5, 2.0)
    check_normal(I.RandomNormal(seed=2)(BIG, "float64"), 0.0, 0.05)  # Keras defaults


def test_random_uniform_statistics():
    check_uniform(I.RandomUniform(-0.3, 0.7, seed=1)(BIG, "float64"), -0.3, 0.7)
    check_uniform(I.RandomUniform(seed=2)(BIG, "float64"), -0.05, 0.05)


def test_truncated_normal_statistics():
    check_truncated(I.TruncatedNormal(mean=1.0, stddev=0.5, seed=1)(BIG, "float64"), 1.0, 0.5)
    check_truncated(I.TruncatedNormal(seed=2)(BIG, "float64"), 0.0, 0.05)


FAN_IN, FAN_OUT = BIG


@pytest.mark.parametrize("mode, n", [("fan_in", FAN_IN), ("fan_out", FAN_OUT),
                                     ("fan_avg", (FAN_IN + FAN_OUT) / 2)])
@pytest.mark.parametrize("distribution", ["truncated_normal", "untruncated_normal", "uniform"])
def test_variance_scaling_statistics(mode, n, distribution):
    scale = 3.0
    x = I.VarianceScaling(scale, mode, distribution, seed=4)(BIG, "float64")
    std = math.sqrt(scale / n)
    if distribution == "uniform":
        limit = math.sqrt(3 * scale / n)
        check_uniform(x, -limit, limit)
    elif distribution == "untruncated_normal":
        check_normal(x, 0.0, std)
    else:  # the stddev is raised before truncation so the result has variance scale / n
        check_truncated(x, 0.0, std / truncated_std())
    assert x.var() == pytest.approx(scale / n, rel=0.02)


# The documented formula of each named initializer, written from its paper.
NAMED = {
    "GlorotUniform": ("uniform", lambda fi, fo: math.sqrt(6 / (fi + fo))),
    "GlorotNormal": ("normal", lambda fi, fo: math.sqrt(2 / (fi + fo))),
    "HeUniform": ("uniform", lambda fi, fo: math.sqrt(6 / fi)),
    "HeNormal": ("normal", lambda fi, fo: math.sqrt(2 / fi)),
    "LecunUniform": ("uniform", lambda fi, fo: math.sqrt(3 / fi)),
    "LecunNormal": ("normal", lambda fi, fo: math.sqrt(1 / fi)),
}


@pytest.mark.parametrize("name", NAMED)
@pytest.mark.parametrize("shape, fans", [(BIG, BIG), ((5, 5, 80, 100), (25 * 80, 25 * 100))])
def test_named_variance_scaling_initializers(name, shape, fans):
    kind, formula = NAMED[name]
    x = getattr(I, name)(seed=5)(shape, "float64")
    value = formula(*fans)
    if kind == "uniform":  # value is the limit
        check_uniform(x, -value, value)
    else:  # value is the stddev after truncation
        check_truncated(x, 0.0, value / truncated_std())


def test_fan_overrides_replace_the_computed_fans():
    x = I.HeUniform(seed=0)((20, 30, 40), "float64", fan_in=2000)
    check_uniform(x, -math.sqrt(6 / 2000), math.sqrt(6 / 2000))
    x = I.GlorotNormal(seed=0)((200, 300), "float64", fan_in=1000, fan_out=3000)
    check_truncated(x, 0.0, math.sqrt(2 / 4000) / truncated_std())
    # only fan_out given: fan_in still comes from the shape
    x = I.VarianceScaling(mode="fan_avg", distribution="uniform", seed=0)(BIG, "float64", fan_out=100)
    limit = math.sqrt(3 / ((FAN_IN + 100) / 2))
    check_uniform(x, -limit, limit)


def test_tiny_fans_are_clamped_to_one():
    x = I.VarianceScaling(distribution="uniform", seed=0)((0, 1000), "float64")  # fan_in 0
    assert x.shape == (0, 1000)
    x = I.VarianceScaling(distribution="uniform", seed=0)((400, 500), "float64", fan_in=0.25)
    check_uniform(x, -math.sqrt(3), math.sqrt(3))


@pytest.mark.parametrize("shape", [(50, 30), (30, 50), (4, 5, 20), (6, 6)])
@pytest.mark.parametrize("gain", [1.0, 2.5])
def test_orthogonal(shape, gain):
    x = I.Orthogonal(gain=gain, seed=3)(shape, "float64")
    assert x.shape == shape
    flat = x.reshape(-1, shape[-1])
    small = min(flat.shape)
    gram = flat.T @ flat if flat.shape[0] >= flat.shape[1] else flat @ flat.T
    np.testing.assert_allclose(gram, gain ** 2 * np.eye(small), atol=1e-12)


def test_orthogonal_is_uniform_over_sign_flips():
    """Signs fixed by diag(R): the first column is not biased towards positive entries."""
    firsts = np.array([I.Orthogonal(seed=s)((8, 8), "float64")[0, 0] for s in range(400)])
    assert 0.35 < (firsts > 0).mean() < 0.65


def test_identity():
    np.testing.assert_array_equal(I.Identity()((3, 3)), np.eye(3, dtype="float32"))
    np.testing.assert_array_equal(I.Identity(gain=0.5)((3, 5), "float64"), 0.5 * np.eye(3, 5))
    with pytest.raises(ValueError, match="2-D"):
        I.Identity()((2, 2, 2))


def test_constant_initializers():
    np.testing.assert_array_equal(I.Zeros()((2, 3)), np.zeros((2, 3), "float32"))
    np.testing.assert_array_equal(I.Ones()((4,), "float64"), np.ones(4))
    np.testing.assert_array_equal(I.Constant(2.5)((2, 2)), np.full((2, 2), 2.5, "float32"))
    assert I.Zeros()((2,), dtype="int64").dtype == np.int64
    assert I.Constant(3)(5, dtype="int32").tolist() == [3] * 5
    with pytest.raises(ValueError, match="value"):
        I.Constant([1.0, 2.0])


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_dtypes(dtype):
    for init in (I.GlorotUniform(seed=0), I.Orthogonal(seed=0), I.Zeros(), I.Identity()):
        assert init((4, 4), dtype).dtype == np.dtype(dtype)
    assert I.GlorotUniform(seed=0)((4, 4), None).dtype == np.float32  # None means float32


def test_bad_arguments():
    with pytest.raises(TypeError, match="dtype"):
        I.GlorotUniform()((2, 2), "int32")
    with pytest.raises(ValueError, match="shape"):
        I.GlorotUniform()((2, -1))
    with pytest.raises(ValueError, match="fan_in"):
        I.GlorotUniform()((2, 2), fan_in=-3)
    with pytest.raises(ValueError, match="device"):
        I.Zeros()((2,), device="tpu")
    with pytest.raises(ValueError, match="seed"):
        I.GlorotUniform(seed="seven")
    with pytest.raises(ValueError, match="seed"):
        I.RandomNormal(seed=-1)
    with pytest.raises(ValueError, match="scale"):
        I.VarianceScaling(scale=0.0)
    with pytest.raises(ValueError, match="mode"):
        I.VarianceScaling(mode="fan_sum")
    with pytest.raises(ValueError, match="distribution"):
        I.VarianceScaling(distribution="cauchy")
    with pytest.raises(ValueError, match="rank"):
        I.Orthogonal()((5,))


def test_normal_distribution_is_an_alias_of_truncated_normal():
    init = I.VarianceScaling(distribution="Normal")
    assert init.distribution == "truncated_normal"


# ---------------------------------------------------------------- seeding
RANDOM = ["RandomNormal", "RandomUniform", "TruncatedNormal", "VarianceScaling", "GlorotUniform",
          "GlorotNormal", "HeUniform", "HeNormal", "LecunUniform", "LecunNormal", "Orthogonal"]


@pytest.mark.parametrize("name", RANDOM)
def test_int_seed_is_stateless(name):
    init = getattr(I, name)(seed=42)
    a, b = init((6, 7)), init((6, 7))
    np.testing.assert_array_equal(a, b)  # every call repeats (Keras 3's stateless int seeds)
    np.testing.assert_array_equal(a, getattr(I, name)(seed=42)((6, 7)))  # and so does a twin
    np.testing.assert_array_equal(a, init.clone()((6, 7)))
    assert not np.array_equal(a, getattr(I, name)(seed=43)((6, 7)))


@pytest.mark.parametrize("name", RANDOM)
def test_unseeded_draws_from_the_shared_generator(name):
    init = getattr(I, name)()
    a, b = init((6, 7)), init((6, 7))
    assert not np.array_equal(a, b)  # a fresh draw per call
    try:
        tm.set_seed(123)
        first = [init((6, 7)), getattr(I, name)()((6, 7))]
        tm.set_seed(123)
        second = [init((6, 7)), getattr(I, name)()((6, 7))]
    finally:
        tm.set_seed(None)
    for x, y in zip(first, second):
        np.testing.assert_array_equal(x, y)


def test_generator_seed_is_a_private_advancing_stream():
    state = tm.backend.get_state()
    init = I.RandomNormal(seed=np.random.default_rng(0))
    a, b = init((3, 3)), init((3, 3))
    assert not np.array_equal(a, b)
    fresh = np.random.default_rng(0)
    np.testing.assert_array_equal(a, (0.05 * fresh.standard_normal((3, 3))).astype("float32"))
    assert tm.backend.get_state() == state  # the shared generator was not touched
    assert init.get_config()["seed"] is None


def test_seeded_values_are_the_same_float64_draw_in_every_dtype():
    init = I.GlorotNormal(seed=9)
    x64 = init((30, 20), "float64")
    np.testing.assert_array_equal(init((30, 20), "float32"), x64.astype("float32"))
    np.testing.assert_array_equal(init((30, 20), "float16"), x64.astype("float16"))


# ---------------------------------------------------------------- devices
@pytest.mark.parametrize("name", RANDOM + ["Zeros", "Ones", "Identity"])
def test_device_values_match_the_host(name, device):
    cls = getattr(I, name)
    init = cls(seed=7) if name in RANDOM else cls()
    out = init((5, 5), device=device)
    assert tm.backend.device_of(out) == device
    np.testing.assert_array_equal(to_numpy(out), init((5, 5), device="cpu"))


# ---------------------------------------------------------------- configs and lookup
ALIASES = {
    "zeros": "Zeros", "zero": "Zeros", "ones": "Ones", "one": "Ones", "constant": "Constant",
    "identity": "Identity", "IdentityInitializer": "Identity", "random_normal": "RandomNormal",
    "normal": "RandomNormal", "random_uniform": "RandomUniform", "uniform": "RandomUniform",
    "truncated_normal": "TruncatedNormal", "variance_scaling": "VarianceScaling",
    "glorot_uniform": "GlorotUniform", "glorot_normal": "GlorotNormal", "he_uniform": "HeUniform",
    "he_normal": "HeNormal", "lecun_uniform": "LecunUniform", "lecun_normal": "LecunNormal",
    "orthogonal": "Orthogonal", "OrthogonalInitializer": "Orthogonal",
}


@pytest.mark.parametrize("name, cls", list(ALIASES.items()) + [(c, c) for c in set(ALIASES.values())])
def test_get_by_name(name, cls):
    init = I.get(name)
    assert type(init) is getattr(I, cls)
    assert init((2, 2)).shape == (2, 2)


EXAMPLES = [I.Zeros(), I.Ones(), I.Constant(1.5), I.Identity(gain=2.0),
            I.RandomNormal(1.0, 0.2, seed=3), I.RandomUniform(-1.0, 2.0), I.TruncatedNormal(seed=1),
            I.VarianceScaling(0.5, "fan_out", "uniform", seed=2, input_axes=[0], output_axes=[1]),
            I.GlorotUniform(seed=4), I.GlorotNormal(), I.HeUniform(), I.HeNormal(seed=0),
            I.LecunUniform(), I.LecunNormal(), I.Orthogonal(gain=0.5, seed=8)]


@pytest.mark.parametrize("init", EXAMPLES, ids=lambda i: type(i).__name__)
def test_config_round_trips(init):
    text = json.dumps(I.serialize(init))
    back = I.deserialize(json.loads(text))
    assert type(back) is type(init) and back.get_config() == init.get_config()
    assert I.get(json.loads(text)).get_config() == init.get_config()
    assert type(init).from_config(init.get_config()).get_config() == init.get_config()
    clone = init.clone()
    assert clone is not init and clone.get_config() == init.get_config()
    if init.get_config().get("seed") is not None:
        np.testing.assert_array_equal(back((4, 3)), init((4, 3)))


def test_get_passes_through_instances_classes_and_callables():
    init = I.HeNormal(seed=1)
    assert I.get(init) is init
    assert isinstance(I.get(I.Orthogonal), I.Orthogonal)

    def fn(shape, dtype=None):
        return np.ones(shape)

    assert I.get(fn) is fn
    assert I.get(None) is None and I.serialize(None) is None


def test_get_rejects_unknown_names_and_wrong_types():
    with pytest.raises(ValueError, match="glorot_uniform"):  # the message lists the known names
        I.get("glorot_uniformm")
    with pytest.raises(TypeError):
        I.get(3.5)
    with pytest.raises(TypeError):
        I.get(int)
    with pytest.raises(ValueError, match="class_name"):
        I.deserialize({"config": {}})
    with pytest.raises(TypeError):
        I.deserialize(["GlorotUniform"])
    with pytest.raises(TypeError):
        I.serialize(lambda shape: None)


# ---------------------------------------------------------------- against Keras 3
KERAS_SHAPES = [(5, 7), (7, 5), (3, 4, 6)]

# Runs in a child process so that Keras is on its NumPy backend whatever this session uses:
# only there does an int seed mean default_rng([seed, 0]), the stream we promise to share.
KERAS_DRAWS = """
import sys, numpy as np, keras
names, shapes = sys.argv[2].split(","), eval(sys.argv[3])
np.savez(sys.argv[1], **{f"{n}-{i}": np.asarray(getattr(keras.initializers, n)(seed=11)(s))
                         for n in names for i, s in enumerate(shapes)})
"""


@pytest.fixture(scope="module")
def keras_numpy_draws(tmp_path_factory):
    keras_reference()
    path = tmp_path_factory.mktemp("keras") / "draws.npz"
    env = {**os.environ, "KERAS_BACKEND": "numpy"}
    result = subprocess.run([sys.executable, "-c", KERAS_DRAWS, str(path), ",".join(RANDOM),
                             repr(KERAS_SHAPES)], env=env, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        pytest.skip(f"Keras on its NumPy backend did not run: {result.stderr[-500:]}")
    return dict(np.load(path))


@pytest.mark.parametrize("name", RANDOM)
@pytest.mark.parametrize("index", range(len(KERAS_SHAPES)), ids=[str(s) for s in KERAS_SHAPES])
def test_int_seeded_values_match_keras_numpy_backend(name, index, keras_numpy_draws):
    expected = keras_numpy_draws[f"{name}-{index}"]
    ours = getattr(I, name)(seed=11)(KERAS_SHAPES[index])
    assert ours.shape == expected.shape and ours.dtype == expected.dtype
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6 if name == "Orthogonal" else 0)


@pytest.mark.parametrize("init", EXAMPLES, ids=lambda i: type(i).__name__)
def test_configs_match_keras(init):
    keras = keras_reference()
    theirs = keras.initializers.deserialize(I.serialize(init))  # Keras reads our dict ...
    if isinstance(init, I.Identity):  # Keras 3.15's Identity has no get_config: gain is lost
        assert theirs.gain == init.gain and theirs.get_config() == {}
        return
    assert theirs.get_config() == init.get_config()
    ours = I.deserialize(keras.initializers.serialize(theirs))  # ... and we read Keras's
    assert ours.get_config() == init.get_config()


@pytest.mark.parametrize("name", list(ALIASES))
def test_aliases_match_keras(name):
    keras = keras_reference()
    cls = ALIASES[name]
    # Keras's own get("constant") fails (Constant.from_config needs "value"), so ask by dict.
    config = {"value": 0.0} if cls == "Constant" else {}
    theirs = keras.initializers.get({"class_name": name, "config": config})
    assert type(theirs).__name__ == type(I.get(name)).__name__ == cls
    if cls != "Identity":  # Keras 3.15's Identity reports an empty config
        assert theirs.get_config() == I.get(name).get_config()
