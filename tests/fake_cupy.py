"""A stand-in for CuPy made of NumPy, as strict as CuPy, so a machine without a GPU runs "cuda".

The library never imports NumPy or CuPy in its ops: it asks ``backend.array_module`` which
module owns an array. This fake makes that question come out "cupy" for device arrays and
answers with a module that refuses what CuPy refuses and does what CuPy does. Each rule names
its source (CuPy 13/14 documentation or source; the ``cupy-cuda12x`` 14.2 wheel imports
without a GPU, and ``tests/test_cupy_audit.py`` checks the names below against it):

* A device array is NOT a ``numpy.ndarray`` (``cupy.ndarray`` is its own class:
  cupy/_core/core.pyx ``cdef class _ndarray_base``), so ``isinstance(x, np.ndarray)`` is False.
* Implicit conversion to NumPy raises ``TypeError``: ``np.asarray(x)``, ``np.array(x)``
  call ``__array__``, which CuPy defines to raise ("Implicit conversion to a NumPy array is
  not allowed. Please use `.get()` to construct a NumPy array explicitly."; core.pyx
  ``__array__``; docs: user_guide/difference.html). Only ``.get()`` and ``cupy.asnumpy``
  copy to the host.
* NumPy functions and ufuncs given a device array dispatch to the CuPy function of the same
  name through ``__array_function__`` / ``__array_ufunc__`` (NEP 18 / NEP 13; core.pyx) and
  fail with TypeError when CuPy has no such function (NumPy's "no implementation found").
* Every function, ufunc and operator refuses a host ``numpy.ndarray`` operand:
  "Unsupported type <class 'numpy.ndarray'>" (cupy/_core/_kernel.pyx ``_preprocess_args``);
  Python and NumPy scalars are fine. Only ``asarray``/``array``/``ascontiguousarray`` take
  host data, and they copy it (docs: reference/generated/cupy.asarray.html).
* The module has only names CuPy has (``CUPY_NAMES``: those of ``dir(numpy)`` that
  ``dir(cupy)`` 14.2 also has); anything else is an AttributeError, as on ``cupy``.
* Integer-array indices out of range WRAP instead of raising (docs: user_guide/difference.html,
  "Out-of-bounds indices"; also ``cupyx.scatter_add`` and ``ufunc.at``: cupyx/_scatter.py
  note "it wraps indices"); a plain int index out of range still raises IndexError (basic
  indexing, core.pyx ``_simple_getitem``).
* Reductions and scalar indexing return 0-d device arrays, never NumPy scalars (docs:
  user_guide/difference.html, "Reduction methods return zero-dimension array").
* No floating-point warnings: CuPy computes on the device and never emits NumPy's
  RuntimeWarning for overflow, division by zero or invalid values (docs: user_guide/difference.html).
* Its own random stream: ``cupy.random.default_rng`` is cuRAND XORWOW, not NumPy's PCG64
  (cupy/random/_generator_api.pyx); here a Philox stream stands for it, so a seeded device
  draw never equals NumPy's; its Generator has only CuPy's methods (no ``normal``).
* ``cupyx.scatter_add`` warns DeprecationWarning ("use cupy.add.at"; ndarray.scatter_add in
  CuPy 13.6 and 14.2).

It cannot show CuPy's own bugs or speed; it shows that every array an op touches goes
through the backend seam and stays on its device. ``install()`` puts it in place.
"""

from __future__ import annotations

import copy
import numbers
import sys
import types
import warnings

import numpy as np

from tinygrad_mha import backend

