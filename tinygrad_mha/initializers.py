"""Weight initializers with Keras 3 names, defaults, formulas and configs.

    init = tm.initializers.get("glorot_uniform")
    kernel = init((64, 8, 16), dtype="float32", device="cpu")   # a backend array

Random values are always drawn on the host by a NumPy generator in float64, then cast and
moved to the device, so a seeded initializer gives the same numbers on "cpu" and "cuda".

Seeds (Keras 3 semantics): an int ``seed`` makes every call of the instance return the same
values for the same shape (stateless, like Keras; for an int seed the stream is the one Keras's
NumPy backend uses, so the values match it). ``seed=None`` draws from the shared host generator
``backend.generator("cpu")``, so repeated calls differ and ``tm.set_seed`` makes them
reproducible. A ``numpy.random.Generator`` may also be passed: a private stream that advances
with every call (the role of Keras's ``SeedGenerator``).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from . import backend
from ._registry import Registry

# Standard deviation of a standard normal truncated to [-2, 2]; dividing by it gives a
# truncated normal the variance its untruncated formula promises.
TRUNCATED_NORMAL_STDDEV = 0.87962566103423978


# ---------------------------------------------------------------- helpers
def compute_fans(shape, input_axes=None, output_axes=None) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight shape, as Keras computes them.

    Rank 2 is (in, out); rank > 2 treats the leading axes as a convolution's receptive field
    (multiplying both fans); rank 1 uses its length for both; a scalar gives (1, 1). Explicit
    ``input_axes`` and ``output_axes`` multiply the sizes of those axes instead.
    """
    shape = tuple(shape)
    if input_axes is not None and output_axes is not None:
        return (int(math.prod(shape[a] for a in input_axes)),
                int(math.prod(shape[a] for a in output_axes)))
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return int(shape[0]), int(shape[0])
    receptive_field = math.prod(shape[:-2])
    return int(shape[-2] * receptive_field), int(shape[-1] * receptive_field)


def _check_shape(shape) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"shape must be an int or a tuple of ints, got {shape!r}") from None
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0:
            raise ValueError(f"shape must hold non-negative ints, got {shape!r}")
    return tuple(int(d) for d in dims)


def _check_dtype(dtype, float_only: bool) -> np.dtype:
    dt = np.dtype("float32" if dtype is None else dtype)
    kinds = "f" if float_only else "fiub"
    if dt.kind not in kinds or (dt.kind == "f" and dt.itemsize not in (2, 4, 8)):
        wanted = "float16, float32 or float64" if float_only else "a float, int or bool dtype"
        raise TypeError(f"dtype must be {wanted}, got {dt}")
    return dt


def _check_number(value, name: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return float(value)


# ---------------------------------------------------------------- base classes
class Initializer:
    """Base class: ``init(shape, dtype, device, fan_in, fan_out) -> backend array``.

    Subclasses implement ``_generate(shape, dtype, xp, fan_in, fan_out)``; random ones return
    a host NumPy array, which ``__call__`` moves to the device.
    """

    _float_only = True

    def __call__(self, shape, dtype="float32", device="cpu", fan_in=None, fan_out=None):
        shape = _check_shape(shape)
        dtype = _check_dtype(dtype, self._float_only)
        device = backend.check_device(device)
        xp = backend.xp_for(device)  # fails early, and clearly, when "cuda" is unavailable
        for name, fan in (("fan_in", fan_in), ("fan_out", fan_out)):
            if fan is not None and (isinstance(fan, bool) or not isinstance(fan, numbers.Real)
                                    or fan < 0):
                raise ValueError(f"{name} must be a non-negative number or None, got {fan!r}")
        return backend.to_device(self._generate(shape, dtype, xp, fan_in, fan_out), device)

    def _generate(self, shape, dtype, xp, fan_in, fan_out):
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def clone(self):
        """A fresh instance with the same config (Keras layers clone before each use)."""
        return type(self).from_config(self.get_config())

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class RandomInitializer(Initializer):
    """Owns the seed logic shared by every random initializer."""

    def __init__(self, seed=None):
        ok = (seed is None or isinstance(seed, np.random.Generator)
              or (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)
                  and 0 <= seed < 2**32))
        if not ok:
            raise ValueError("seed must be None, an int in [0, 2**32) "
                             f"or a numpy.random.Generator, got {seed!r}")
        self.seed = int(seed) if isinstance(seed, (int, np.integer)) else seed

    def _rng(self) -> np.random.Generator:
        if self.seed is None:
            return backend.generator("cpu")
        if isinstance(self.seed, np.random.Generator):
            return self.seed
        # A fresh stream per call makes an int seed stateless; [seed, 0] is the seed Keras's
        # NumPy backend hands to default_rng, so the numbers agree with it.
        return np.random.default_rng([self.seed, 0])

    def get_config(self) -> dict:
        # A Generator is a live stream and cannot be written down; its config says "unseeded".
        return {"seed": self.seed if isinstance(self.seed, int) else None}


