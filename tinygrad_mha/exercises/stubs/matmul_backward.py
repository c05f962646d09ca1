"""Exercise matmul_backward (tutorial 03): the gradients of a @ b with broadcast batch axes.

Replace each `raise NotImplementedError(...)` below with your code, then grade it:

    python -m tinygrad_mha.exercises check matmul_backward

from the folder holding this file (elsewhere, add --dir FOLDER). A fresh copy of every
stub: python -m tinygrad_mha.exercises init FOLDER
"""

import numpy as np


def matmul_backward(a, b, g):
    """Return (dL/da, dL/db) for c = numpy.matmul(a, b).

    Args:
        a: float64 NumPy array of shape (*batch_a, n, k), at least 2-D.
        b: float64 NumPy array of shape (*batch_b, k, m), at least 2-D.
            batch_a and batch_b broadcast against each other like NumPy arrays, e.g. a of
            shape (2, 1, 3, 4) and b of shape (3, 4, 2) give c of shape (2, 3, 3, 2).
        g: float64 NumPy array of c's shape (*broadcast(batch_a, batch_b), n, m): dL/dc.

    Returns:
        A tuple (ga, gb) with ga.shape == a.shape and gb.shape == b.shape. A batch axis that
        a (or b) only had through broadcasting must be summed away (see the sum_to exercise).

    Compare with ``MatMul`` in tinygrad_mha/ops/linalg.py, and with ``_sum_to_shape`` in
    tinygrad_mha/tensor.py, where the engine undoes broadcasting for every op.
    """
    raise NotImplementedError("matmul_backward: write your code here")
