"""Exercise layernorm_backward (tutorials 03 and 05): layer normalization's three gradients.

Grade it:  python -m tinygrad_mha.exercises check layernorm_backward --solutions
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
    n = x.shape[-1]
    mu = x.mean(axis=-1, keepdims=True)
    inv_std = 1.0 / np.sqrt(((x - mu) ** 2).mean(axis=-1, keepdims=True) + epsilon)
    xhat = (x - mu) * inv_std
    lead = tuple(range(x.ndim - 1))
    gbeta = g.sum(axis=lead)
    ggamma = (g * xhat).sum(axis=lead)
    gxhat = g * gamma
    # d xhat / dx, projected: remove the mean of gxhat and its component along xhat.
    gx = inv_std / n * (n * gxhat - gxhat.sum(axis=-1, keepdims=True)
                        - xhat * (gxhat * xhat).sum(axis=-1, keepdims=True))
    return gx, ggamma, gbeta
