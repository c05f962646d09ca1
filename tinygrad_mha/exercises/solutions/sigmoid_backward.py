"""Exercise sigmoid_backward (tutorial 02): the derivative of the logistic sigmoid.

Grade it:  python -m tinygrad_mha.exercises check sigmoid_backward --solutions
"""

import numpy as np


def sigmoid_backward(x, g):
    """Return dL/dx for y = sigmoid(x) = 1 / (1 + exp(-x)), applied elementwise.

    Args:
        x: float64 NumPy array of any shape: the input of the forward pass.
        g: float64 NumPy array of the same shape: the upstream gradient dL/dy.

    Returns:
        A NumPy array of x's shape: dL/dx = g * dy/dx, elementwise (the Jacobian is diagonal).
        It must be finite and correct for large |x| too (the grader tries x = -800 and 800).

    Work out dy/dx and write it in terms of y itself. Afterwards, compare with the engine's
    own rule: ``Sigmoid`` in tinygrad_mha/ops/elementwise.py.
    """
    # 0.5 * (1 + tanh(x / 2)) equals 1 / (1 + exp(-x)) but never overflows.
    y = 0.5 * (1.0 + np.tanh(0.5 * x))
    return g * y * (1.0 - y)
