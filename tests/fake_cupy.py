"""A stand-in for CuPy made of NumPy, so that a machine without a GPU runs the "cuda" code path.

The library never imports NumPy or CuPy in its ops: it asks ``backend.array_module`` which
module owns an array. This fake makes that question come out "cupy" for device arrays and
answers with a module that behaves like CuPy where it matters for correctness:

* device arrays are a NumPy subclass whose type lives in a "cupy" module, and they only
  come back to the host through ``.get()`` (or ``cupy.asnumpy``);
* every function of the fake module, and every ufunc applied to a device array, refuses a
  host (``numpy.ndarray``) operand, as CuPy does: an op that mixes devices fails loudly
  here instead of silently computing on the CPU;
* results of the fake module's functions are device arrays, as CuPy's are.

It cannot show CuPy's own bugs or speed; it shows that every array an op touches goes
through the backend seam and stays on its device. ``install()`` puts it in place.
"""

from __future__ import annotations

import sys
import types

import numpy as np

from tinygrad_mha import backend


class DeviceArray(np.ndarray):
    """A "GPU" array: NumPy memory, CuPy manners."""

    def get(self) -> np.ndarray:
        return np.array(self.view(np.ndarray))

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        out = kwargs.get("out", ())
        _refuse_host(ufunc.__name__, inputs + tuple(out))
        plain = [x.view(np.ndarray) if isinstance(x, DeviceArray) else x for x in inputs]
        if out:
            kwargs["out"] = tuple(o.view(np.ndarray) for o in out)
        result = getattr(ufunc, method)(*plain, **kwargs)
        if out:
            return out[0] if len(out) == 1 else out
        return _to_device(result)


DeviceArray.__module__ = "cupy._fake"  # how backend.is_cupy_array recognises a device array


def _refuse_host(what: str, values) -> None:
    for x in values:
        if isinstance(x, np.ndarray) and not isinstance(x, DeviceArray):
            raise TypeError(f"fake cupy: {what} got a host numpy.ndarray of shape {x.shape}; "
                            "CuPy refuses host arrays (move it with .to('cuda') / xp.asarray)")
        if isinstance(x, (list, tuple)):
            _refuse_host(what, x)


def _to_device(value):
    if isinstance(value, np.generic):  # CuPy returns 0-d arrays, never NumPy scalars
        value = np.asarray(value)
    if isinstance(value, np.ndarray) and not isinstance(value, DeviceArray):
        return value.view(DeviceArray)
    if isinstance(value, tuple):
        return tuple(_to_device(v) for v in value)
    return value


# Functions that take host data on purpose (making or copying an array onto the device).
_FROM_HOST = {"asarray", "array", "ascontiguousarray"}


class _Generator:
    """numpy.random.Generator whose draws land on the device."""

    def __init__(self, seed):
        self._rng = np.random.default_rng(seed)
        self.bit_generator = self._rng.bit_generator

    def __getattr__(self, name):
        method = getattr(self._rng, name)
        return lambda *args, **kwargs: _to_device(method(*args, **kwargs))


def _wrap_function(name, fn):
    def device_fn(*args, **kwargs):
        if name not in _FROM_HOST:
            _refuse_host(name, args + tuple(kwargs.values()))
        result = fn(*args, **kwargs)
        if name in _FROM_HOST and isinstance(args[0], np.ndarray) and not isinstance(args[0], DeviceArray):
            result = result.copy()  # CuPy copies host data onto the device: no shared memory
        return _to_device(result)
    return device_fn


class FakeCupy(types.ModuleType):
    """``import cupy`` after ``install()`` gives this module."""

    def __init__(self):
        super().__init__("cupy")
        self.ndarray = DeviceArray
        self.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1))
        self.random = types.SimpleNamespace(default_rng=_Generator)
        self.asnumpy = lambda a: a.get() if isinstance(a, DeviceArray) else np.asarray(a)

    def __getattr__(self, name):
        value = getattr(np, name)
        if callable(value) and not isinstance(value, type):
            value = _wrap_function(name, value)
        setattr(self, name, value)  # cached: looked up on every op
        return value


def _scatter_add(out, index, values) -> None:
    """cupyx.scatter_add: ``out[index] += values`` with repeated indices adding up."""
    parts = index if isinstance(index, tuple) else (index,)
    _refuse_host("scatter_add", (out, values) + parts)
    plain = tuple(p.view(np.ndarray) if isinstance(p, DeviceArray) else p for p in parts)
    np.add.at(out.view(np.ndarray), plain if isinstance(index, tuple) else plain[0], values.view(np.ndarray))


def install(monkeypatch) -> FakeCupy:
    """Make "cuda" mean the fake device for the rest of a test (undone by ``monkeypatch``)."""
    fake = FakeCupy()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    cupyx = types.ModuleType("cupyx")
    cupyx.scatter_add = _scatter_add
    monkeypatch.setitem(sys.modules, "cupyx", cupyx)
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setattr(backend, "_generators", {})
    return fake
