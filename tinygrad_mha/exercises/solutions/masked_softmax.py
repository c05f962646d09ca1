"""Exercise masked_softmax (tutorial 05): a stable masked softmax built from Tensor ops.

Here you write a *forward* pass with tinygrad_mha's own ops; the engine differentiates it.
tm.softmax and tm.log_softmax are switched off while this exercise is graded.

Grade it:  python -m tinygrad_mha.exercises check masked_softmax --solutions
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
    keep = np.broadcast_to(np.asarray(mask, dtype=bool), x.shape)
    # The shift is a constant (softmax does not change when one is subtracted), so it is
    # computed on plain arrays: the largest kept logit, or 0 where a slice keeps nothing.
    shift = np.where(keep, x.data, -np.inf).max(axis=axis, keepdims=True)
    shift = np.where(np.isfinite(shift), shift, 0.0)
    # exp only where kept: masked logits may be huge, and exp(-inf) = 0 exactly.
    e = tm.where(keep, x - shift, -np.inf).exp()
    total = e.sum(axis=axis, keepdims=True)
    return e / tm.where(total.data == 0, 1.0, total)
