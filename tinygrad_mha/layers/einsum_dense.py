"""EinsumDense: a dense projection described by an einsum equation, as in Keras.

``EinsumDense("abc,cde->abde", output_shape=(None, 4, 8), bias_axes="de")`` maps (B, T, C)
inputs to (B, T, 4, 8) with a (C, 4, 8) kernel. The kernel's shape is read off the equation:
each kernel letter takes its size from the input (a contracted axis) or from ``output_shape``
(a new axis). Those two groups are also the kernel's fan-in and fan-out, which is what
variance-scaling initializers need (Keras 3.15 does the same).
"""

from __future__ import annotations

import math
import re

from .. import constraints, initializers, regularizers
from ..ops import einsum, relu, sigmoid, tanh, tensordot
from .base import Layer, weight_settings_config

ACTIVATIONS = {None: None, "linear": None, "sigmoid": sigmoid, "relu": relu, "tanh": tanh}


def analyze_equation(equation: str, bias_axes, input_shape, output_shape):
    """Kernel shape, bias shape, full output shape and the kernel's fan axes for ``equation``.

    Supported forms (Keras'): ``ab,bc->ac``, ``...b,bc->...c`` and ``ab...,bc->ac...``.
    """
    plain = re.fullmatch(r"([a-zA-Z]+),([a-zA-Z]+)->([a-zA-Z]+)", equation)
    left = re.fullmatch(r"\.\.\.([a-zA-Z]+),([a-zA-Z]+)->\.\.\.([a-zA-Z]+)", equation)
    right = re.fullmatch(r"([a-zA-Z]{2,})\.\.\.,([a-zA-Z]+)->([a-zA-Z]+)\.\.\.", equation)
    match = plain or left or right
    if match is None:
        raise ValueError(f"EinsumDense: equation {equation!r} must look like 'ab,bc->ac', "
                         "'...b,bc->...c' or 'ab...,bc->ac...'")
    x_spec, k_spec, out_spec = match.groups()
    input_shape = tuple(input_shape)
    elided = len(input_shape) - len(x_spec)
    if elided < 0 or (plain and elided):
        raise ValueError(f"EinsumDense: equation {equation!r} expects inputs of rank "
                         f"{len(x_spec)}{'+' if not plain else ''}, got shape {input_shape}")
    x_axes = {c: (elided + i if left else i) for i, c in enumerate(x_spec)}
    given = [output_shape] if isinstance(output_shape, int) else list(output_shape)
    # output_shape names every output axis but the first (batch) one, like Keras; with a
    # leading '...' the batch axis is among the elided ones, so it names every letter.
    spec_sizes = given if left else [input_shape[0]] + given
    if len(spec_sizes) != len(out_spec):
        raise ValueError(f"EinsumDense: output_shape {tuple(given)} must give "
                         f"{len(out_spec) - (0 if left else 1)} sizes for output {out_spec!r} "
                         f"({'every axis' if left else 'every axis after the first'})")
    out_sizes = {}
    for c, n in zip(out_spec, spec_sizes):
        if c in x_axes:
            have = input_shape[x_axes[c]]
            if n is not None and n != have:
                raise ValueError(f"EinsumDense: output axis {c!r} must equal the input's size "
                                 f"{have}, but output_shape says {n}")
            n = have
        elif c not in k_spec:
            raise ValueError(f"EinsumDense: output axis {c!r} is in neither the input nor the "
                             "kernel")
        if n is None:
            raise ValueError(f"EinsumDense: output_shape must give the size of new axis {c!r}")
        out_sizes[c] = int(n)
    kernel_shape, fan_in_axes, fan_out_axes = [], [], []
    for i, c in enumerate(k_spec):
        if c in out_sizes:
            kernel_shape.append(out_sizes[c])
            fan_out_axes.append(i)
        elif c in x_axes:
            kernel_shape.append(input_shape[x_axes[c]])
            fan_in_axes.append(i)
        else:
            raise ValueError(f"EinsumDense: kernel axis {c!r} appears in neither input nor output")
    full = [out_sizes[c] for c in out_spec]
    if left:
        full = list(input_shape[:elided]) + full
    elif right:
        full = full + list(input_shape[len(input_shape) - elided:])
    bias_shape = None
    if bias_axes:
        for c in bias_axes:
            if c not in out_spec:
                raise ValueError(f"EinsumDense: bias axis {c!r} is not in the output {out_spec!r}")
        first = min(out_spec.index(c) for c in bias_axes)
        bias_shape = [out_sizes[c] if c in bias_axes else 1 for c in out_spec[first:]]
        if right:
            bias_shape += [1] * elided
    contracted = {x_axes[c] - len(input_shape): input_shape[x_axes[c]]
                  for c in k_spec if c in x_axes and c not in out_sizes}
    return (tuple(kernel_shape), None if bias_shape is None else tuple(bias_shape), tuple(full),
            tuple(fan_in_axes), tuple(fan_out_axes), contracted)


