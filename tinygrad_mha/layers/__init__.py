"""Layers built from Tensor ops, with Keras constructor conventions."""

from .parameter import Parameter

__all__ = ["Parameter"]
