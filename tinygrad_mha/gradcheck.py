"""Finite-difference checks of the analytic gradients (first and second order).

The analytic side is one ``tm.grad`` call on ``sum(fn(*inputs) * u)`` with a random ``u``, so
every output element is weighed differently and a transposed or mis-summed gradient cannot
hide. The numeric side perturbs one input element at a time by +-eps (central differences,
error O(eps^2)), or, with ``fast=True``, moves every input along one random direction.
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np

from .backend import make_generator, to_numpy
from .ops import concatenate
from .tensor import Tensor, enable_grad, grad, no_grad


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with its finite-difference estimate."""


def _scalar(fn, inputs, u) -> Tensor:
    out = fn(*inputs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    return (out * u).sum()


def _check_inputs(fn, inputs, eps, atol, rtol):
    if not callable(fn):
        raise TypeError(f"gradcheck: fn must be callable, got {type(fn).__name__}")
    for name, value, low in (("eps", eps, "positive"), ("atol", atol, "non-negative"),
                             ("rtol", rtol, "non-negative")):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"gradcheck: {name} must be a {low} number, got {name}={value!r}")
        if not math.isfinite(value) or value < 0 or (name == "eps" and value == 0):
            raise ValueError(f"gradcheck: {name} must be a finite {low} number, "
                             f"got {name}={value!r}")
    if isinstance(inputs, Tensor):
        inputs = (inputs,)
    inputs = tuple(inputs)
    for i, t in enumerate(inputs):
        if not isinstance(t, Tensor):
            raise TypeError(f"gradcheck: inputs[{i}] must be a Tensor, got {type(t).__name__}")
    checked = [i for i, t in enumerate(inputs) if t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True, so there is nothing to check")
    low = sorted({str(inputs[i].dtype) for i in checked if inputs[i].dtype != np.float64})
    if low:
        warnings.warn(f"gradcheck: inputs of dtype {', '.join(low)} are not float64; finite "
                      f"differences with eps={eps} will be inaccurate", stacklevel=3)
    return inputs, checked


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True,
              fast=False, seed=0) -> bool:
    """Compare every analytic partial derivative of ``fn`` with a central finite difference.

    Passes when ``|analytic - numeric| <= atol + rtol * |numeric|`` everywhere. On failure
    raises ``GradcheckError`` naming the input, the worst element and both values (or returns
    False when ``raise_exception=False``). ``fast=True`` checks one random directional
    derivative per input instead of every element: O(1) evaluations, for large inputs.
    """
    inputs, checked = _check_inputs(fn, inputs, eps, atol, rtol)
    rng = make_generator(seed)
    with no_grad():
        probe = fn(*inputs)
    if not isinstance(probe, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(probe).__name__}")
    u = Tensor(rng.standard_normal(probe.shape).astype(probe.dtype), device=probe.device)

    loss = _scalar(fn, inputs, u)
    analytic = grad(loss, [inputs[i] for i in checked]) if loss.requires_grad else [
        Tensor._wrap(inputs[i].xp.zeros_like(inputs[i].data)) for i in checked]

    def value() -> float:
        with no_grad():
            return float(to_numpy(_scalar(fn, inputs, u).data).astype(np.float64))

    for i, a in zip(checked, analytic):
        x = inputs[i].data
        a_host = to_numpy(a.data).astype(np.float64)
        original = x.copy()
        try:
            if fast:
                direction = rng.standard_normal(x.shape)
                step = inputs[i].xp.asarray(direction.astype(x.dtype) * eps)
                x += step
                plus = value()
                x[...] = original - step
                minus = value()
                numeric = np.array([(plus - minus) / (2 * eps)])
                a_host = np.array([float(np.sum(a_host * direction))])
            else:
                numeric = np.zeros(x.shape, dtype=np.float64)
                for j in np.ndindex(x.shape):  # indexing, not a flat view: any strides work
                    x[j] = original[j] + eps
                    plus = value()
                    x[j] = original[j] - eps
                    minus = value()
                    x[j] = original[j]
                    numeric[j] = (plus - minus) / (2 * eps)
        finally:  # the inputs are the caller's: give them back unperturbed, even if fn raised
            x[...] = original
        error = np.abs(a_host - numeric)
        allowed = atol + rtol * np.abs(numeric)
        if not np.all(error <= allowed):  # NaN on either side fails here too
            bad = np.where(np.isnan(error), np.inf, error - allowed)
            worst = np.unravel_index(int(np.argmax(bad)), bad.shape)
            where = ("along a random direction" if fast
                     else f"at index {tuple(int(w) for w in worst)}")
            message = (f"gradcheck failed for input {i} (shape {inputs[i].shape}) {where}: "
                       f"analytic {a_host[worst]:.10g} vs numeric {numeric[worst]:.10g}, "
                       f"absolute error {error[worst]:.3g}, relative error "
                       f"{error[worst] / max(abs(numeric[worst]), 1e-300):.3g} "
                       f"(allowed atol={atol} + rtol={rtol} * |numeric|)")
            if raise_exception:
                raise GradcheckError(message)
            return False
    return True


def gradgradcheck(fn, inputs, grad_outputs=None, eps=1e-6, atol=1e-5, rtol=1e-3,
                  raise_exception=True, fast=False, seed=0) -> bool:
    """Check second derivatives: gradcheck of ``(inputs, v) -> d<fn(inputs), v>/d inputs``.

    The gradient is taken with ``create_graph=True``, so this checks that every backward
    formula is itself correctly differentiable, in the inputs and in the upstream gradient.
    """
    inputs, checked = _check_inputs(fn, inputs, eps, atol, rtol)
    with no_grad():
        probe = fn(*inputs)
    if grad_outputs is None:
        rng = make_generator(seed + 1)
        v = Tensor(rng.standard_normal(probe.shape).astype(probe.dtype), requires_grad=True,
                   device=probe.device)
    else:
        v = (grad_outputs if isinstance(grad_outputs, Tensor)
             else Tensor(grad_outputs, device=probe.device))
        v = Tensor(v.data.copy(), requires_grad=True)

    def first_order(*args):
        *xs, upstream = args
        with enable_grad():  # gradcheck evaluates under no_grad, but this fn differentiates
            out = fn(*xs)
            grads = grad(out, [xs[i] for i in checked], grad_outputs=upstream, create_graph=True)
            return concatenate([g.reshape(-1) for g in grads])

    return gradcheck(first_order, (*inputs, v), eps=eps, atol=atol, rtol=rtol,
                     raise_exception=raise_exception, fast=fast, seed=seed)
