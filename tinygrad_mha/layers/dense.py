"""Dense: the fully connected layer, ``y = activation(x @ kernel + bias)``, as in Keras.

The kernel has shape (input features, units) and acts on the last axis of inputs of any rank
>= 2, so (B, T, F) inputs give (B, T, units): ``tensordot(x, kernel, 1)``, which flattens the
leading axes into one matrix product and adds the bias in the same graph node.
"""

from __future__ import annotations

from .. import constraints, initializers, regularizers
from ..ops import tensordot
from .base import Layer, weight_settings_config
from ._checks import boolean, positive_int
from .einsum_dense import ACTIVATIONS


class Dense(Layer):
    """y = activation(x @ kernel + bias), kernel (features, units), bias (units,)."""

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None,
                 name=None, dtype="float32"):
        units = positive_int(units, "units", "Dense")
        if activation not in ACTIVATIONS and not callable(activation):
            names = sorted(k for k in ACTIVATIONS if k)
            raise ValueError(f"Dense: activation must be one of {names}, "
                             f"None or a callable, got activation={activation!r}")
        use_bias = boolean(use_bias, "use_bias", "Dense")
        # Resolve every identifier before touching self, so a bad one leaves nothing half-made.
        resolved = dict(kernel_initializer=initializers.get(kernel_initializer),
                        bias_initializer=initializers.get(bias_initializer),
                        kernel_regularizer=regularizers.get(kernel_regularizer),
                        bias_regularizer=regularizers.get(bias_regularizer),
                        kernel_constraint=constraints.get(kernel_constraint),
                        bias_constraint=constraints.get(bias_constraint))
        super().__init__(name=name, dtype=dtype, activity_regularizer=activity_regularizer)
        self.units, self.activation, self.use_bias = units, activation, use_bias
        self._activation_fn = activation if callable(activation) else ACTIVATIONS[activation]
        for key, value in resolved.items():
            setattr(self, key, value)
        self.kernel = self.bias = None

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) < 2:
            raise ValueError(f"Dense: inputs must have rank >= 2 (batch, ..., features), "
                             f"got shape {input_shape}")
        features = input_shape[-1]
        self.kernel = self.add_weight("kernel", (features, self.units), self.kernel_initializer,
                                      self.kernel_regularizer, self.kernel_constraint)
        if self.use_bias:
            self.bias = self.add_weight("bias", (self.units,), self.bias_initializer,
                                        self.bias_regularizer, self.bias_constraint)
        self.built = True

    def call(self, inputs):
        x = self._as_input(inputs, "inputs")
        if not self.built:
            self.build(x.shape)
        if x.ndim < 2 or x.shape[-1] != self.kernel.shape[0]:
            raise ValueError(f"Dense: layer {self.name!r} was built for inputs with "
                             f"{self.kernel.shape[0]} features (last axis), got shape {x.shape}")
        y = tensordot(x, self.kernel, 1, bias=self.bias)
        return y if self._activation_fn is None else self._activation_fn(y)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units,
                "activation": self.activation
                if self.activation is None or isinstance(self.activation, str) else None,
                "use_bias": self.use_bias,
                **weight_settings_config(vars(self), "kernel", "bias")}
