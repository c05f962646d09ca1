"""Exercise logsumexp_backward (tutorial 05): the gradient of a smooth maximum.

Replace each `raise NotImplementedError(...)` below with your code, then grade it:

    python -m tinygrad_mha.exercises check logsumexp_backward

from the folder holding this file (elsewhere, add --dir FOLDER). A fresh copy of every
stub: python -m tinygrad_mha.exercises init FOLDER
"""

import numpy as np


def logsumexp_backward(x, g, axis=-1):
    """Return dL/dx for s = log(sum(exp(x), axis)) (the axis is reduced away, no keepdims).

    Args:
        x: float64 NumPy array of any shape (>= 1-D). Values may be near +1000 or -1000,
            so anything you exponentiate must be shifted first.
        g: float64 NumPy array of s's shape, i.e. x.shape without ``axis`` (a 0-d array
            when x is 1-D): dL/ds.
        axis: int, the reduced axis (may be negative).

    Returns:
        A NumPy array of x's shape: dL/dx.
    """
    raise NotImplementedError("logsumexp_backward: write your code here")
