"""Layers built from Tensor ops, with Keras constructor conventions."""

from .base import Layer
from .einsum_dense import EinsumDense
from .multi_head_attention import MultiHeadAttention
from .parameter import Parameter

__all__ = ["EinsumDense", "Layer", "MultiHeadAttention", "Parameter"]
