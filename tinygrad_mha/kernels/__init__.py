"""Fast paths for reference ops, and the one seam that picks them.

``tinygrad_mha/ops/`` states every op as its math; the modules here do the same arithmetic
faster (a contraction planner, a fused attention node, an in-place softmax gradient, a
tensordot with its bias). Each registers itself under the name of the public op it replaces:

    @register("softmax")
    def softmax(x, axes, mask): ...

and that op's public function asks ``kernel_for("softmax")`` before running its reference
definition. ``use_kernels(False)`` (a context manager and a decorator, like ``no_grad``) or
``TINYGRAD_MHA_KERNELS=0`` in the environment turns every kernel off, so everything runs on
the code the tutorials teach. Each kernel is tested against its reference op in both modes.

``blocked_attention`` is the one kernel that is not a drop-in for an op call: it is a different
algorithm for the same numbers, chosen by ``flash_attention`` (``tm.dot_product_attention``
and ``MultiHeadAttention``) when ``kernels_enabled()``, so it is not in the registry.
"""

from __future__ import annotations

import contextlib
import importlib
import os

# the kernel modules, imported on first use (they import ops/, which imports this seam)
MODULES = ("contraction", "fused_attention", "softmax", "tensordot")

_registry: dict = {}
_loaded = False


class _Mode:
    enabled = os.environ.get("TINYGRAD_MHA_KERNELS", "1").strip().lower() not in (
        "0", "false", "no", "off")


def kernels_enabled() -> bool:
    """Whether ops run their kernels (False inside ``use_kernels(False)`` or with the env off)."""
    return _Mode.enabled


class use_kernels(contextlib.ContextDecorator):
    """``with use_kernels(False):`` runs every op on its reference definition; also a decorator."""

    def __init__(self, enabled: bool = True):
        self.enabled = bool(enabled)
        self._previous = []

    def __enter__(self):
        self._previous.append(_Mode.enabled)  # a stack: a decorated function may re-enter
        _Mode.enabled = self.enabled
        return self

    def __exit__(self, *exc):
        _Mode.enabled = self._previous.pop()  # restored even when the block raised
        return False


def register(op: str):
    """Decorator: make ``fn`` the kernel for the public op named ``op``."""
    def add(fn):
        _registry[op] = fn
        return fn
    return add


def kernel_for(op: str):
    """The kernel registered for ``op`` when kernels are on, else None (run the reference)."""
    if not _Mode.enabled:
        return None
    if not _loaded:
        _load()
    return _registry.get(op)


def _load() -> None:
    global _loaded
    _loaded = True
    for name in MODULES:
        importlib.import_module(f"{__name__}.{name}")


__all__ = ["use_kernels", "kernels_enabled", "kernel_for", "register"]
