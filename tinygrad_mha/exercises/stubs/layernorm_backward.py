"""Exercise layernorm_backward (tutorials 03 and 05): layer normalization's three gradients.

Replace each `raise NotImplementedError(...)` below with your code, then grade it:

    python -m tinygrad_mha.exercises check layernorm_backward

from the folder holding this file (elsewhere, add --dir FOLDER). A fresh copy of every
stub: python -m tinygrad_mha.exercises init FOLDER
"""

import numpy as np


def layernorm_backward(x, gamma, beta, g, epsilon=1e-3):
    """Return (dL/dx, dL/dgamma, dL/dbeta) for layer normalization over the last axis.

    Forward (as keras.layers.LayerNormalization with its default axis=-1):
        mu  = mean(x, axis=-1, keepdims=True)
        var = mean((x - mu)**2, axis=-1, keepdims=True)        (population variance)
        xhat = (x - mu) / sqrt(var + epsilon)
        y = gamma * xhat + beta                                 (gamma, beta broadcast)

    Args:
        x: float64 array of shape (..., F), at least 2-D.
        gamma, beta: float64 arrays of shape (F,).
        g: float64 array of x's shape: dL/dy.
        epsilon: float, added to the variance.

    Returns:
        (gx, ggamma, gbeta) with shapes x.shape, (F,), (F,). Mind that mu and var depend on
        every element of their row.
    """
    raise NotImplementedError("layernorm_backward: write your code here")