def _normal(rng, shape, mean, stddev):
    return rng.normal(loc=mean, scale=stddev, size=shape)


def _uniform(rng, shape, minval, maxval):
    return rng.uniform(low=minval, high=maxval, size=shape)


def _truncated_normal(rng, shape, mean, stddev):
    """Normal samples farther than 2 stddev from the mean are thrown away and re-drawn."""
    size = math.prod(shape)
    kept = np.empty(0)
    while kept.size < size:
        batch = rng.normal(loc=mean, scale=stddev, size=size)
        inside = batch[(batch >= mean - 2 * stddev) & (batch <= mean + 2 * stddev)]
        kept = np.concatenate([kept, inside])
    return kept[:size].reshape(shape)


# ---------------------------------------------------------------- constant initializers
class Zeros(Initializer):
    """All zeros."""

    _float_only = False

    def _generate(self, shape, dtype, xp, fan_in, fan_out):
        return xp.zeros(shape, dtype=dtype)


class Ones(Initializer):
    """All ones."""

    _float_only = False

    def _generate(self, shape, dtype, xp, fan_in, fan_out):
        return xp.ones(shape, dtype=dtype)


class Constant(Initializer):
    """Every entry equal to one scalar ``value``."""

    _float_only = False

    def __init__(self, value=0.0):
        if backend.is_cupy_array(value):  # a CuPy 0-d value: to the host first (no implicit copy)
            value = backend.to_numpy(value)
        if isinstance(value, (np.generic, np.ndarray)) and np.ndim(value) == 0:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"Constant value must be a real scalar, got {value!r}")
        self.value = value

    def _generate(self, shape, dtype, xp, fan_in, fan_out):
        return xp.full(shape, self.value, dtype=dtype)

    def get_config(self):
        return {"value": self.value}


class Identity(Initializer):
    """``gain`` times the identity matrix (2-D shapes only; rectangular ones get ``eye``)."""

    _float_only = False

    def __init__(self, gain=1.0):
        self.gain = _check_number(gain, "gain")

    def _generate(self, shape, dtype, xp, fan_in, fan_out):
        if len(shape) != 2:
            raise ValueError(f"Identity initializer needs a 2-D shape, got shape={shape} "
                             f"of rank {len(shape)}")
        return (self.gain * xp.eye(*shape)).astype(dtype)

    def get_config(self):
        return {"gain": self.gain}


# ---------------------------------------------------------------- random initializers
class RandomNormal(RandomInitializer):
    """Normal samples with ``mean`` and ``stddev``."""

    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean = _check_number(mean, "mean")
        self.stddev = _check_number(stddev, "stddev")
        super().__init__(seed)

    def _generate(self, shape, dtype, xp, fan_in, fan_out):
        return _normal(self._rng(), shape, self.mean, self.stddev).astype(dtype)

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "stddev": self.stddev}


