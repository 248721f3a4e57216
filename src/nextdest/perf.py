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
import os
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


def reset_peak_rss() -> bool:
    """Reset this process's peak resident set size (Linux: ``/proc/self/clear_refs``), so that
    :func:`peak_rss_mib` measures from here on; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (since the last :func:`reset_peak_rss`)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def resolve_parallelism(workers: int, num_threads: int, device: str, n_jobs: int) -> tuple[int, list[int]]:
    """How ``n_jobs`` independent (fold, seed) trainings run: (worker processes, torch threads of
    each job, in job order).

    On the CPU the default (``workers`` 0) is one worker per core, each single-threaded: on the
    2-core machine two 1-thread processes train about 1.35x more rows per second than one 2-thread
    process, and they stay fast when another program is busy, where OpenMP's spinning threads can
    slow a 2-thread step twenty-fold (BENCHMARKS.md, train-speed). Jobs left over after the full
    rounds (5 folds on 2 workers: the fifth) share every core among themselves instead of leaving
    cores idle. A job's thread count is fixed by this plan, never by scheduling, so results are
    reproducible. On CUDA one worker. ``num_threads`` > 0 fixes every job's thread count.
    """
    cores = os.cpu_count() or 1
    w = 1 if device == "cuda" else (workers or cores)
    w = max(1, min(w, n_jobs))
    if num_threads:
        return w, [num_threads] * n_jobs
    full = n_jobs - n_jobs % w if n_jobs > w else n_jobs
    rest = n_jobs - full
    return w, [max(1, cores // w)] * full + [max(1, cores // rest)] * rest if rest else [max(1, cores // w)] * full
