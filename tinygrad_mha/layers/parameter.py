"""Parameter: a trainable Tensor that carries its own regularizer and constraint."""

from __future__ import annotations

from ..tensor import Tensor


class Parameter(Tensor):
    """A leaf Tensor owned by a layer.

    ``regularizer(param) -> scalar Tensor`` adds to the layer's ``losses``; ``constraint(array)
    -> array`` is applied by the optimizer after every update (never in the forward pass).
    """

    __slots__ = ("regularizer", "constraint", "trainable")

    def __init__(self, data, name=None, regularizer=None, constraint=None, trainable=True,
                 dtype=None, device=None):
        super().__init__(data, requires_grad=trainable, dtype=dtype, device=device)
        self.name = name
        self.regularizer = regularizer
        self.constraint = constraint
        self.trainable = trainable

    def assign(self, array) -> None:
        """Replace the values in place (same shape and dtype), keeping the Parameter's identity."""
        array = self.xp.asarray(array)
        if array.shape != self.shape:
            raise ValueError(f"cannot assign shape {array.shape} to parameter {self.name!r} "
                             f"of shape {self.shape}")
        self.data[...] = array.astype(self.dtype, copy=False)

    def __repr__(self):
        return (f"Parameter(name={self.name!r}, shape={self.shape}, dtype={self.dtype}, "
                f"device={self.device!r})")