def tensordot_axes(equation: str):
    """n when ``equation`` is ``tensordot(x, kernel, n)``, else None.

    That is: the input's last n letters are the kernel's first n and appear nowhere else,
    and the output is the input's other letters, then the kernel's (as "abc,cde->abde", or
    "...b,bc->...c"). Every projection of MultiHeadAttention has this form; it runs as one
    matrix product (``ops.tensordot``) instead of a general einsum.
    """
    match = re.fullmatch(r"(\.\.\.)?([a-zA-Z]+),([a-zA-Z]+)->(\.\.\.)?([a-zA-Z]+)", equation)
    if match is None or bool(match.group(1)) != bool(match.group(4)):
        return None
    x, k, out = match.group(2, 3, 5)
    if any(len(set(t)) != len(t) for t in (x, k, out)):
        return None
    n = len(set(x) & set(k))
    if n == 0 or x[len(x) - n:] != k[:n] or out != x[:len(x) - n] + k[n:]:
        return None
    return n


class EinsumDense(Layer):
    """y = activation(einsum(equation, x, kernel) + bias)"""

    def __init__(self, equation, output_shape, activation=None, bias_axes=None,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, name=None, dtype="float32"):
        super().__init__(name=name, dtype=dtype, activity_regularizer=activity_regularizer)
        if not isinstance(equation, str):
            raise TypeError(f"EinsumDense: equation must be a str, got {equation!r}")
        if activation not in ACTIVATIONS and not callable(activation):
            names = sorted(k for k in ACTIVATIONS if k)
            raise ValueError(f"EinsumDense: activation must be one of {names}, "
                             f"None or a callable, got {activation!r}")
        self.equation = equation
        self._tensordot_axes = tensordot_axes(equation)
        self.partial_output_shape = ((output_shape,) if isinstance(output_shape, int)
                                     else tuple(output_shape))
        self.activation = activation
        self._activation_fn = activation if callable(activation) else ACTIVATIONS[activation]
        self.bias_axes = bias_axes
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self.kernel = self.bias = None

    def build(self, input_shape):
        kernel_shape, bias_shape, _, fan_in_axes, fan_out_axes, contracted = analyze_equation(
            self.equation, self.bias_axes, input_shape, self.partial_output_shape)
        self.kernel = self.add_weight("kernel", kernel_shape, self.kernel_initializer,
                                      self.kernel_regularizer, self.kernel_constraint,
                                      fan_in=math.prod(kernel_shape[i] for i in fan_in_axes),
                                      fan_out=math.prod(kernel_shape[i] for i in fan_out_axes))
        if bias_shape is not None:
            self.bias = self.add_weight("bias", bias_shape, self.bias_initializer,
                                        self.bias_regularizer, self.bias_constraint)
        self.input_rank, self._contracted = len(input_shape), contracted
        # with a leading '...' any number of leading axes fits (einsum broadcasts them), as in Keras
        self._min_rank = (len(self.equation.split(",")[0]) - 3 if self.equation.startswith("...")
                          else None)
        self.built = True

    def compute_output_shape(self, input_shape):
        return analyze_equation(self.equation, self.bias_axes, input_shape,
                                self.partial_output_shape)[2]

    def call(self, x):
        x = self._as_input(x, "inputs")
        if not self.built:
            self.build(x.shape)
        else:
            self.check_input_shape(x.shape, "inputs")
        if self._tensordot_axes is not None:  # the same product, as tensordot (see its kernel)
            y = tensordot(x, self.kernel, axes=self._tensordot_axes, bias=self.bias)
        else:
            y = einsum(self.equation, x, self.kernel, bias=self.bias)
        return y if self._activation_fn is None else self._activation_fn(y)

    def check_input_shape(self, shape, name: str) -> None:
        """After build, the rank (but for a leading '...') and every contracted axis are fixed."""
        shape = tuple(shape)
        rank_ok = (len(shape) == self.input_rank if self._min_rank is None
                   else len(shape) >= self._min_rank)
        bad = not rank_ok or any(shape[a] != n for a, n in self._contracted.items())
        if bad:
            expected = ["*"] * self.input_rank
            for a, n in self._contracted.items():
                expected[a] = n
            raise ValueError(f"{name} of shape {tuple(shape)} does not fit layer {self.name!r}, "
                             f"built for shape ({', '.join(map(str, expected))}) (* = any size)")

    def get_config(self) -> dict:
        return {**super().get_config(), "equation": self.equation,
                "output_shape": list(self.partial_output_shape), "activation": self.activation
                if isinstance(self.activation, str) or self.activation is None else None,
                "bias_axes": self.bias_axes,
                **weight_settings_config(vars(self), "kernel", "bias")}
