"""The one seam between tinygrad_mha and its array libraries.

Every op asks its inputs which module they live in (``array_module``) instead of importing
NumPy or CuPy itself, so the same code runs on the CPU (NumPy) and the GPU (CuPy). CuPy is
imported lazily: a machine without it never pays for it and never sees it fail.
"""

from __future__ import annotations

import numpy as np

DEVICES = ("cpu", "cuda")

_cupy = None  # the imported cupy module, once "cuda" has been asked for


def _import_cupy():
    """Import CuPy on first use and check that a GPU is really there."""
    global _cupy
    if _cupy is not None:
        return _cupy
    try:
        import cupy
    except ImportError as exc:
        raise RuntimeError(
            'device "cuda" needs CuPy, which is not installed: install it with '
            '`pip install "tinygrad_mha[gpu]"` (or the cupy-cudaXXx wheel matching your CUDA)'
        ) from exc
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver missing or broken
        raise RuntimeError(
            f'device "cuda" needs a working CUDA GPU, but CuPy reports: {exc}') from exc
    if count < 1:
        raise RuntimeError('device "cuda" needs a CUDA GPU, but CuPy found none')
    _cupy = cupy
    return cupy


def cuda_available() -> bool:
    """True when CuPy imports and sees at least one GPU."""
    try:
        _import_cupy()
    except RuntimeError:
        return False
    return True


def check_device(device) -> str:
    """Validate a device name; return it in canonical form ("cpu" or "cuda")."""
    if device is None:
        return "cpu"
    if not isinstance(device, str) or device.split(":")[0] not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    return device.split(":")[0]


def xp_for(device: str):
    """The array module (numpy or cupy) that holds arrays on ``device``."""
    device = check_device(device)
    return np if device == "cpu" else _import_cupy()


def is_cupy_array(array) -> bool:
    # Looking at the type's module avoids importing cupy just to ask; a NumPy array (asked
    # about some 25 times per small attention step) is answered without the string compare.
    kind = type(array)
    return kind is not np.ndarray and kind.__module__.startswith("cupy")


def array_module(array):
    """numpy or cupy, whichever module ``array`` belongs to.

    A CuPy array means CuPy is imported already, so asking for it costs nothing: the answer
    never depends on whether something called ``xp_for("cuda")`` first.
    """
    if not is_cupy_array(array):
        return np
    return _cupy if _cupy is not None else _import_cupy()


def device_of(array) -> str:
    return "cuda" if is_cupy_array(array) else "cpu"


def to_device(array, device: str):
    """Move an array to ``device``; a no-op when it is already there."""
    device = check_device(device)
    if device_of(array) == device:
        return array
    if device == "cpu":
        return array.get()
    return xp_for("cuda").asarray(array)


def to_numpy(array) -> np.ndarray:
    return array.get() if is_cupy_array(array) else np.asarray(array)


# ---------------------------------------------------------------- random numbers
# One generator per device. ``set_seed`` replaces them all, so that initialisers and dropout
# become reproducible; without it they start from fresh OS entropy like NumPy's default_rng().
# Seeded draws never depend on the device: initializers draw on the host ("cpu" generator)
# and move the values, dropout uses the counter-based bits below. CuPy's own generator
# (cuRAND XORWOW, whose numbers differ from NumPy's PCG64 and, for large arrays, between GPU
# models) is only for draws that need not match another device.
_seed = None
_generators: dict = {}


def set_seed(seed) -> None:
    """Seed every device's generator (initializers and dropout draw from them)."""
    global _seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                             or seed < 0):
        raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
    _seed = None if seed is None else int(seed)
    _generators.clear()


def make_generator(seed, device: str = "cpu"):
    """A fresh generator for ``device`` seeded with ``seed`` (None: OS entropy)."""
    return xp_for(device).random.default_rng(seed)


def generator(device: str = "cpu"):
    """The shared generator of ``device``."""
    device = check_device(device)
    if device not in _generators:
        _generators[device] = make_generator(_seed, device)
    return _generators[device]