class RandomUniform(RandomInitializer):
    """Uniform samples in ``[minval, maxval)``."""

    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        self.minval = _check_number(minval, "minval")
        self.maxval = _check_number(maxval, "maxval")
        super().__init__(seed)

    def _generate(self, shape, dtype, xp, fan_in, fan_out):
        return _uniform(self._rng(), shape, self.minval, self.maxval).astype(dtype)

    def get_config(self):
        return {**super().get_config(), "minval": self.minval, "maxval": self.maxval}


class TruncatedNormal(RandomInitializer):
    """Normal samples re-drawn until within 2 ``stddev`` of ``mean`` (so their std is ~0.88
    stddev)."""

    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean = _check_number(mean, "mean")
        self.stddev = _check_number(stddev, "stddev")
        super().__init__(seed)

    def _generate(self, shape, dtype, xp, fan_in, fan_out):
        return _truncated_normal(self._rng(), shape, self.mean, self.stddev).astype(dtype)

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "stddev": self.stddev}


class VarianceScaling(RandomInitializer):
    """Samples with variance ``scale / n``, n the fan picked by ``mode`` (at least 1).

    "truncated_normal" (alias "normal") divides the stddev by 0.8796... so the variance after
    truncation is still scale / n; "uniform" uses the limit sqrt(3 * scale / n). ``fan_in`` and
    ``fan_out`` passed at call time (an einsum-aware layer knows them) override ``compute_fans``.
    """

    MODES = ("fan_in", "fan_out", "fan_avg")
    DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "uniform")

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None,
                 input_axes=None, output_axes=None):
        self.scale = _check_number(scale, "scale", positive=True)
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        dist = distribution.lower() if isinstance(distribution, str) else distribution
        dist = "truncated_normal" if dist == "normal" else dist
        if dist not in self.DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {self.DISTRIBUTIONS} (or 'normal'), "
                             f"got {distribution!r}")
        self.mode = mode
        self.distribution = dist
        self.input_axes = None if input_axes is None else list(input_axes)
        self.output_axes = None if output_axes is None else list(output_axes)
        super().__init__(seed)

    def _generate(self, shape, dtype, xp, fan_in, fan_out):
        auto_in, auto_out = compute_fans(shape, self.input_axes, self.output_axes)
        fan_in = auto_in if fan_in is None else fan_in
        fan_out = auto_out if fan_out is None else fan_out
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        variance = self.scale / max(1.0, n)
        rng = self._rng()
        if self.distribution == "truncated_normal":
            values = _truncated_normal(rng, shape, 0.0,
                                       math.sqrt(variance) / TRUNCATED_NORMAL_STDDEV)
        elif self.distribution == "untruncated_normal":
            values = _normal(rng, shape, 0.0, math.sqrt(variance))
        else:
            limit = math.sqrt(3.0 * variance)
            values = _uniform(rng, shape, -limit, limit)
        return values.astype(dtype)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "mode": self.mode,
                "distribution": self.distribution, "input_axes": self.input_axes,
                "output_axes": self.output_axes}


class _FixedVarianceScaling(VarianceScaling):
    """A VarianceScaling whose scale, mode and distribution are fixed by the subclass."""

    SETTINGS: tuple = ()  # (scale, mode, distribution)

    def __init__(self, seed=None, input_axes=None, output_axes=None):
        scale, mode, distribution = self.SETTINGS
        super().__init__(scale, mode, distribution, seed, input_axes, output_axes)

    def get_config(self):
        config = super().get_config()
        return {k: config[k] for k in ("seed", "input_axes", "output_axes")}


class GlorotUniform(_FixedVarianceScaling):
    """Uniform in +-sqrt(6 / (fan_in + fan_out))  (Glorot & Bengio, 2010)."""
    SETTINGS = (1.0, "fan_avg", "uniform")


