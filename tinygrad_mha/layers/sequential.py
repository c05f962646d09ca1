"""Sequential: layers applied one after another, ``x -> layers[0] -> layers[1] -> ...``.

    model = Sequential([Embedding(10, 16), PositionalEncoding(), Dense(10)])
    logits = model(tokens)                       # (B, T, 10)

Each layer gets exactly one input, so a layer that needs more (``MultiHeadAttention`` takes
query and value) goes inside a small ``Model`` subclass instead, as in the demo.
``training`` is passed on to the layers whose ``call`` accepts it.
"""

from __future__ import annotations

from .base import Layer
from .model import Model, _takes_training


class Sequential(Model):
    """A Model made of a list of single-input layers."""

    def __init__(self, layers=None, name=None, dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        if layers is not None and (isinstance(layers, Layer) or not hasattr(layers, "__iter__")):
            raise TypeError(f"Sequential: layers must be a list of Layer instances, got {layers!r}")
        for layer in layers or ():
            self.add(layer)

    @property
    def layers(self) -> list[Layer]:
        return list(self._sublayers)

    def add(self, layer) -> None:
        """Append a layer to the end of the stack."""
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential: every layer must be a Layer instance, got "
                            f"{type(layer).__name__} ({layer!r})")
        if any(existing is layer for existing in self._sublayers):
            raise ValueError(f"Sequential: layer {layer.name!r} is already in this model")
        self._sublayers.append(layer)
        self.built = False

    def call(self, inputs, training=None):
        if not self._sublayers:
            raise ValueError("Sequential: the model has no layers; add some with add()")
        x = inputs
        for layer in self._sublayers:
            x = layer(x, training=training) if _takes_training(layer) else layer(x)
        self.built = True
        return x

    def get_config(self) -> dict:
        return {"name": self.name, "dtype": str(self.dtype),
                "layers": [{"class_name": type(layer).__name__, "config": layer.get_config()}
                           for layer in self._sublayers]}

    @classmethod
    def from_config(cls, config: dict):
        from .. import layers as package  # the layer classes exported by tinygrad_mha.layers

        layers = []
        for entry in config.get("layers", []):
            layer_cls = getattr(package, entry["class_name"], None)
            if not (isinstance(layer_cls, type) and issubclass(layer_cls, Layer)):
                raise ValueError(f"Sequential.from_config: unknown layer class "
                                 f"{entry['class_name']!r}")
            layers.append(layer_cls.from_config(entry["config"]))
        return cls(layers, name=config.get("name"), dtype=config.get("dtype", "float32"))