# The names both ``dir(numpy)`` and ``dir(cupy)`` have in NumPy 2 / CuPy 14.2, minus sub-modules
# and I/O; test_cupy_audit checks each against real CuPy when it imports.
CUPY_NAMES = frozenset("""
abs absolute acos acosh add all allclose amax amin angle any append arange arccos arccosh
arcsin arcsinh arctan arctan2 arctanh argmax argmin argpartition argsort argwhere around array
array_equal array_split asanyarray asarray ascontiguousarray asfortranarray asin asinh astype
atan atan2 atanh atleast_1d atleast_2d atleast_3d average bincount bitwise_and bitwise_not
bitwise_or bitwise_xor bool bool_ broadcast_arrays broadcast_shapes broadcast_to can_cast cbrt
ceil choose clip column_stack concat concatenate conj conjugate copy copysign copyto cos cosh
count_nonzero cross cumprod cumsum deg2rad degrees diag diagflat diagonal diff divide divmod dot
double dstack dtype e einsum empty empty_like equal exp exp2 expand_dims expm1 eye fabs
finfo flatnonzero flip fliplr flipud float16 float32 float64 float_power floating floor floor_divide
fmax fmin fmod frexp full full_like generic greater greater_equal half hstack hypot identity iinfo
imag indices inexact inf inner int16 int32 int64 int8 int_ intc integer intp invert isclose
isfinite isinf isnan isscalar issubdtype ix_ kron ldexp left_shift less less_equal linspace log
log10 log1p log2 logaddexp logaddexp2 logical_and logical_not logical_or logical_xor logspace
matmul max maximum may_share_memory mean median meshgrid min minimum mod modf moveaxis multiply
nan nan_to_num nanargmax nanargmin nanmax nanmean nanmin nanprod nanstd nansum nanvar ndim
negative newaxis nextafter nonzero not_equal number ones ones_like outer pad partition percentile
permute_dims pi positive pow power prod promote_types ptp put put_along_axis putmask quantile random
rad2deg radians ravel ravel_multi_index real reciprocal remainder repeat reshape result_type
right_shift rint roll rollaxis rot90 round searchsorted select shape shares_memory sign signbit
signedinteger sin sinc single sinh size sort split sqrt square squeeze stack std subtract sum
swapaxes take take_along_axis tan tanh tensordot tile trace transpose tri tril triu true_divide
trunc uint16 uint32 uint64 uint8 unique unravel_index unsignedinteger var vdot vstack where
zeros zeros_like
""".split())

# Functions that take host data on purpose (making or copying an array onto the device).
_FROM_HOST = frozenset({"asarray", "array", "ascontiguousarray", "asanyarray", "asfortranarray"})

# The public methods and attributes of cupy.ndarray (14.2) that NumPy's ndarray also has.
_NDARRAY_METHODS = frozenset("""
all any argmax argmin argpartition argsort astype choose clip compress conj conjugate copy cumprod
cumsum diagonal dot dump dumps fill flatten item max mean min nonzero partition prod put ravel
repeat reshape round searchsorted sort squeeze std sum swapaxes take tobytes tofile tolist trace
transpose var view
""".split())