class GlorotNormal(_FixedVarianceScaling):
    """Truncated normal, stddev sqrt(2 / (fan_in + fan_out)) after truncation."""
    SETTINGS = (1.0, "fan_avg", "truncated_normal")


class HeUniform(_FixedVarianceScaling):
    """Uniform in +-sqrt(6 / fan_in)  (He et al., 2015)."""
    SETTINGS = (2.0, "fan_in", "uniform")


class HeNormal(_FixedVarianceScaling):
    """Truncated normal, stddev sqrt(2 / fan_in) after truncation."""
    SETTINGS = (2.0, "fan_in", "truncated_normal")


class LecunUniform(_FixedVarianceScaling):
    """Uniform in +-sqrt(3 / fan_in)  (Klambauer et al., 2017)."""
    SETTINGS = (1.0, "fan_in", "uniform")


class LecunNormal(_FixedVarianceScaling):
    """Truncated normal, stddev sqrt(1 / fan_in) after truncation."""
    SETTINGS = (1.0, "fan_in", "truncated_normal")


class Orthogonal(RandomInitializer):
    """``gain`` times a random orthogonal matrix (Saxe et al., 2014).

    The shape is flattened to (prod(shape[:-1]), shape[-1]); Q of the QR decomposition of a
    standard normal matrix, with column signs fixed by diag(R) so Q is uniformly distributed,
    gives orthonormal columns (or rows, when there are fewer rows than columns).
    """

    def __init__(self, gain=1.0, seed=None):
        self.gain = _check_number(gain, "gain")
        super().__init__(seed)

    def _generate(self, shape, dtype, xp, fan_in, fan_out):
        if len(shape) < 2:
            raise ValueError("Orthogonal initializer needs a shape of rank >= 2, "
                             f"got shape={shape}")
        rows, cols = math.prod(shape[:-1]), shape[-1]
        a = _normal(self._rng(), (max(rows, cols), min(rows, cols)), 0.0, 1.0)
        q, r = np.linalg.qr(a)
        q = q * np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return (self.gain * q.reshape(shape)).astype(dtype)

    def get_config(self):
        return {**super().get_config(), "gain": self.gain}


# ---------------------------------------------------------------- lookup
_REGISTRY = Registry("initializer", Initializer, {
    Zeros: ("zeros", "zero"),
    Ones: ("ones", "one"),
    Constant: ("constant",),
    Identity: ("identity", "IdentityInitializer"),
    RandomNormal: ("random_normal", "normal"),
    RandomUniform: ("random_uniform", "uniform"),
    TruncatedNormal: ("truncated_normal",),
    VarianceScaling: ("variance_scaling",),
    GlorotUniform: ("glorot_uniform",),
    GlorotNormal: ("glorot_normal",),
    HeUniform: ("he_uniform",),
    HeNormal: ("he_normal",),
    LecunUniform: ("lecun_uniform",),
    LecunNormal: ("lecun_normal",),
    Orthogonal: ("orthogonal", "OrthogonalInitializer"),
})


def get(identifier):
    """None, a name ("glorot_uniform", "GlorotUniform", ...), a config dict, an instance or a
    callable ``fn(shape, dtype=...)`` -> an initializer (or None)."""
    return _REGISTRY.get(identifier)


def serialize(initializer) -> dict | None:
    """``{"class_name": ..., "config": ...}``, JSON-serialisable."""
    return _REGISTRY.serialize(initializer)


def deserialize(config):
    """Rebuild an initializer from ``serialize``'s dict (Keras's serialized form also works)."""
    return _REGISTRY.deserialize(config)


__all__ = ["Initializer", "Zeros", "Ones", "Constant", "Identity", "RandomNormal", "RandomUniform",
           "TruncatedNormal", "VarianceScaling", "GlorotUniform", "GlorotNormal", "HeUniform",
           "HeNormal", "LecunUniform", "LecunNormal", "Orthogonal", "compute_fans", "get",
           "serialize", "deserialize"]
