"""Exercise online_softmax (tutorial 13): attention for one head, one key block at a time.

The heart of FlashAttention: softmax(scores) @ values without ever holding a whole row of
scores. Scores come from a function that hands out one block of columns at a time (as the
blocked kernel computes them on demand from q and k); you keep three running quantities
per row and fold each block into them.

Replace the `raise NotImplementedError(...)` below with your code, then grade it:

    python -m tinygrad_mha.exercises check online_softmax
    pytest tests/test_exercises.py -m online_softmax
"""

import numpy as np


def online_softmax(score_block, values, block):
    """softmax(scores, axis=1) @ values and each row's log-sum-exp, in one sweep over key blocks.

    Args:
        score_block: a function; score_block(j0, j1) returns the (T, j1 - j0) float64 array of
            scores for key positions j0 .. j1 - 1. Ask for at most ``block`` columns per
            call (more raises), left to right. Rows may be on wildly different scales (near
            +1000, 0 or -1000); an entry of -inf is a masked key; a row may be all -inf.
        values: (S, D) float64 NumPy array, one row per key position.
        block: int >= 1, the most key positions per call of score_block (it need not divide S).

    Returns:
        (out, lse):
          * out: (T, D) array, out[t] = sum_j softmax(scores[t])_j * values[j]; a row with no
            finite score gives zeros (no NaN);
          * lse: (T,) array, log(sum_j exp(scores[t, j])); -inf for a row with no finite score.
        Keep per row a running maximum m, a running sum l of exp(score - m) and a running
        accumulator acc of exp(score - m) * value; when a block raises m, rescale l and acc
        by exp(m_old - m_new). No exp() may overflow, and no row may divide 0 by 0.
    """
    raise NotImplementedError("online_softmax: write your code here")
