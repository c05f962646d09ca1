"""Helpers every benchmark script shares: pinned threads and allocator, interleaved medians,
the machine description, and writing one section of RESULTS.md.

Import this module before NumPy when you call ``pin_threads``: BLAS reads its thread count
once, when NumPy is first imported.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
SIZES = {  # name: (B, T, E, H); key_dim D = E // H, S = T (self-attention)
    "small": (8, 32, 64, 4),
    "medium": (16, 128, 256, 8),
    "large": (8, 512, 512, 8),
}
MIN_ROUND_S = 2e-3  # a timed sample repeats the call until it lasts at least this long
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def parse_args(description: str, argv=None) -> argparse.Namespace:
    """The options every benchmark takes (``python -m tinygrad_mha bench`` passes them to all)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--threads", type=int, default=2, help="BLAS/OpenMP/PyTorch threads (default 2)")
    p.add_argument("--quick", action="store_true",
                   help="fast smoke run (few rounds; does not write RESULTS.md unless --write)")
    p.add_argument("--sizes", default="small,medium,large", help="comma-separated subset of sizes")
    p.add_argument("--write", action="store_true", help="write RESULTS.md even with --quick")
    p.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    p.add_argument("--malloc", choices=("pinned", "default"), default="pinned",
                   help="pinned (default): glibc keeps freed memory for reuse; default: leave malloc as is")
    return p.parse_args(argv)


def selected_sizes(args) -> list[str]:
    """The names given to ``--sizes``, checked against SIZES."""
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    bad = [s for s in sizes if s not in SIZES]
    if bad:
        raise SystemExit(f"--sizes: unknown size(s) {bad}; choose from {list(SIZES)}")
    return sizes


def pin_threads(n: int) -> None:
    """Give BLAS/OpenMP ``n`` threads, for NumPy and every other library alike (call it first)."""
    if "numpy" in sys.modules:
        raise RuntimeError("pin_threads must run before NumPy is imported")
    for var in THREAD_VARIABLES:
        os.environ[var] = str(n)


def pin_allocator() -> str:
    """Make glibc malloc keep and reuse freed memory, so page faults do not pick a winner.

    By default glibc returns the top of its heap to the OS once more than a few MB there are
    free, and takes it back (with one page fault per 4 KiB) at the next allocation. Whether a
    step of this benchmark crosses that line depends on accidents of allocation order: the
    same contraction measured 0 or ~1000 faults per step (+2 ms at medium size) depending on
    what ran before it; arrays above the mmap threshold (the large size's 64 MiB scores) are
    fresh pages every time. Serving every array from the heap (no mmap) and never trimming it
    takes that lottery out, for NumPy and the framework alike.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        ok = libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, 1 << 30)
    except (OSError, AttributeError):
        ok = False
    return "glibc malloc pinned (no mmap, trim threshold 1 GiB)" if ok else "default malloc"


def sample(fn, number: int) -> float:
    """Seconds per call of ``fn``, over ``number`` calls."""
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def calibrate(fn, min_round_s: float = MIN_ROUND_S) -> int:
    """Warm up, then pick how many calls one timed sample makes."""
    fn()
    once = sample(fn, 1)
    return max(1, int(min_round_s / max(once, 1e-7)))


def machine() -> str:
    """CPU, core count, Python, NumPy and its BLAS, in one line."""
    import numpy as np

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or cpu
    blas = "unknown BLAS"
    try:
        info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{info['name']} {info.get('version', '')}".strip()
    except Exception:  # older NumPy has no mode="dicts"
        pass
    return (f"{cpu}, {os.cpu_count()} logical cores; Python {platform.python_version()}, "
            f"NumPy {np.__version__} with {blas}")


def write_section(heading: str, text: str, path: Path = RESULTS) -> None:
    """Replace only the section that starts with ``heading`` (other scripts own the rest)."""
    intro = ("# Benchmarks\n\nMeasurements of tinygrad_mha against plain NumPy. Each section is written "
             "by the script named in its heading; re-running a script replaces only its own section.\n")
    old = path.read_text() if path.exists() else intro
    lines = old.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
    if start is None:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new = "".join(lines[:start]) + text + ("\n" + "".join(lines[end:]) if end < len(lines) else "")
    path.write_text(new)
