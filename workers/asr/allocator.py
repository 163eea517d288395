"""glibc's malloc told to keep freed memory mapped, so each batch reuses the last batch's pages.

Every recognizer call allocates and frees the same multi-MB tensors (front-end feature maps, attention and
feed-forward activations). With glibc's default, adaptive thresholds, freed memory at the top of the heap is
handed back to the kernel and the next batch touches fresh pages: ~2,400-3,500 minor page faults per batch-8
call on the 2-core box, 3-5 ms of a ~43 ms call (docs/model-card.md). Fixed thresholds keep those pages: the
resident set stays at one batch's peak instead of shrinking between batches.
"""

from __future__ import annotations

import ctypes
import ctypes.util

#: ``mallopt`` parameter numbers from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: glibc's ceiling for the mmap threshold on 64-bit (``DEFAULT_MMAP_THRESHOLD_MAX``): larger blocks are mmap'd.
MMAP_THRESHOLD_BYTES = 32 << 20
#: Free memory at the heap's top is returned to the kernel only beyond this.
TRIM_THRESHOLD_BYTES = 512 << 20


def retain_freed_memory() -> bool:
    """Apply the thresholds; False where the C library has no ``mallopt`` (musl, macOS), which changes nothing."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
