"""glibc's allocator told to keep freed memory in the process, for PyTorch on a CPU.

Why: by default glibc hands every block of 128 KB or more straight back to the kernel when it is
freed (mmap/munmap, the threshold rising only as far as the largest block freed so far) and
trims the heap's top whenever 128 KB of it is free. A generator's activations are such blocks
([4, 16, 64, 64] float32 is 1 MB), allocated and freed hundreds of times a second, so every pass
touched fresh pages and the kernel zeroed them: at batch 4 the kernel's page faults cost about as
much as the convolutions (tests/bench/bench_speed.py; figures in docs/figures.md). With the
thresholds raised the same pages are used again.

Memory stays bounded: a process keeps at most what it once used at its peak plus TRIM_THRESHOLD
of free heap top; nothing grows over time that did not before.

`tune()` runs once when the `unstable` package is imported, so the show, its training and web
processes, render workers and Dask workers all get it. `UNSTABLE_MALLOC=0` keeps glibc's defaults.
Elsewhere than glibc (macOS, musl, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

__all__ = ["tune", "tuned", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "TOP_PAD"]

# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3

MMAP_THRESHOLD = 32 * 2**20  # glibc's largest allowed value on 64-bit: blocks below it come from the heap
TRIM_THRESHOLD = 128 * 2**20  # free heap top kept before glibc gives it back
TOP_PAD = 16 * 2**20  # extra asked of the kernel each time the heap grows

_tuned = False


def tuned() -> bool:
    """Whether `tune()` changed this process's allocator."""
    return _tuned


def tune() -> bool:
    """Raise glibc's mmap and trim thresholds (see the module doc); True when they were set."""
    global _tuned
    if _tuned:
        return True
    if os.environ.get("UNSTABLE_MALLOC", "1").strip() == "0" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; setting the mmap threshold also stops glibc moving it.
    _tuned = all(mallopt(param, value) == 1 for param, value in
                 ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_TOP_PAD, TOP_PAD)))
    return _tuned
