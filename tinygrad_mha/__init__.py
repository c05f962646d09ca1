"""tinygrad_mha: reverse-mode autodiff over NumPy/CuPy, and a Keras-compatible MultiHeadAttention.

    import tinygrad_mha as tm
    x = tm.Tensor([[1.0, 2.0]], requires_grad=True)
    (x * x).sum().backward()      # x.grad == [[2., 4.]]
"""

__version__ = "0.1.0"

from .backend import cuda_available, set_seed
from .gradcheck import GradcheckError, gradcheck, gradgradcheck
from .ops import (concatenate, dot_product_attention, dropout, einsum, log_softmax, matmul,
                  softmax, stack, tensordot, where)
from .tensor import Tensor, enable_grad, grad, no_grad
from .kernels import use_kernels
from . import constraints, initializers, layers, losses, optimizers, regularizers
from .layers import MultiHeadAttention

__all__ = ["__version__", "Tensor", "GradcheckError", "concatenate", "cuda_available",
           "dot_product_attention", "dropout", "einsum", "enable_grad", "grad", "gradcheck",
           "gradgradcheck", "log_softmax", "matmul",
           "no_grad", "set_seed", "softmax", "stack", "tensordot", "where", "MultiHeadAttention",
           "layers", "initializers", "regularizers", "constraints", "optimizers", "losses",
           "use_kernels"]
