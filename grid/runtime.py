"""Process-level tuning that the batched torch kernels depend on for speed on CPU."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_TUNED = False

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_cpu_allocator() -> bool:
    """Keep large tensor buffers on the heap instead of fresh mmap()s.

    PyTorch's CPU allocator does not cache. Under glibc's defaults every temporary above
    128 KiB is mmap()ed and unmapped again, so a [1024, 100] float64 intermediate costs a
    round of page faults per operation; on virtual machines that made the elementwise part
    of a power-flow iteration 3 to 6 times slower than the arithmetic itself. Raising the
    mmap and trim thresholds lets glibc reuse freed blocks. Idempotent; returns True when
    the thresholds were set (glibc on Linux only).
    """
    global _TUNED
    if _TUNED:
        return True
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024) == 1
        ok = libc.mallopt(_M_TRIM_THRESHOLD, 1024 * 1024 * 1024) == 1 and ok
    except (OSError, AttributeError):
        return False
    _TUNED = ok
    return ok
