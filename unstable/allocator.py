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

jemalloc, where it is installed (Debian's libjemalloc2; scripts/setup.sh installs it): even tuned,
glibc's malloc spends several per cent of a training step sorting and merging the freed blocks of
a few MB that every pass makes and drops; jemalloc keeps such blocks in per-size classes and hands
them out again as they are. `exec_with_jemalloc()` starts the `unstable` command again, once, at
its entry (before any model or thread exists), with jemalloc preloaded and set up as
`torch.backends.xeon.run_cpu` sets it, but with purging off (as Intel's tuning guide for PyTorch
has it): freed memory is kept for reuse rather than handed back, so a process holds at most its
peak. Every process it starts inherits it: the show's
training and web processes, torchrun's ranks. A program that imports `unstable` itself can start
with `LD_PRELOAD=libjemalloc.so.2` for the same. `UNSTABLE_MALLOC=0` turns this off as well.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys

__all__ = ["tune", "tuned", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "TOP_PAD", "JEMALLOC_CONF", "exec_with_jemalloc",
           "jemalloc_library", "in_use"]

# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3

MMAP_THRESHOLD = 32 * 2**20  # glibc's largest allowed value on 64-bit: blocks below it come from the heap
TRIM_THRESHOLD = 128 * 2**20  # free heap top kept before glibc gives it back
TOP_PAD = 16 * 2**20  # extra asked of the kernel each time the heap grows

# torch.backends.xeon.run_cpu's settings for jemalloc under PyTorch, with purging off: freed pages
# stay with the process for the next pass (as the glibc tuning above keeps them), so no purging thread.
JEMALLOC_CONF = "oversize_threshold:1,background_thread:false,metadata_thp:auto,dirty_decay_ms:-1,muzzy_decay_ms:-1"

_tuned = False


def _enabled() -> bool:
    """UNSTABLE_MALLOC is not 0: the allocator may be tuned and jemalloc preloaded."""
    return os.environ.get("UNSTABLE_MALLOC", "1").strip() != "0"


def tuned() -> bool:
    """Whether `tune()` changed this process's allocator."""
    return _tuned


def tune() -> bool:
    """Raise glibc's mmap and trim thresholds (see the module doc); True when they were set."""
    global _tuned
    if _tuned:
        return True
    if not _enabled() or platform.libc_ver()[0] != "glibc":
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


def jemalloc_library() -> str | None:
    """The installed jemalloc's shared library name (e.g. libjemalloc.so.2), or None (Linux only)."""
    if sys.platform != "linux":
        return None
    return ctypes.util.find_library("jemalloc")


def in_use() -> str:
    """The allocator this process runs: "jemalloc", "glibc (tuned)" or "system" (for logs and tests)."""
    try:
        with open("/proc/self/maps") as maps:
            if any("libjemalloc" in line for line in maps):
                return "jemalloc"
    except OSError:
        pass
    return "glibc (tuned)" if _tuned else "system"


def exec_with_jemalloc() -> None:
    """Start this process again, same program, arguments and environment, with jemalloc preloaded
    (see the module doc); returns without doing anything where jemalloc is not installed, is
    already asked for in LD_PRELOAD (so this happens at most once), or UNSTABLE_MALLOC=0.

    Call it first thing at a program's entry: the process is replaced, nothing before it survives.
    """
    if not _enabled() or "libjemalloc" in os.environ.get("LD_PRELOAD", "") or not sys.executable:
        return
    library = jemalloc_library()
    if library is None:
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = f"{library}:{env['LD_PRELOAD']}" if env.get("LD_PRELOAD") else library
    env.setdefault("MALLOC_CONF", JEMALLOC_CONF)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    try:
        os.execve(sys.executable, sys.orig_argv, env)
    except OSError:  # the process carries on as it was, with glibc
        return
