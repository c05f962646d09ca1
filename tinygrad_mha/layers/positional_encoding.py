"""PositionalEncoding: the fixed sinusoidal encoding of "Attention Is All You Need".

Attention by itself does not know where a token sits: permute the keys and values together
and the output does not change. So we add to each position ``p`` a fixed vector

    PE[p, 2i]   = sin(p / max_wavelength ** (2i / d))
    PE[p, 2i+1] = cos(p / max_wavelength ** (2i / d))

whose entries rotate at geometrically spaced frequencies. Because ``PE[p + k]`` is a linear
function of ``PE[p]`` for every offset ``k`` (a rotation per frequency), a linear projection
inside attention can learn "look ``k`` places away" or "look at position ``n - 1 - p``".

We chose the *sinusoidal, fixed* encoding (no trainable weights, any length, the formula of
Vaswani et al. and of ``keras_hub.layers.SinePositionEncoding``). One difference from
keras_hub: this layer returns ``inputs + PE`` (ready to stack after an Embedding), while
keras_hub returns ``PE`` alone; ``PositionalEncoding.table(length, dim)`` gives ``PE``.
"""

from __future__ import annotations

import numbers

import numpy as np

from .. import backend
from ..tensor import Tensor
from .base import Layer


def sinusoidal_table(length: int, dim: int, max_wavelength: float = 10000.0, start_index: int = 0):
    """The (length, dim) float64 NumPy table PE[start_index : start_index + length]."""
    position = np.arange(start_index, start_index + length, dtype=np.float64)[:, None]
    i = np.arange(dim)
    # one frequency per (sin, cos) pair
    timescale = (1.0 / max_wavelength) ** ((2 * (i // 2)) / dim)
    angles = position * timescale[None, :]
    return np.where(i % 2 == 0, np.sin(angles), np.cos(angles))


class PositionalEncoding(Layer):
    """Adds the sinusoidal encoding of each position along ``inputs``' second-to-last axis."""

    def __init__(self, max_wavelength=10000, name=None, dtype="float32"):
        if (isinstance(max_wavelength, bool) or not isinstance(max_wavelength, numbers.Real)
                or not np.isfinite(max_wavelength) or max_wavelength <= 1):
            raise ValueError("PositionalEncoding: max_wavelength must be a finite number > 1, "
                             f"got max_wavelength={max_wavelength!r}")
        super().__init__(name=name, dtype=dtype)
        self.max_wavelength = float(max_wavelength)
        self._cache = {}

    @staticmethod
    def table(length: int, dim: int, max_wavelength: float = 10000.0, start_index: int = 0):
        """``PE`` itself, a (length, dim) NumPy array."""
        return sinusoidal_table(length, dim, max_wavelength, start_index)

    def call(self, inputs, start_index=0):
        x = self._as_input(inputs, "inputs")
        if x.ndim < 2:
            raise ValueError(f"PositionalEncoding: inputs must have rank >= 2 (..., positions, "
                             f"features), got shape {x.shape}")
        if (isinstance(start_index, bool) or not isinstance(start_index, numbers.Integral)
                or start_index < 0):
            raise ValueError(f"PositionalEncoding: start_index must be a non-negative int, "
                             f"got start_index={start_index!r}")
        self.built = True
        key = (x.shape[-2], x.shape[-1], int(start_index), x.device)
        if key not in self._cache:  # a constant: computed once per shape, never differentiated
            table = sinusoidal_table(x.shape[-2], x.shape[-1], self.max_wavelength,
                                     int(start_index))
            self._cache = {key: Tensor._wrap(backend.to_device(table.astype(self.dtype), x.device))}
        return x + self._cache[key]

    def _on_device_change(self) -> None:
        self._cache = {}

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        config = {**super().get_config(), "max_wavelength": self.max_wavelength}
        del config["activity_regularizer"]  # a fixed encoding has no activity to penalise
        return config
