"""Keep freed heap memory in the process for reuse (glibc only; elsewhere a no-op).

A batch-1 online step allocates and frees the same few MB-sized tensors every step (gradients
and EMAs of the 320-channel convs are 1.2 MB each). glibc serves blocks above its mmap threshold
with fresh mappings and returns freed memory at the heap's top to the kernel, so every step
touched new pages: ~500-1,000 page faults per FSNet step (measured with untrained weights, where they
cost ~12% of the step; the trained step was not re-measured separately). Raising the
mmap threshold and the trim threshold makes the heap reuse the blocks instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 2**20  # glibc's maximum on 64-bit
TRIM_THRESHOLD_BYTES = 256 * 2**20

_done = False


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds once per process; returns whether they were set."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mmap_set = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    _done = mmap_set and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    return _done
