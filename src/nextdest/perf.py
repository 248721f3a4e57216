"""Process-level speed settings for CPU training.

glibc's malloc serves every allocation above its mmap threshold (128 KiB at start, adapting up to
32 MiB) with a fresh ``mmap`` and gives it back with ``munmap`` on free, so a training loop that
allocates the same large activations every step page-faults them in every step: measured on the
2-core machine, the kernel took as much CPU time as the training itself. :func:`tune_allocator`
pins the threshold at glibc's maximum (32 MiB) and stops heap trimming, so freed blocks are reused.
Tensors above 32 MiB (the full-softmax logits of a large vocabulary) still come from mmap: the
``MALLOC_MMAP_THRESHOLD_`` environment variable, read at process start, can raise that further.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's upper bound for mallopt on 64-bit
_STATE = {"tuned": False}


def tune_allocator() -> str:
    """Raise glibc's mmap threshold and disable trimming for this process; returns what was done
    (a no-op, said so, where the C library is not glibc)."""
    if _STATE["tuned"]:
        return "tuned (mmap threshold 32 MiB, no trim)"
    if not sys.platform.startswith("linux"):
        return f"default ({sys.platform}: not glibc)"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1
    except (OSError, AttributeError):
        return "default (mallopt not available)"
    if not ok:
        return "default (mallopt refused)"
    _STATE["tuned"] = True
    return "tuned (mmap threshold 32 MiB, no trim)"
