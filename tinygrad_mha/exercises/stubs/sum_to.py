"""Exercise sum_to (tutorial 03): undo broadcasting, the one helper every gradient needs.

Replace each `raise NotImplementedError(...)` below with your code, then grade it:

    python -m tinygrad_mha.exercises check sum_to

from the folder holding this file (elsewhere, add --dir FOLDER). A fresh copy of every
stub: python -m tinygrad_mha.exercises init FOLDER
"""

import numpy as np


def sum_to(g, shape):
    """Sum ``g`` down to ``shape``: the gradient of ``numpy.broadcast_to(x, g.shape)``.

    Args:
        g: float64 NumPy array, the gradient of a broadcast result (e.g. shape (2, 3, 4)).
        shape: tuple of ints that broadcasts to g.shape under NumPy's rules, e.g. (3, 1),
            (4,), () or g.shape itself.

    Returns:
        A NumPy array of exactly ``shape``. Every element of x = the input of broadcast_to
        was copied to several places of the output; its gradient is the sum of g over those
        places. Example: g of shape (2, 3, 4) and shape (3, 1) -> g.sum(axis=(0, 2)) as a
        (3, 1) array.

    The engine does this in one place: ``SumTo`` in tinygrad_mha/ops/reduce.py.
    """
    raise NotImplementedError("sum_to: write your code here")
