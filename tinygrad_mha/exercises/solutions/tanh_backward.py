"""Exercise tanh_backward (tutorial 02): the derivative of tanh.

Grade it:  python -m tinygrad_mha.exercises check tanh_backward --solutions
"""

import numpy as np


def tanh_backward(x, g):
    """Return dL/dx for y = tanh(x), applied elementwise.

    Args:
        x: float64 NumPy array of any shape: the input of the forward pass.
        g: float64 NumPy array of the same shape: the upstream gradient dL/dy.

    Returns:
        A NumPy array of x's shape: dL/dx = g * dy/dx, elementwise. It must be finite for
        large |x| too (the grader tries x = -800 and 800).

    Write dy/dx in terms of y = tanh(x). Afterwards, compare with ``Tanh`` in
    tinygrad_mha/ops/elementwise.py.
    """
    y = np.tanh(x)
    return g * (1.0 - y * y)