class ndarray:
    """A "GPU" array: NumPy memory inside, CuPy manners outside."""

    __slots__ = ("_a",)
    __hash__ = None

    def __init__(self, shape, dtype=float, order="C"):
        self._a = np.empty(shape, dtype=dtype, order=order)

    @classmethod
    def _of(cls, array: np.ndarray) -> "ndarray":
        obj = cls.__new__(cls)
        obj._a = array
        return obj

    # -- leaving the device: only on purpose
    def get(self, stream=None, order="C", out=None) -> np.ndarray:
        return np.array(self._a, order=order, copy=True)

    def set(self, arr, stream=None) -> None:
        self._a[...] = arr

    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return _apply_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types_, args, kwargs):
        # NumPy's top-level functions dispatch to CuPy's namesake (core.pyx __array_function__);
        # NotImplemented makes NumPy raise TypeError, as it does for a function CuPy lacks.
        name = func.__name__
        if name not in CUPY_NAMES or getattr(np, name, None) is not func:
            return NotImplemented
        return getattr(_module(), name)(*args, **kwargs)

    # -- attributes
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: ndarray._of(self._a.T))
    mT = property(lambda self: ndarray._of(self._a.mT))
    real = property(lambda self: ndarray._of(self._a.real))
    imag = property(lambda self: ndarray._of(self._a.imag))
    base = property(lambda self: None if self._a.base is None else ndarray._of(self._a.base))
    device = property(lambda self: "cuda:0")

    def __getattr__(self, name):
        if name in _NDARRAY_METHODS:
            method = getattr(self._a, name)

            def device_method(*args, **kwargs):
                args, kwargs = _plain_args(name, args, kwargs)
                with np.errstate(all="ignore"):
                    return _to_device(method(*args, **kwargs))
            return device_method
        raise AttributeError(f"'cupy.ndarray' object has no attribute {name!r}")

    # -- indexing (wrapping integer arrays, as CuPy does)
    def __getitem__(self, index):
        return _to_device(self._a[_plain_index(index, self._a.shape)])

    def __setitem__(self, index, value):
        # A host array as the value is refused here; CuPy may copy it over, but an op that does
        # so hides a host-to-device copy, so the stand-in asks for an explicit xp.asarray.
        self._a[_plain_index(index, self._a.shape)] = _plain_operand("setitem", value)

    # -- Python protocol
    def __len__(self):
        return len(self._a)

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (ndarray._of(self._a[i]) if self._a.ndim > 1 else _to_device(self._a[i])
                for i in range(len(self._a)))

    def __bool__(self):
        return bool(self._a)

    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __complex__(self):
        return complex(self._a)

    def __repr__(self):
        return repr(self._a)

    def __str__(self):
        return str(self._a)

    def __format__(self, spec):
        return format(self._a.item() if self._a.ndim == 0 else self._a, spec)

    def __copy__(self):
        return ndarray._of(self._a.copy())

    def __deepcopy__(self, memo):
        return ndarray._of(copy.deepcopy(self._a, memo))

    def __reduce__(self):
        return ndarray._of, (self._a,)

    def __dlpack__(self, *args, **kwargs):
        raise TypeError("fake cupy: no DLPack export")


def _binary(ufunc, reflected=False, inplace=False):
    def op(self, other):
        if not isinstance(other, (ndarray, numbers.Number, np.generic, np.ndarray, list, tuple)):
            return NotImplemented  # let the other operand (e.g. a Tensor) answer
        if inplace:
            return _apply_ufunc(ufunc, "__call__", (self, other), {"out": (self,)})
        return _apply_ufunc(ufunc, "__call__", (other, self) if reflected else (self, other), {})
    return op


for _name, _ufunc in [("add", np.add), ("sub", np.subtract), ("mul", np.multiply),
                      ("truediv", np.true_divide), ("floordiv", np.floor_divide), ("mod", np.remainder),
                      ("pow", np.power), ("matmul", np.matmul), ("and", np.bitwise_and),
                      ("or", np.bitwise_or), ("xor", np.bitwise_xor), ("lshift", np.left_shift),
                      ("rshift", np.right_shift)]:
    setattr(ndarray, f"__{_name}__", _binary(_ufunc))
    setattr(ndarray, f"__r{_name}__", _binary(_ufunc, reflected=True))
    if _name != "matmul":  # cupy.ndarray has no __imatmul__ (dir(cupy.ndarray), 14.2)
        setattr(ndarray, f"__i{_name}__", _binary(_ufunc, inplace=True))
for _name, _ufunc in [("eq", np.equal), ("ne", np.not_equal), ("lt", np.less), ("le", np.less_equal),
                      ("gt", np.greater), ("ge", np.greater_equal)]:
    setattr(ndarray, f"__{_name}__", _binary(_ufunc))
for _name, _ufunc in [("neg", np.negative), ("pos", np.positive), ("abs", np.absolute),
                      ("invert", np.invert)]:
    setattr(ndarray, f"__{_name}__", lambda self, _u=_ufunc: _apply_ufunc(_u, "__call__", (self,), {}))


# ---------------------------------------------------------------- conversions
def _refuse_host(what, value):
    if isinstance(value, np.ndarray):
        raise TypeError(f"Unsupported type {type(value)} (fake cupy: {what} got a host array of shape "
                        f"{value.shape}; move it with .to('cuda') / xp.asarray)")


