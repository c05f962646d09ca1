"""First-order optimizers with Keras 3 update formulas and a PyTorch-style loop:

    opt = tm.optimizers.Adam(layer.weights, learning_rate=1e-3)
    opt.zero_grad(); loss.backward(); opt.step()

``step`` updates, in place on ``param.data`` and in the parameter's own dtype and device, every
parameter that has a gradient; it then applies the parameter's ``constraint``, as Keras does
after each update. As in Keras, decoupled weight decay (``param -= lr * weight_decay * param``)
happens before the update, and the step count used by Adam's bias correction is one counter
for the whole optimizer (``iterations``).
"""

from __future__ import annotations

import math
import numbers

from . import backend
from .tensor import Tensor


def _check_number(value, name: str, low=None, high=None, low_open=False, high_open=False) -> float:
    """``value`` as a float, or an error naming ``name`` and the allowed interval."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {name}={value!r}")
    value = float(value)
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if not math.isfinite(value) or too_low or too_high:
        left = "(-inf" if low is None else ("(" if low_open else "[") + f"{low}"
        right = "inf)" if high is None else f"{high}" + (")" if high_open else "]")
        interval = f"{left}, {right}"
        raise ValueError(f"{name} must be a finite number in {interval}, got {name}={value!r}")
    return value


def _check_params(params) -> list:
    if isinstance(params, Tensor):
        raise TypeError("params must be a list of Tensors, got a single Tensor; wrap it in a list")
    try:
        params = list(params)
    except TypeError:
        raise TypeError(f"params must be a list of Tensors, got {type(params).__name__}") from None
    if not params:
        raise ValueError("params must be a non-empty list of Tensors, got an empty one")
    seen = set()
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"params[{i}] must be a Tensor, got {type(p).__name__}")
        if not p.requires_grad:
            raise ValueError(f"params[{i}] ({p.name or 'unnamed'}, shape {p.shape}) does not "
                             "require grad, so it would never be updated")
        if not p.is_leaf:
            raise ValueError(f"params[{i}] (shape {p.shape}) is not a leaf tensor; optimizers "
                             "update leaves (parameters) only")
        if id(p) in seen:
            raise ValueError(f"params[{i}] (shape {p.shape}) appears more than once")
        seen.add(id(p))
    return params


class Optimizer:
    """Base class: holds the parameters, per-parameter state and the step counter.

    Subclasses implement ``_update(param, grad, state)``, changing ``param.data`` in place.
    """

    def __init__(self, params, learning_rate, weight_decay=None):
        self.params = _check_params(params)
        self.learning_rate = _check_number(learning_rate, "learning_rate", low=0, low_open=True)
        if weight_decay is not None:
            weight_decay = _check_number(weight_decay, "weight_decay", low=0)
        self.weight_decay = weight_decay
        self.iterations = 0  # completed steps; Adam's bias correction uses iterations + 1
        self._states = [dict() for _ in self.params]

    def zero_grad(self) -> None:
        """Forget every parameter's gradient (set it to None) before the next backward."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Decay, update and constrain every parameter that has a gradient; then count the step.

        A step where no parameter has a gradient does nothing (PyTorch's convention; Keras would
        raise "No gradients provided for any variable").
        """
        active = [(p, s) for p, s in zip(self.params, self._states) if p.grad is not None]
        if not active:
            return
        for p, state in active:
            grad = p.grad
            if grad.dtype != p.dtype:
                grad = grad.astype(p.dtype)
            if self.weight_decay:
                p.data -= p.data * (self.learning_rate * self.weight_decay)
            self._update(p, grad, self._on_device(p, state))
            constraint = getattr(p, "constraint", None)
            if constraint is not None:
                p.data[...] = constraint(p.data)
        self.iterations += 1

    @staticmethod
    def _on_device(p: Tensor, state: dict) -> dict:
        """The parameter's state arrays, moved along if the parameter changed device."""
        for key, value in state.items():
            if backend.device_of(value) != p.device:
                state[key] = backend.to_device(value, p.device)
        return state

    def _update(self, p: Tensor, grad, state: dict) -> None:
        raise NotImplementedError

    def get_config(self) -> dict:
        return {"learning_rate": self.learning_rate, "weight_decay": self.weight_decay}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({len(self.params)} params, {args})"


class SGD(Optimizer):
    """Gradient descent, optionally with (Nesterov) momentum, in Keras's form:

        m = momentum * m - lr * g
        param += m                          (plain momentum)
        param += momentum * m - lr * g      (nesterov=True)
        param -= lr * g                     (momentum=0)
    """

    def __init__(self, params, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=None):
        super().__init__(params, learning_rate, weight_decay)
        self.momentum = _check_number(momentum, "momentum", low=0, high=1)
        if not isinstance(nesterov, bool):
            raise TypeError(f"nesterov must be a bool, got nesterov={nesterov!r}")
        self.nesterov = nesterov

    def _update(self, p, grad, state):
        lr = self.learning_rate
        if self.momentum == 0:
            p.data -= lr * grad
            return
        if "momentum" not in state:
            state["momentum"] = p.xp.zeros_like(p.data)
        m = state["momentum"]
        m *= self.momentum
        m -= lr * grad
        if self.nesterov:
            p.data += self.momentum * m - lr * grad
        else:
            p.data += m

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2014) in Keras's form, with t = iterations + 1:

        m += (g - m) * (1 - beta_1);   v += (g**2 - v) * (1 - beta_2)
        v_hat = max(v_hat, v) if amsgrad else v
        param -= lr * sqrt(1 - beta_2**t) / (1 - beta_1**t) * m / (sqrt(v_hat) + epsilon)

    (epsilon is added to sqrt(v) before the bias correction, so it is not PyTorch's epsilon.)
    """

    def __init__(self, params, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, weight_decay=None):
        super().__init__(params, learning_rate, weight_decay)
        self.beta_1 = _check_number(beta_1, "beta_1", low=0, high=1, high_open=True)
        self.beta_2 = _check_number(beta_2, "beta_2", low=0, high=1, high_open=True)
        self.epsilon = _check_number(epsilon, "epsilon", low=0)
        if not isinstance(amsgrad, bool):
            raise TypeError(f"amsgrad must be a bool, got amsgrad={amsgrad!r}")
        self.amsgrad = amsgrad

    def _update(self, p, grad, state):
        xp = p.xp
        if "m" not in state:
            state["m"] = xp.zeros_like(p.data)
            state["v"] = xp.zeros_like(p.data)
            if self.amsgrad:
                state["v_hat"] = xp.zeros_like(p.data)
        m, v = state["m"], state["v"]
        t = self.iterations + 1
        alpha = self.learning_rate * math.sqrt(1 - self.beta_2 ** t) / (1 - self.beta_1 ** t)
        m += (grad - m) * (1 - self.beta_1)
        v += (grad * grad - v) * (1 - self.beta_2)
        if self.amsgrad:
            xp.maximum(state["v_hat"], v, out=state["v_hat"])
            v = state["v_hat"]
        p.data -= (m * alpha) / (xp.sqrt(v) + self.epsilon)

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon, "amsgrad": self.amsgrad}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019), Keras's default 0.004:
    ``param -= lr * weight_decay * param`` before each Adam update."""

    def __init__(self, params, learning_rate=1e-3, weight_decay=0.004, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-7, amsgrad=False):
        if weight_decay is None:
            raise ValueError("AdamW needs a number for weight_decay, got weight_decay=None")
        super().__init__(params, learning_rate, beta_1, beta_2, epsilon, amsgrad, weight_decay)


__all__ = ["Optimizer", "SGD", "Adam", "AdamW"]
