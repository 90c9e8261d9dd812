"""Process-wide glibc malloc settings for running the model on CPU.

PyTorch's CPU tensors come straight from malloc. glibc hands big blocks back to the kernel as
soon as they are freed (blocks above its mmap threshold are unmapped, and free memory at the
top of the heap is trimmed), so the next model call maps the same memory again and takes a
page fault for every 4 KiB it touches. On the 2-core development machine that was a third of
the wall time of a scoring pass (`bench/allocator.py`). Keeping freed memory lets each call
reuse the last one's pages.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import sys

log = logging.getLogger("promptrec.allocator")

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20
"""Blocks up to this size come from the heap: glibc's ceiling for the setting on 64-bit. Model
calls are sized so their activations stay below it (`models.ranking.rows_per_call`)."""
TRIM_THRESHOLD = 256 << 20
"""Free memory the heap keeps for reuse before it gives any back to the kernel."""


@functools.cache
def retain_freed_memory() -> bool:
    """Apply the settings once per process; False where they cannot apply (not glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    # mallopt returns 1 on success; musl's stub returns 0 and changes nothing.
    applied = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    applied = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and applied
    if not applied:
        log.info("malloc settings not applied: this C library has no glibc mallopt")
    return applied
