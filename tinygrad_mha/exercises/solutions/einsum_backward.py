"""Exercise einsum_backward (tutorial 04): the gradient of an einsum is another einsum.

Three functions, each the backward of one einsum equation. Use numpy.einsum in your answers.

Grade it:  python -m tinygrad_mha.exercises check einsum_backward --solutions
"""

import numpy as np


def matmul_einsum_backward(a, b, g):
    """Return (dL/da, dL/db) for c = numpy.einsum("ij,jk->ik", a, b).

    Args:
        a: float64 array of shape (i, j).
        b: float64 array of shape (j, k).
        g: float64 array of shape (i, k): dL/dc.

    Returns:
        (ga, gb) with shapes (i, j) and (j, k). Each is one einsum of g with the other operand.
    """
    return np.einsum("ik,jk->ij", g, b), np.einsum("ij,ik->jk", a, g)


def attention_einsum_backward(q, k, g):
    """Return (dL/dq, dL/dk) for s = numpy.einsum("bqhd,bkhd->bhqk", q, k).

    This is the attention-logits contraction of MultiHeadAttention: batch b, query
    positions q, key positions k, heads h, feature dim d.

    Args:
        q: float64 array of shape (B, T, H, D).
        k: float64 array of shape (B, S, H, D).
        g: float64 array of shape (B, H, T, S): dL/ds.

    Returns:
        (gq, gk) with shapes (B, T, H, D) and (B, S, H, D).
    """
    return np.einsum("bhqk,bkhd->bqhd", g, k), np.einsum("bhqk,bqhd->bkhd", g, q)


def diagonal_einsum_backward(a, g):
    """Return dL/da for d = numpy.einsum("ii->i", a), the diagonal of a square matrix.

    Args:
        a: float64 array of shape (n, n).
        g: float64 array of shape (n,): dL/dd.

    Returns:
        An (n, n) array: g on the diagonal, zeros elsewhere (off-diagonal entries of a never
        reach the output). Write it as an einsum too: the repeated letter needs an identity
        matrix, numpy.eye(n).
    """
    return np.einsum("i,ij->ij", g, np.eye(a.shape[0]))
