"""Exercise softmax_backward (tutorial 05): the vector-Jacobian product of softmax.

Replace each `raise NotImplementedError(...)` below with your code, then grade it:

    python -m tinygrad_mha.exercises check softmax_backward

from the folder holding this file (elsewhere, add --dir FOLDER). A fresh copy of every
stub: python -m tinygrad_mha.exercises init FOLDER
"""

import numpy as np


def softmax_backward(x, g, axis=-1):
    """Return dL/dx for y = softmax(x, axis), without building the Jacobian matrix.

    Forward, for each slice along ``axis``: y_i = exp(x_i) / sum_j exp(x_j).

    Args:
        x: float64 NumPy array of any shape (>= 1-D): the logits. Values may be large
            (the grader tries logits near 1000), so compute y stably.
        g: float64 NumPy array of x's shape: the upstream gradient dL/dy.
        axis: int, the axis softmax normalizes over (may be negative).

    Returns:
        A NumPy array of x's shape: dL/dx_i = sum_j g_j dy_j/dx_i, for every slice along
        ``axis``. The Jacobian dy_j/dx_i is *not* diagonal.

    Compare with ``Softmax`` in tinygrad_mha/ops/nn.py.
    """
    raise NotImplementedError("softmax_backward: write your code here")
