"""Model: a Layer with a training loop (``fit``), ``predict`` and ``evaluate``.

Subclass it and write ``call`` (build sub-layers in ``__init__``), or use ``Sequential``:

    model = tm.layers.Sequential([tm.layers.Dense(16, activation="relu"), tm.layers.Dense(3)])
    history = model.fit(x, y, loss="sparse_categorical_crossentropy", optimizer="adam",
                        epochs=5, batch_size=32, metrics=["accuracy"])
    history.history["loss"]          # one value per step

Each step is the loop every framework hides: take a batch, run the model with
``training=True``, add the layers' regularization losses, ``zero_grad``, ``backward``, ``step``.
Unlike Keras, ``fit`` records the loss after every step (not every epoch), and takes the loss
and optimizer directly instead of through ``compile``.

(``tinygrad_mha.optimizers`` sits above the layers in the package's layering, so it is
imported inside ``fit`` rather than at the top of this module.)
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers

import numpy as np

from .. import backend, losses as losses_module
from ..tensor import Tensor, no_grad
from .base import Layer

LOSSES = {
    # from logits, like Keras with from_logits=True
    "sparse_categorical_crossentropy":
        lambda y, logits: losses_module.softmax_cross_entropy(logits, y),
    "categorical_crossentropy": lambda y, logits: losses_module.softmax_cross_entropy(logits, y),
    "mean_squared_error": losses_module.mean_squared_error,
    "mse": losses_module.mean_squared_error,
}


def accuracy(y_true, y_pred) -> float:
    """Fraction of correct argmax predictions; labels are class ids or one-hot rows."""
    pred = backend.to_numpy(y_pred.data if isinstance(y_pred, Tensor) else y_pred)
    true = backend.to_numpy(y_true.data if isinstance(y_true, Tensor) else y_true)
    if true.shape == pred.shape:
        true = true.argmax(-1)
    return float(np.mean(pred.argmax(-1) == true))


METRICS = {"accuracy": accuracy, "acc": accuracy}


class History:
    """What ``fit`` returns: ``history["loss"]`` and every metric, one value per step."""

    def __init__(self):
        self.history: dict[str, list] = {}
        self.steps: list[int] = []

    def append(self, step: int, logs: dict) -> None:
        self.steps.append(step)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def __getitem__(self, key):
        return self.history[key]

    def __repr__(self):
        return f"History({len(self.steps)} steps, keys={list(self.history)})"


def _resolve_loss(loss):
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"fit: unknown loss {loss!r}; known losses are {sorted(LOSSES)}, "
                             "or pass a callable loss(y_true, y_pred) -> scalar Tensor")
        return LOSSES[loss]
    if not callable(loss):
        raise TypeError("fit: loss must be a name or a callable loss(y_true, y_pred), got "
                        f"{loss!r}")
    return loss


def _resolve_metrics(metrics) -> dict:
    if metrics is None:
        return {}
    if isinstance(metrics, str) or callable(metrics):
        metrics = [metrics]
    out = {}
    for m in metrics:
        if isinstance(m, str):
            if m not in METRICS:
                raise ValueError(f"fit: unknown metric {m!r}; known metrics are {sorted(METRICS)}")
            out["accuracy" if m == "acc" else m] = METRICS[m]
        elif callable(m):
            out[getattr(m, "__name__", "metric")] = m
        else:
            raise TypeError(f"fit: metrics must be names or callables, got {m!r}")
    return out


def _check_count(value, name):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"fit: {name} must be a positive integer, got {name}={value!r}")
    return int(value)


def _takes_training(layer) -> bool:
    """Whether ``layer.call`` accepts a ``training`` argument (dropout-like layers do)."""
    return _call_takes_training(type(layer))


@functools.lru_cache(maxsize=None)
def _call_takes_training(cls) -> bool:
    try:
        params = inspect.signature(cls.call).parameters
    except (TypeError, ValueError):
        return False
    return "training" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


class Model(Layer):
    """A Layer that can train itself: ``fit``, ``predict``, ``evaluate``."""

    def _ensure_built(self, x_sample) -> None:
        """Run one forward pass (no graph) so every lazily built sub-layer has its weights."""
        if not self.built:
            with no_grad():
                self(x_sample)
            self.built = True

    def _call_training(self, x, training):
        return self(x, training=training) if _takes_training(self) else self(x)

    def _resolve_optimizer(self, optimizer):
        from .. import optimizers  # above layers in the layering: imported when fit needs it

        params = self.trainable_weights
        if not params:
            raise ValueError(f"fit: model {self.name!r} has no trainable weights")
        if isinstance(optimizer, optimizers.Optimizer):
            mine = {id(p) for p in params}
            if not any(id(p) in mine for p in optimizer.params):
                raise ValueError("fit: the optimizer holds none of this model's weights; create it "
                                 "with model.trainable_weights, or pass a name such as 'adam'")
            return optimizer
        if isinstance(optimizer, str):
            classes = {"adam": optimizers.Adam, "adamw": optimizers.AdamW, "sgd": optimizers.SGD}
            if optimizer.lower() not in classes:
                raise ValueError(f"fit: unknown optimizer {optimizer!r}; known names are "
                                 f"{sorted(classes)}")
            return classes[optimizer.lower()](params)
        if callable(optimizer):  # a factory: params -> Optimizer (e.g. lambda p: Adam(p, 3e-3))
            opt = optimizer(params)
            if not isinstance(opt, optimizers.Optimizer):
                raise TypeError(f"fit: the optimizer factory returned {type(opt).__name__}, not an "
                                "Optimizer")
            return opt
        raise TypeError(f"fit: optimizer must be an Optimizer, a name or a factory params -> "
                        f"Optimizer, got {optimizer!r}")

    def fit(self, x, y, loss, optimizer="adam", epochs=None, steps=None, batch_size=32,
            metrics=None, callback=None, shuffle=True, seed=None, progress=True,
            progress_desc="train") -> History:
        """Train on arrays ``x`` and ``y`` (first axis: examples); returns a ``History``.

        ``epochs`` passes over the data, or exactly ``steps`` batches (give one; default 1
        epoch). ``loss`` is a name from ``LOSSES`` or ``fn(y_true, y_pred) -> scalar Tensor``;
        the layers' ``losses`` (regularization) are added to it. ``optimizer``: an Optimizer
        built on ``model.trainable_weights``, a name ("adam", "sgd", "adamw") or a factory
        ``params -> Optimizer``. ``callback(step, logs)`` runs after each step; returning
        False stops training. ``seed`` fixes the shuffling order. ``progress`` shows a tqdm
        bar (on stderr, or a widget in a notebook) titled ``progress_desc``.
        """
        epochs, steps = _check_count(epochs, "epochs"), _check_count(steps, "steps")
        batch_size = _check_count(batch_size, "batch_size")
        if epochs is not None and steps is not None:
            raise ValueError(f"fit: give epochs or steps, not both (got epochs={epochs}, "
                             f"steps={steps})")
        if callback is not None and not callable(callback):
            raise TypeError("fit: callback must be callable as callback(step, logs), got "
                            f"{callback!r}")
        x = x if hasattr(x, "shape") else np.asarray(x)
        y = y if hasattr(y, "shape") else np.asarray(y)
        n = len(x)
        if len(y) != n:
            raise ValueError(f"fit: x has {n} examples but y has {len(y)}")
        if n == 0:
            raise ValueError("fit: x holds no examples")
        loss_fn, metric_fns = _resolve_loss(loss), _resolve_metrics(metrics)
        self._ensure_built(x[:1])
        opt = self._resolve_optimizer(optimizer)

        per_epoch = math.ceil(n / batch_size)
        total = steps if steps is not None else (epochs or 1) * per_epoch
        rng = np.random.default_rng(seed)
        history = History()
        # tqdm.auto: one line redrawn in a terminal, one updating widget in a notebook
        from tqdm.auto import tqdm  # here, not at import: in a kernel it looks for ipywidgets
        bar = tqdm(total=total, desc=progress_desc, disable=not progress, unit="step")
        order = None
        try:
            for step in range(total):
                k = step % per_epoch
                if k == 0:
                    order = rng.permutation(n) if shuffle else np.arange(n)
                idx = order[k * batch_size:(k + 1) * batch_size]
                xb, yb = x[idx], y[idx]
                pred = self._call_training(xb, True)
                value = loss_fn(yb, pred)
                extra = self.losses
                total_loss = value + sum(extra[1:], extra[0]) if extra else value
                opt.zero_grad()
                total_loss.backward()
                opt.step()
                logs = {"loss": float(total_loss.item())}
                for name, fn in metric_fns.items():
                    logs[name] = float(fn(yb, pred))
                history.append(step, logs)
                bar.set_postfix(logs, refresh=False)
                bar.update()
                if callback is not None and callback(step, logs) is False:
                    break
        finally:
            bar.close()
        return history

    def predict(self, x, batch_size=None) -> np.ndarray:
        """The model's outputs for ``x`` as a NumPy array (inference mode, no graph)."""
        batch_size = _check_count(batch_size, "batch_size") or len(x)
        outs = []
        with no_grad():
            for start in range(0, len(x), batch_size):
                outs.append(self._call_training(x[start:start + batch_size], False).numpy())
        return np.concatenate(outs, axis=0)

    def evaluate(self, x, y, loss=None, metrics=("accuracy",), batch_size=None) -> dict:
        """Loss (if given) and metrics over all of ``x``, in inference mode."""
        pred = self.predict(x, batch_size)
        out = {}
        if loss is not None:
            with no_grad():
                out["loss"] = float(_resolve_loss(loss)(y, Tensor(pred)).item())
        for name, fn in _resolve_metrics(metrics).items():
            out[name] = float(fn(y, pred))
        return out
