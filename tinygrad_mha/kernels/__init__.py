"""Fast paths (stub on this branch: only the switch; the kernels issue brings the real seam)."""

from __future__ import annotations

import contextlib
import os

_enabled = True


def kernels_enabled() -> bool:
    """False under ``use_kernels(False)`` or with TINYGRAD_MHA_KERNELS=0 in the environment."""
    return _enabled and os.environ.get("TINYGRAD_MHA_KERNELS", "1") != "0"


@contextlib.contextmanager
def use_kernels(enabled: bool = True):
    """Context manager (and decorator): run kernels or, with False, the reference ops."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    try:
        yield
    finally:
        _enabled = previous
