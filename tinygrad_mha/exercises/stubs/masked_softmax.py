"""Exercise masked_softmax (tutorial 05): a stable masked softmax built from Tensor ops.

Here you write a *forward* pass with tinygrad_mha's own ops; the engine differentiates it.
tm.softmax and tm.log_softmax are switched off while this exercise is graded.

Replace each `raise NotImplementedError(...)` below with your code, then grade it:

    python -m tinygrad_mha.exercises check masked_softmax

from the folder holding this file (elsewhere, add --dir FOLDER). A fresh copy of every
stub: python -m tinygrad_mha.exercises init FOLDER
"""

import numpy as np

import tinygrad_mha as tm


def masked_softmax(x, mask, axis=-1):
    """Softmax of ``x`` along ``axis`` over the entries where ``mask`` is True.

    Args:
        x: tm.Tensor (float64, requires_grad=True) of any shape (>= 1-D): the logits.
            Kept logits may be near 1000 and masked ones even larger; neither may overflow.
        mask: boolean NumPy array broadcastable to x.shape; True = keep, False = masked out.
        axis: int, the axis to normalize over (may be negative).

    Returns:
        A tm.Tensor of x.shape, computed with Tensor operations (+, -, *, /, .exp(), .sum(),
        tm.where, ...) so that gradients flow back to x:
          * kept entries: exp(x_i) / sum of exp(x_j) over the kept j of the same slice;
          * masked entries: exactly 0.0;
          * a slice where nothing is kept: all zeros (finite, with zero gradient), never NaN.
    """
    raise NotImplementedError("masked_softmax: write your code here")
