"""The differentiable operations, one file per family; each Function sits beside its gradient."""

from .attention import attention
from .einsum import einsum
from .elementwise import (abs, add, compare, div, exp, log, mul, neg, pow, relu, sigmoid, sqrt,
                          sub, tanh, where)
from .linalg import matmul, tensordot
from .nn import dropout, log_softmax, softmax
from .dot_product_attention import dot_product_attention
from .reduce import max, mean, min, sum, sum_to, var
from .shape import (broadcast_to, concatenate, expand_dims, getitem, reshape, squeeze, stack,
                    swapaxes, transpose)

__all__ = ["abs", "add", "attention", "broadcast_to", "compare", "concatenate", "div",
           "dot_product_attention", "dropout",
           "einsum", "exp", "expand_dims", "getitem", "log", "log_softmax", "matmul", "max",
           "mean", "min", "mul", "neg", "pow", "relu", "reshape", "sigmoid", "softmax", "sqrt",
           "squeeze", "stack", "sub", "sum", "sum_to", "swapaxes", "tanh", "tensordot",
           "transpose", "var", "where"]
