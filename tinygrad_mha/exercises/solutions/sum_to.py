"""Exercise sum_to (tutorial 03): undo broadcasting, the one helper every gradient needs.

Grade it:  python -m tinygrad_mha.exercises check sum_to --solutions
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
    shape = tuple(shape)
    lead = g.ndim - len(shape)                     # axes that broadcasting added in front
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape)
                                      if n == 1 and g.shape[lead + i] != 1)
    return np.sum(g, axis=axes, keepdims=True).reshape(shape)
