"""Layer: the Keras-style base class. Builds lazily, owns Parameters, reports losses.

A layer creates its weights on the first call, when the input shapes are known (``build``).
Parameters and sub-layers assigned as attributes are tracked in assignment order, which is
the order of ``weights``; that order is what ``get_weights``/``set_weights`` and the saved
files rely on, and it matches Keras for the layers here.
"""

from __future__ import annotations

import os
import re
import tempfile
import zipfile

import numpy as np

from .. import backend, constraints, initializers, regularizers
from ..tensor import FLOAT_DTYPES, Tensor
from .parameter import Parameter

_name_counts: dict[str, int] = {}


def _default_name(cls) -> str:
    """A unique snake_case name from the class name: multi_head_attention,
    multi_head_attention_1."""
    base = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()
    count = _name_counts.get(base, 0)
    _name_counts[base] = count + 1
    return base if count == 0 else f"{base}_{count}"


def _check_dtype(dtype, name="dtype") -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{name} must be float16, float32 or float64, got {dtype!r}") from exc
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, float32 or float64, got {dtype!r}")
    return dt


def _check_path(path, what: str) -> str:
    try:
        return os.fsdecode(os.fspath(path))
    except TypeError:
        raise TypeError(f"{what}: path must be a str or os.PathLike, got "
                        f"{type(path).__name__}") from None


class _RefusedFile(ValueError):
    """A readable weights file whose contents do not fit the layer (names, shapes, dtypes)."""


def _structural_key(key: str) -> str:
    """'03|layer_normalization_1/gamma' -> '03|gamma'."""
    index, _, name = key.partition("|")
    return f"{index}|{name.rsplit('/', 1)[-1]}"


def _read_weights_file(path: str, expected: dict) -> dict:
    """The arrays of an .npz file written by ``save_weights``, checked against ``expected``
    (key -> Parameter): every name, and each array's dtype and shape before its data is read."""
    read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}
    with open(path, "rb") as f, zipfile.ZipFile(f) as archive:
        names = [n[:-4] if n.endswith(".npy") else n for n in archive.namelist()]
        # Matched by position and the weight's own name ("03|gamma"), not the layer's: a second
        # instance of a model has other automatic layer names (dense_1/kernel) but reads the file.
        members = {_structural_key(k): n for k, n in zip(names, archive.namelist())}
        if sorted(members) != sorted(map(_structural_key, expected)):
            raise _RefusedFile(f"load_weights: {path} holds weights {sorted(names)}, "
                               f"expected {list(expected)}")
        arrays = {}
        for key, weight in expected.items():
            with archive.open(members[_structural_key(key)]) as member:
                version = np.lib.format.read_magic(member)
                if version not in read_header:
                    raise ValueError(f"array {key!r} uses .npy format version {version}")
                shape, _, dtype = read_header[version](member)
                if dtype.kind not in "fiu":
                    raise _RefusedFile(f"load_weights: {path}: array {key!r} has dtype {dtype}, "
                                       f"but weight {weight.name!r} needs numbers")
                if tuple(shape) != weight.shape:
                    raise _RefusedFile(f"load_weights: {path}: array {key!r} has shape "
                                       f"{tuple(shape)}, but weight {weight.name!r} has shape "
                                       f"{weight.shape}")
            with archive.open(members[_structural_key(key)]) as member:
                arrays[key] = np.lib.format.read_array(member, allow_pickle=False)
    return arrays


def weight_settings_config(settings, *weights: str) -> dict:
    """The serialized initializer, regularizer and constraint of each named weight.

    ``settings`` maps "<weight>_initializer", "<weight>_regularizer" and "<weight>_constraint"
    to objects: a layer's ``vars()``, or a dict of them.
    """
    config = {}
    for w in weights:
        config[f"{w}_initializer"] = initializers.serialize(settings[f"{w}_initializer"])
        config[f"{w}_regularizer"] = regularizers.serialize(settings[f"{w}_regularizer"])
        config[f"{w}_constraint"] = constraints.serialize(settings[f"{w}_constraint"])
    return config


