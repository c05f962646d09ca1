"""LayerNormalization (Ba et al., 2016) with Keras's arguments and defaults.

For each example, over the normalised ``axis`` (the features by default):

    y = (x - mean(x)) / sqrt(var(x) + epsilon) * gamma + beta

It is written with Tensor ops only (``mean``, ``var``, ``sqrt``, ``/``), so its gradient is
the engine's chain rule through those ops and no hand-written backward is needed. (Exercise:
derive it by hand; the result is the well-known
``dx = (g - mean(g) - xhat * mean(g * xhat)) / sqrt(var + epsilon)`` for ``g = dy * gamma``.)
"""

from __future__ import annotations

import numbers

from .. import constraints, initializers, regularizers
from .base import Layer, weight_settings_config
from ._checks import boolean, non_negative_float


class LayerNormalization(Layer):
    """Normalise each example over ``axis``, then scale by ``gamma`` and shift by ``beta``."""

    def __init__(self, axis=-1, epsilon=1e-3, center=True, scale=True, beta_initializer="zeros",
                 gamma_initializer="ones", beta_regularizer=None, gamma_regularizer=None,
                 beta_constraint=None, gamma_constraint=None, activity_regularizer=None,
                 name=None, dtype="float32"):
        single = isinstance(axis, numbers.Integral) and not isinstance(axis, bool)
        axes = (axis,) if single else axis
        if (not isinstance(axes, (tuple, list)) or not axes
                or any(isinstance(a, bool) or not isinstance(a, numbers.Integral) for a in axes)):
            raise TypeError(f"LayerNormalization: axis must be an int or a non-empty list/tuple "
                            f"of ints, got axis={axis!r}")
        epsilon = non_negative_float(epsilon, "epsilon", "LayerNormalization")
        center = boolean(center, "center", "LayerNormalization")
        scale = boolean(scale, "scale", "LayerNormalization")
        resolved = dict(beta_initializer=initializers.get(beta_initializer),
                        gamma_initializer=initializers.get(gamma_initializer),
                        beta_regularizer=regularizers.get(beta_regularizer),
                        gamma_regularizer=regularizers.get(gamma_regularizer),
                        beta_constraint=constraints.get(beta_constraint),
                        gamma_constraint=constraints.get(gamma_constraint))
        super().__init__(name=name, dtype=dtype, activity_regularizer=activity_regularizer)
        self.axis = int(axis) if isinstance(axis, numbers.Integral) else [int(a) for a in axis]
        self._axis_list = [int(a) for a in axes]
        self.epsilon, self.center, self.scale = epsilon, center, scale
        for key, value in resolved.items():
            setattr(self, key, value)
        self.gamma = self.beta = None

    def _resolve_axes(self, rank: int) -> tuple[int, ...]:
        axes = []
        for a in self._axis_list:
            if not -rank <= a < rank:
                raise ValueError(f"LayerNormalization: axis {a} is out of range for inputs of rank "
                                 f"{rank}; got axis={self.axis!r}")
            if a % rank in axes:
                raise ValueError(f"LayerNormalization: axis={self.axis!r} names axis {a % rank} "
                                 "twice")
            axes.append(a % rank)
        return tuple(sorted(axes))

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        self._axes = self._resolve_axes(len(input_shape))
        self._rank = len(input_shape)
        shape = tuple(input_shape[a] for a in self._axes)
        # Keras' order: gamma, then beta.
        if self.scale:
            self.gamma = self.add_weight("gamma", shape, self.gamma_initializer,
                                         self.gamma_regularizer, self.gamma_constraint)
        if self.center:
            self.beta = self.add_weight("beta", shape, self.beta_initializer,
                                        self.beta_regularizer, self.beta_constraint)
        # gamma/beta broadcast as they are when the axes are the trailing ones; else reshape them.
        trailing = self._axes == tuple(range(self._rank - len(self._axes), self._rank))
        self._param_shape = None if trailing else tuple(
            input_shape[i] if i in self._axes else 1 for i in range(self._rank))
        self._built_shape = input_shape
        self.built = True

    def call(self, inputs):
        x = self._as_input(inputs, "inputs")
        if not self.built:
            self.build(x.shape)
        elif x.ndim != self._rank or any(x.shape[a] != self._built_shape[a] for a in self._axes):
            raise ValueError(f"LayerNormalization: layer {self.name!r} was built for inputs of "
                             f"shape {self._built_shape} (normalising axes {self._axes}), "
                             f"got shape {x.shape}")
        mean = x.mean(axis=self._axes, keepdims=True)
        var = x.var(axis=self._axes, keepdims=True)
        y = (x - mean) / (var + self.epsilon).sqrt()
        if self.gamma is not None:
            y = y * (self.gamma if self._param_shape is None
                     else self.gamma.reshape(self._param_shape))
        if self.beta is not None:
            y = y + (self.beta if self._param_shape is None
                     else self.beta.reshape(self._param_shape))
        return y

    def compute_output_shape(self, input_shape):
        self._resolve_axes(len(input_shape))
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {**super().get_config(), "axis": self.axis, "epsilon": self.epsilon,
                "center": self.center, "scale": self.scale,
                **weight_settings_config(vars(self), "beta", "gamma")}
