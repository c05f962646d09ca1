"""Exercise attention_scores (tutorial 04, used in 08-09): Keras' attention_axes layout.

Here you write a *forward* pass with tinygrad_mha's own ops; the engine differentiates it.

Replace each `raise NotImplementedError(...)` below with your code, then grade it:

    python -m tinygrad_mha.exercises check attention_scores

from the folder holding this file (elsewhere, add --dir FOLDER). A fresh copy of every
stub: python -m tinygrad_mha.exercises init FOLDER
"""

import math

import tinygrad_mha as tm


def attention_scores(query, key, attention_axes):
    """The attention probabilities of MultiHeadAttention for projected queries and keys.

    Args:
        query: tm.Tensor of shape (B, *index_dims_q, H, D): projected queries, H heads of
            key_dim D.
        key: tm.Tensor of shape (B, *index_dims_k, H, D), the same rank. Index axes that are
            not attention axes have the same size as the query's.
        attention_axes: tuple of ints, the index axes attended over (each in 1 .. rank - 3,
            in increasing order). E.g. (1,) for sequences (B, T, H, D); (1, 2) for images
            (B, rows, cols, H, D).

    Returns:
        A tm.Tensor with the probabilities softmax(q . k / sqrt(D)), the softmax taken
        jointly over all key attention axes, laid out as Keras' scores:
            (B and every index axis not in attention_axes, in order;
             H;
             the query's attention axes, in order;
             the key's attention axes, in order).
        E.g. query (2, 3, 4, 2, 8), key (2, 3, 5, 2, 8), attention_axes (2,) -> (2, 3, 2, 4, 5).
        Build it with tm ops (tm.einsum, tm.softmax, ...) so gradients reach query and key.
    """
    raise NotImplementedError("attention_scores: write your code here")