class Layer:
    """Base class: subclasses implement ``build(*input_shapes)`` and ``call(*inputs, ...)``."""

    def __init__(self, name=None, dtype="float32", activity_regularizer=None):
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {name!r}")
        object.__setattr__(self, "_params", [])
        object.__setattr__(self, "_sublayers", [])
        self.name = name or _default_name(type(self))
        self.dtype = _check_dtype(dtype)
        self.device = "cpu"
        self.built = False
        self.activity_regularizer = regularizers.get(activity_regularizer)
        self._activity_losses: list[Tensor] = []

    # ------------------------------------------------------------ tracking
    def __setattr__(self, key, value):
        # Parameters and sub-layers are tracked in the order they are assigned.
        # (identity checks: ``in`` would call Tensor.__eq__, which compares elementwise)
        old = self.__dict__.get(key)
        if isinstance(old, (Parameter, Layer)) and old is not value and not any(
                v is old for k, v in self.__dict__.items() if k != key):
            # Replaced (e.g. by a second build): stop tracking it, or ``weights`` would list both.
            tracked = self._params if isinstance(old, Parameter) else self._sublayers
            tracked[:] = [t for t in tracked if t is not old]
        if isinstance(value, Parameter) and not any(p is value for p in self._params):
            self._params.append(value)
        elif isinstance(value, Layer) and not any(s is value for s in self._sublayers):
            self._sublayers.append(value)
        object.__setattr__(self, key, value)

    def add_weight(self, name, shape, initializer, regularizer=None, constraint=None,
                   fan_in=None, fan_out=None) -> Parameter:
        """Create a Parameter on this layer's device, initialised by ``initializer``."""
        init = initializers.get(initializer)
        if isinstance(init, initializers.Initializer):
            values = init(tuple(shape), dtype=self.dtype, device=self.device, fan_in=fan_in,
                          fan_out=fan_out)
        else:  # a plain function, Keras style: fn(shape, dtype) -> array
            values = init(tuple(shape), dtype=self.dtype)
        if tuple(np.shape(values)) != tuple(shape):
            raise ValueError(f"{self.name}: the initializer {init!r} returned values of shape "
                             f"{tuple(np.shape(values))} for weight {name!r} of shape "
                             f"{tuple(shape)}")
        return Parameter(values, name=f"{self.name}/{name}", regularizer=regularizer,
                         constraint=constraint, dtype=self.dtype, device=self.device)

    @property
    def weights(self) -> list[Parameter]:
        """Own parameters, then each sub-layer's, in the order they were created."""
        out = list(self._params)
        for layer in self._sublayers:
            out.extend(layer.weights)
        return out

    @property
    def trainable_weights(self) -> list[Parameter]:
        return [w for w in self.weights if w.trainable]

    def _layers(self) -> list:
        """This layer and every sub-layer, depth first."""
        out = [self]
        for layer in self._sublayers:
            out += layer._layers()
        return out

    # ------------------------------------------------------------ calling
    def build(self, *input_shapes):
        self.built = True

    def call(self, *args, **kwargs):
        raise NotImplementedError

    def __call__(self, *args, **kwargs):
        # Activity losses describe the last call only, so the whole tree's are cleared first.
        # An empty list needs no clearing (usually all are: this runs on every call).
        if not self._sublayers and not self._activity_losses:  # nothing to clear or restore
            out = self.call(*args, **kwargs)
            if self.activity_regularizer is not None:
                self._add_activity_loss(out)
            return out
        tree = self._layers()
        previous = [(layer, layer._activity_losses) for layer in tree if layer._activity_losses]
        for layer, _ in previous:  # (a plain list: no need for the tracking __setattr__)
            layer.__dict__["_activity_losses"] = []
        try:
            out = self.call(*args, **kwargs)
        except BaseException:  # a failed call leaves the last call's losses in place
            for layer in tree:
                layer.__dict__["_activity_losses"] = []
            for layer, losses in previous:
                layer.__dict__["_activity_losses"] = losses
            raise
        if self.activity_regularizer is not None:
            self._add_activity_loss(out)
        return out

    def _add_activity_loss(self, out) -> None:
        first = out[0] if isinstance(out, tuple) else out
        # Keras divides by the batch size so the penalty does not grow with the batch.
        self._activity_losses.append(self.activity_regularizer(first) / first.shape[0])

    def _as_input(self, x, name: str) -> Tensor:
        """An input as a Tensor on this layer's device, cast to the layer's dtype."""
        if not isinstance(x, Tensor):
            if x is None or isinstance(x, (str, bytes)):
                raise TypeError(f"{name} must be a Tensor or an array, got {type(x).__name__}")
            try:
                x = Tensor(x, device=self.device)
            except (TypeError, ValueError) as exc:  # say which argument it was
                raise type(exc)(f"{name} must be a float Tensor or array: {exc}") from exc
        elif not (type(x.data) is np.ndarray and self.device == "cpu") and x.device != self.device:
            # (the first test is the common case, and much cheaper than asking for x.device)
            raise ValueError(f"{name} is on {x.device!r} but layer {self.name!r} is on "
                             f"{self.device!r}; move one of them with .to()")
        dtype = x.dtype
        if dtype.kind != "f":
            raise TypeError(f"{name} must hold floating point values, got dtype {dtype}")
        return x if dtype == self.dtype else x.astype(self.dtype)

    # ------------------------------------------------------------ losses
    @property
    def losses(self) -> list[Tensor]:
        """Activity losses of the last call, then weight regularization losses (Keras order)."""
        out = [loss for layer in self._layers() for loss in layer._activity_losses]
        out.extend(w.regularizer(w) for w in self.weights if w.regularizer is not None)
        return out

    # ------------------------------------------------------------ weights in and out
    def get_weights(self) -> list[np.ndarray]:
        return [w.numpy().copy() for w in self.weights]

    def set_weights(self, arrays) -> None:
        """Replace every weight's values; checks all shapes first, so a bad list changes nothing."""
        weights = self.weights
        if (isinstance(arrays, (Tensor, np.ndarray, str, bytes)) or backend.is_cupy_array(arrays)
                or not hasattr(arrays, "__iter__")):
            raise TypeError(f"set_weights: arrays must be a list of {len(weights)} arrays, "
                            f"got {type(arrays).__name__}")
        arrays = list(arrays)
        if len(arrays) != len(weights):
            raise ValueError(f"set_weights: layer {self.name!r} has {len(weights)} weights "
                             f"but {len(arrays)} arrays were given")
        checked = []
        for w, a in zip(weights, arrays):
            try:
                a = backend.to_numpy(a.data if isinstance(a, Tensor) else a)
            except ValueError as exc:  # e.g. a ragged nested list
                raise ValueError(f"set_weights: the array for weight {w.name!r} is not a "
                                 f"rectangular array: {exc}") from exc
            if a.dtype.kind not in "fiu":
                raise TypeError(f"set_weights: weight {w.name!r} needs numbers, got dtype "
                                f"{a.dtype}")
            if a.shape != w.shape:
                raise ValueError(f"set_weights: weight {w.name!r} has shape {w.shape}, "
                                 f"got an array of shape {a.shape}")
            checked.append(a)
        for w, a in zip(weights, checked):
            w.assign(backend.to_device(a, w.device))

    def _weight_keys(self) -> list[str]:
        return [f"{i:02d}|{w.name}" for i, w in enumerate(self.weights)]

    def save_weights(self, path) -> None:
        """Write the weights to an .npz file (atomically: a temporary file, then a rename)."""
        if not self.built:
            raise ValueError(f"save_weights: layer {self.name!r} has no weights until it is built")
        path = _check_path(path, "save_weights")
        if not path.endswith(".npz"):
            raise ValueError(f"save_weights: path must end in .npz, got {path!r}")
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(suffix=".npz", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **dict(zip(self._weight_keys(), self.get_weights())))
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal permissions
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    def load_weights(self, path) -> None:
        """Read weights saved by ``save_weights``; names, shapes and dtypes are checked before any
        change.

        The file may come from anyone: nothing is unpickled, and each array's header is checked
        against the weight it is meant for before its data is read, so a forged header cannot
        make us allocate more than the layer's own weights.
        """
        if not self.built:
            raise ValueError(f"load_weights: build layer {self.name!r} first (call it once or call "
                             "build())")
        path = _check_path(path, "load_weights")
        expected = dict(zip(self._weight_keys(), self.weights))
        try:
            arrays = _read_weights_file(path, expected)
        except _RefusedFile as exc:
            raise ValueError(str(exc)) from None
        # anything that goes wrong decoding the file: zip, zlib, npy header ...
        except Exception as exc:
            raise ValueError(f"load_weights: {path} is not a valid .npz weights file: "
                             f"{type(exc).__name__}: {exc}") from exc
        self.set_weights([arrays[k] for k in expected])

    # ------------------------------------------------------------ devices and config
    def to(self, device) -> "Layer":
        """Move every weight (in place, keeping Parameter identity) and future inputs to
        ``device``."""
        device = backend.check_device(device)
        backend.xp_for(device)  # fails clearly before anything moves
        for layer in self._layers():
            for w in layer._params:
                w.data = backend.to_device(w.data, device)
                if w._grad is not None:
                    w._grad = Tensor._wrap(backend.to_device(w._grad.data, device))
            layer.device = device
            layer._on_device_change()
        return self

    def _on_device_change(self) -> None:
        """Hook for layers that hold device state besides weights (a dropout generator)."""

    def get_config(self) -> dict:
        return {"name": self.name, "dtype": str(self.dtype),
                "activity_regularizer": regularizers.serialize(self.activity_regularizer)}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name!r} built={self.built}>"