def _plain_operand(what, value):
    """A device array's memory, or a scalar; host arrays are refused."""
    if isinstance(value, ndarray):
        return value._a
    _refuse_host(what, value)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain_operand(what, v) for v in value)
    return value


def _plain_args(what, args, kwargs):
    return (tuple(_plain_operand(what, a) for a in args),
            {k: _plain_operand(what, v) for k, v in kwargs.items()})


def _to_device(value):
    if isinstance(value, np.generic):  # CuPy returns 0-d arrays, never NumPy scalars
        return ndarray._of(np.asarray(value))
    if isinstance(value, np.ndarray):
        return ndarray._of(value)
    if isinstance(value, tuple):
        return tuple(_to_device(v) for v in value)
    if isinstance(value, list):
        return [_to_device(v) for v in value]
    return value


def _index_parts(index):
    return index if isinstance(index, tuple) else (index,)


def _plain_index(index, shape):
    """The NumPy index for ``index``, with integer arrays wrapped into range as CuPy does."""
    parts = []
    for p in _index_parts(index):
        if isinstance(p, ndarray):
            p = p._a
        elif isinstance(p, list):
            p = np.asarray(p)
        parts.append(p)
    consumed = sum(p.ndim if isinstance(p, np.ndarray) and p.dtype == bool else 1
                   for p in parts if p is not None and p is not Ellipsis)
    axis, out = 0, []
    for p in parts:
        if p is Ellipsis:
            axis += len(shape) - consumed
        elif p is None:
            pass
        elif isinstance(p, np.ndarray) and p.dtype == bool:
            axis += p.ndim
        else:
            if isinstance(p, np.ndarray) and p.dtype.kind in "iu" and p.ndim > 0 and axis < len(shape):
                if shape[axis] > 0:
                    p = p % shape[axis]  # wrap, never raise (user_guide/difference.html)
            axis += 1
        out.append(p)
    return tuple(out) if isinstance(index, tuple) else out[0]


def _ufunc_operand(what, value):
    """A ufunc takes device arrays and Python or NumPy scalars only: CuPy's _preprocess_args
    (cupy/_core/_kernel.pyx) raises "Unsupported type" for anything else, lists included."""
    if isinstance(value, (list, tuple)):
        raise TypeError(f"Unsupported type {type(value)} (fake cupy: {what} got a {type(value).__name__}; "
                        "CuPy ufuncs take arrays and scalars only)")
    return _plain_operand(what, value)


def _apply_ufunc(np_ufunc, method, inputs, kwargs):
    plain = tuple(_ufunc_operand(np_ufunc.__name__, x) for x in inputs)
    out = kwargs.get("out")
    if out is not None:
        out = out if isinstance(out, tuple) else (out,)
        for o in out:
            if not isinstance(o, ndarray):
                raise TypeError(f"Unsupported type {type(o)} for out=")
        kwargs = {**kwargs, "out": tuple(o._a for o in out)}
    kwargs = {k: _plain_operand(np_ufunc.__name__, v) if k != "out" else v for k, v in kwargs.items()}
    with np.errstate(all="ignore"):
        result = getattr(np_ufunc, method)(*plain, **kwargs)
    if out is not None:
        return out[0] if len(out) == 1 else out
    return _to_device(result)


class ufunc:
    """cupy.ufunc: __call__, reduce, accumulate, outer, reduceat and at (CuPy 13+)."""

    def __init__(self, np_ufunc):
        self._u = np_ufunc
        self.__name__ = self.name = np_ufunc.__name__
        self.nin, self.nout, self.nargs = np_ufunc.nin, np_ufunc.nout, np_ufunc.nargs

    def __call__(self, *args, **kwargs):
        return _apply_ufunc(self._u, "__call__", args, kwargs)

    def reduce(self, *args, **kwargs):
        return _apply_ufunc(self._u, "reduce", args, kwargs)

    def accumulate(self, *args, **kwargs):
        return _apply_ufunc(self._u, "accumulate", args, kwargs)

    def outer(self, *args, **kwargs):
        return _apply_ufunc(self._u, "outer", args, kwargs)

    def at(self, a, indices, b=None):
        if not isinstance(a, ndarray):
            raise TypeError(f"Unsupported type {type(a)}")
        index = _plain_index(indices, a.shape)
        with np.errstate(all="ignore"):
            if b is None:
                self._u.at(a._a, index)
            else:
                self._u.at(a._a, index, _plain_operand(self.name, b))


