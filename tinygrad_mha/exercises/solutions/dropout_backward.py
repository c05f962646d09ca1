"""Exercise dropout_backward (tutorial 06): the gradient of inverted dropout.

Grade it:  python -m tinygrad_mha.exercises check dropout_backward --solutions
"""

import numpy as np


def dropout_backward(g, keep, rate):
    """Return dL/dx for the inverted-dropout forward y = x * keep / (1 - rate).

    Args:
        g: float64 NumPy array of any shape: the upstream gradient dL/dy.
        keep: boolean NumPy array of g's shape: True where the entry survived the random
            draw (the mask is fixed: it is a constant, not a function of x).
        rate: float in [0, 1): the probability of dropping an entry.

    Returns:
        A NumPy array of g's shape: dL/dx. It must also agree with the gradient that
        tinygrad_mha computes for tm.dropout (``dropout`` in tinygrad_mha/ops/nn.py).
    """
    return g * keep / (1.0 - rate)
