"""Embedding: integer token ids -> rows of a trainable (input_dim, output_dim) table, as in Keras.

The forward pass is plain integer-array indexing, ``embeddings[ids]``. Its gradient is the
adjoint of indexing: start from zeros of the table's shape and *add* each upstream row at the
id it came from. A token that occurs twice in the batch gets both rows added (NumPy's
``add.at``; ``table[ids] += rows`` would keep only one of them).
"""

from __future__ import annotations

import numpy as np

from .. import backend, constraints, initializers, regularizers
from ..tensor import Tensor
from .base import Layer, weight_settings_config
from ._checks import boolean, positive_int


class Embedding(Layer):
    """Turns ids of shape (B, ...) into vectors of shape (B, ..., output_dim)."""

    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform",
                 embeddings_regularizer=None, embeddings_constraint=None, mask_zero=False,
                 activity_regularizer=None, name=None, dtype="float32"):
        input_dim = positive_int(input_dim, "input_dim", "Embedding")
        output_dim = positive_int(output_dim, "output_dim", "Embedding")
        mask_zero = boolean(mask_zero, "mask_zero", "Embedding")
        resolved = dict(embeddings_initializer=initializers.get(embeddings_initializer),
                        embeddings_regularizer=regularizers.get(embeddings_regularizer),
                        embeddings_constraint=constraints.get(embeddings_constraint))
        super().__init__(name=name, dtype=dtype, activity_regularizer=activity_regularizer)
        self.input_dim, self.output_dim, self.mask_zero = input_dim, output_dim, mask_zero
        for key, value in resolved.items():
            setattr(self, key, value)
        self.embeddings = None

    def build(self, input_shape=None):
        # The table's shape does not depend on the input, so build needs no shape.
        self.embeddings = self.add_weight("embeddings", (self.input_dim, self.output_dim),
                                          self.embeddings_initializer, self.embeddings_regularizer,
                                          self.embeddings_constraint)
        self.built = True

    def _ids(self, inputs):
        """The ids as an integer backend array on the layer's device, range-checked."""
        data = inputs.data if isinstance(inputs, Tensor) else inputs
        if isinstance(data, (str, bytes)) or data is None:
            raise TypeError(f"Embedding: inputs must be an integer array or Tensor, "
                            f"got {type(inputs).__name__}")
        ids = data if backend.is_cupy_array(data) else np.asarray(data)
        if ids.dtype.kind == "f":
            whole = ids == ids.astype(np.int64)
            if not bool(whole.all()):
                raise TypeError("Embedding: inputs must be integer ids; got floats that are not "
                                "whole numbers")
            ids = ids.astype(np.int64)
        elif ids.dtype.kind not in "iu":
            raise TypeError(f"Embedding: inputs must be integer ids, got dtype {ids.dtype}")
        if ids.size:
            low, high = int(ids.min()), int(ids.max())
            if low < 0 or high >= self.input_dim:
                raise ValueError(f"Embedding: ids must lie in [0, input_dim={self.input_dim}), got "
                                 f"values from {low} to {high}")
        return backend.to_device(ids, self.device)

    def call(self, inputs):
        ids = self._ids(inputs)
        if not self.built:
            self.build()
        return self.embeddings[ids]

    def compute_mask(self, inputs):
        """True where the id is not 0 (only with ``mask_zero=True``; otherwise None)."""
        return None if not self.mask_zero else self._ids(inputs) != 0

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    def get_config(self) -> dict:
        return {**super().get_config(), "input_dim": self.input_dim, "output_dim": self.output_dim,
                **weight_settings_config(vars(self), "embeddings"),
                "mask_zero": self.mask_zero}