def _wrap_function(name, fn):
    def device_fn(*args, **kwargs):
        if name in _FROM_HOST:
            data, rest = args[0], args[1:]
            if isinstance(data, ndarray):
                result = fn(data._a, *rest, **kwargs)
                return data if result is data._a else _to_device(result)
            if isinstance(data, (list, tuple)):
                data = _plain_operand(name, data) if not any(
                    isinstance(d, np.ndarray) for d in data) else data
            return _to_device(np.array(fn(data, *rest, **kwargs), copy=True))  # CuPy copies host data
        args, kwargs = _plain_args(name, args, kwargs)
        with np.errstate(all="ignore"):
            return _to_device(fn(*args, **kwargs))
    device_fn.__name__ = name
    return device_fn


class _Generator:
    """cupy.random.Generator: its own stream (Philox here, XORWOW there), CuPy's methods only."""

    _METHODS = frozenset({"random", "standard_normal", "integers", "uniform", "standard_exponential",
                          "exponential", "gamma", "standard_gamma", "beta", "binomial", "poisson"})

    def __init__(self, seed=None):
        self._rng = np.random.Generator(np.random.Philox(seed))

    def __getattr__(self, name):
        if name not in self._METHODS:
            raise AttributeError(f"'cupy.random.Generator' object has no attribute {name!r}")
        method = getattr(self._rng, name)
        return lambda *args, **kwargs: _to_device(method(*args, **kwargs))


class FakeCupy(types.ModuleType):
    """``import cupy`` after ``install()`` gives this module."""

    def __init__(self):
        super().__init__("cupy")
        self.ndarray = ndarray
        self.ufunc = ufunc
        self.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1))
        self.random = types.SimpleNamespace(default_rng=_Generator, Generator=_Generator)

    @staticmethod
    def asnumpy(a, stream=None, order="C", out=None):
        return a.get(order=order) if isinstance(a, ndarray) else np.asarray(a, order=order)

    @staticmethod
    def get_array_module(*args):
        return sys.modules["cupy"] if any(isinstance(a, ndarray) for a in args) else np

    def __getattr__(self, name):
        if name.startswith("__") or name not in CUPY_NAMES:
            raise AttributeError(f"module 'cupy' has no attribute {name!r}")
        value = getattr(np, name)
        if isinstance(value, np.ufunc):
            value = ufunc(value)
        elif callable(value) and not isinstance(value, type):
            value = _wrap_function(name, value)
        setattr(self, name, value)  # cached: looked up on every op
        return value


ndarray.__module__ = "cupy"  # how backend.is_cupy_array recognises a device array
_CURRENT = [None]


def _module():
    return _CURRENT[0] or FakeCupy()


def _scatter_add(a, slices, value) -> None:
    """cupyx.scatter_add: deprecated in CuPy 13.6 / 14.2 in favour of cupy.add.at."""
    warnings.warn("cupyx.scatter_add is deprecated. Use cupy.add.at instead.", DeprecationWarning,
                  stacklevel=2)
    _module().add.at(a, slices, value)


def install(monkeypatch) -> FakeCupy:
    """Make "cuda" mean the fake device for the rest of a test (undone by ``monkeypatch``)."""
    fake = FakeCupy()
    _CURRENT[0] = fake
    monkeypatch.setitem(sys.modules, "cupy", fake)
    cupyx = types.ModuleType("cupyx")
    cupyx.scatter_add = _scatter_add
    monkeypatch.setitem(sys.modules, "cupyx", cupyx)
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setattr(backend, "_generators", {})
    return fake

DeviceArray = ndarray  # the name earlier tests import
