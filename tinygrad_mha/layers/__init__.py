"""Layers built from Tensor ops, with Keras constructor conventions."""

from .base import Layer
from .dense import Dense
from .einsum_dense import EinsumDense
from .embedding import Embedding
from .layer_normalization import LayerNormalization
from .model import History, Model
from .multi_head_attention import MultiHeadAttention
from .parameter import Parameter
from .positional_encoding import PositionalEncoding
from .sequential import Sequential

__all__ = ["Dense", "EinsumDense", "Embedding", "History", "Layer", "LayerNormalization", "Model",
           "MultiHeadAttention", "Parameter", "PositionalEncoding", "Sequential"]