# ---------------------------------------------------------------- counter-based random bits
# Dropout draws its uniforms as a pure function of (key, position): SplitMix64's output for
# counter ``position`` of stream ``key``. The same key gives the same numbers on every device
# (plain uint64 arithmetic, identical in NumPy and CuPy) and for any order or blocking of the
# positions, so a blocked attention kernel can draw exactly the dense path's mask block by
# block, and forward and backward can redraw it instead of storing it.
_GAMMA = np.uint64(0x9E3779B97F4A7C15)  # SplitMix64's increment (odd, 2**64 / golden ratio)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix64(z):
    """SplitMix64's finaliser: every output bit depends on every input bit (in place)."""
    z ^= z >> np.uint64(30)
    z *= _MIX1
    z ^= z >> np.uint64(27)
    z *= _MIX2
    z ^= z >> np.uint64(31)
    return z


def random_key(seed) -> int:
    """A 64-bit stream key: fixed for an int ``seed``; the next draw of a host generator
    (a layer's own stream) or, for None, of the shared host generator (``set_seed``)."""
    if seed is None:
        seed = generator("cpu")
    if hasattr(seed, "integers"):
        return int(seed.integers(0, 2**63, dtype=np.int64))
    return int(_mix64(np.array([seed], dtype=np.uint64))[0])


def uniform_at(key: int, position):
    """Uniform float32 numbers in [0, 1), one per entry of the integer array ``position``.

    A pure function of (key, position), on whichever device ``position`` lives.
    """
    xp = array_module(position)
    z = position.astype(xp.uint64)
    z += np.uint64(1)
    z *= _GAMMA
    z += np.uint64(key)
    bits = _mix64(z) >> np.uint64(40)  # the top 24 bits: exactly representable in float32
    return bits.astype(xp.float32) * xp.float32(2.0 ** -24)


def uniform(key: int, shape: tuple, device: str = "cpu"):
    """``uniform_at`` for the positions 0, 1, ... of a C-ordered array of ``shape``."""
    xp = xp_for(device)
    size = int(np.prod(shape, dtype=np.int64))
    return uniform_at(key, xp.arange(size, dtype=xp.uint64)).reshape(shape)


def get_state() -> tuple:
    """An opaque snapshot of the random state, for tests that prove nothing drew from it."""
    return _seed, {d: g.bit_generator.state for d, g in _generators.items() if d == "cpu"}


def scatter_add(out, index, values) -> None:
    """``out[index] += values`` in place, adding repeated indices up (``ufunc.at``).

    ``xp.add.at`` on both devices: CuPy 13+ has it, and its older ``cupyx.scatter_add`` warns
    DeprecationWarning on every call (CuPy 13.6, 14.2).
    """
    parts = index if isinstance(index, tuple) else (index,)
    if not any(getattr(p, "ndim", 0) > 0 and p.dtype.kind in "iu" for p in parts):
        out[index] += values  # basic or boolean index: no place is hit twice, no slow add.at
    else:
        array_module(out).add.at(out, index, values)


def check_index(index, shape) -> None:
    """Raise IndexError, as NumPy does, for an integer index out of range for ``shape``.

    CuPy wraps out-of-range integer-array indices silently (x[[5]] of a length-3 array is
    x[2]: "Out-of-bounds indices" in CuPy's "Differences between CuPy and NumPy"), so getitem
    checks before it indexes, on every device, with NumPy's message. One reduction per
    integer array (a device sync on CuPy); slices, bools and None need no check.
    """
    parts = index if isinstance(index, tuple) else (index,)
    kinds = [getattr(getattr(p, "dtype", None), "kind", None) for p in parts]
    width = [getattr(p, "ndim", 0) if k == "b" or isinstance(p, bool)
             else 0 if p is None or p is Ellipsis
             else 1 for p, k in zip(parts, kinds)]  # how many axes of ``shape`` each part indexes
    axis = 0
    for p, kind, w in zip(parts, kinds, width):
        if p is Ellipsis:
            axis += max(len(shape) - sum(width), 0)
            continue
        integer = kind in ("i", "u") or (isinstance(p, (int, np.integer))
                                          and not isinstance(p, bool))
        if integer and axis < len(shape) and getattr(p, "size", 1) > 0:
            size = shape[axis]
            if getattr(p, "ndim", 0) == 0:
                low = high = int(p)
            else:
                low, high = int(p.min()), int(p.max())
            for bad in (low, high):
                if not -size <= bad < size:
                    raise IndexError(f"index {bad} is out of bounds for axis {axis} "
                                     f"with size {size}")
        axis += w
