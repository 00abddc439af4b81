"""Frame statistics of a live show: the per-second telemetry lines and the final report.

Bounded: a show runs for weeks. The report's percentiles cover the last hour or so at 30 fps
(fixed ring buffers); its fps and frame count cover the whole run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

try:
    import resource
except ImportError:  # not on this platform: the peak is unavailable too
    resource = None

from ..disk import RotatingLines
from ..errors import UnstableError

log = logging.getLogger("unstable.live")

__all__ = ["FrameStats", "LiveReport", "rss_bytes", "Ring"]

STATS_WINDOW = 120_000  # frame times kept for the report's percentiles (about an hour at 30 fps)
PHASES = ("sample", "compose", "output")


_statm: int | None = None   # /proc/self/statm, opened once and kept (see rss_bytes)
_statm_pid = 0              # whose: a forked child must open its own
_rss_last = 0
_rss_failed = False


def rss_bytes() -> int:
    """Resident memory of this process in bytes (the peak, where /proc is missing); never raises.

    Called every second of a show. It opens nothing per call, so it works when the process is out
    of file descriptors: /proc/self/statm is opened once and re-read in place, and `resource` is
    imported with this module (importing it on the spot needs a descriptor too, and a connection
    flood that used them all would end the show here). On any failure: the last value read, and one log line.
    """
    global _statm, _statm_pid, _rss_last, _rss_failed
    try:
        if _statm is None or _statm_pid != os.getpid():
            _statm_pid = os.getpid()
            _statm = os.open("/proc/self/statm", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        _rss_last = int(os.pread(_statm, 256, 0).split()[1]) * os.sysconf("SC_PAGE_SIZE")
        return _rss_last
    except (OSError, ValueError, IndexError, AttributeError) as e:
        why = e
    try:
        if resource is not None:
            _rss_last = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            return _rss_last
    except (OSError, ValueError) as e:
        why = e
    if not _rss_failed:
        _rss_failed = True
        log.warning("telemetry: cannot read this process's memory (%s); rss_mb repeats the last value", why)
    return _rss_last


class Ring:
    """The last `size` floats, in a buffer allocated once (no growth over a weeks-long show)."""

    def __init__(self, size: int):
        self._buf = np.zeros(size, dtype=np.float64)
        self._n = 0

    def append(self, v: float) -> None:
        self._buf[self._n % len(self._buf)] = v
        self._n += 1

    def __len__(self) -> int:
        return min(self._n, len(self._buf))

    def __array__(self, dtype=None, copy=None):
        return self._buf[:len(self)] if dtype is None else self._buf[:len(self)].astype(dtype)


def pct(values, q: float) -> float:
    """The q-th percentile of seconds, in milliseconds (0 for no values)."""
    return float(np.percentile(np.asarray(values), q)) * 1e3 if len(values) else 0.0


@dataclass
class LiveReport:
    """What a run did: frames, timing (ms), training, recordings, checkpoints, stills."""

    frames: int
    seconds: float
    fps: float
    interval_p50_ms: float
    interval_p99_ms: float
    work_p50_ms: float
    work_p99_ms: float
    late_frames: int
    steps: dict[str, int]
    steps_per_second: dict[str, float]
    recordings: list[str]
    checkpoints: list[str]
    stills: list[str]
    errors: dict[str, str]
    dropped_slots: int = 0      # grid slots late frames dropped (the timer's)
    repeated_frames: int = 0    # of those, the slots recordings filled with the frame before


class FrameStats:
    """Frame intervals, work times and phase times: for the whole run and for the last second."""

    def __init__(self, telemetry: str | os.PathLike | None = None, max_bytes: int = 0):
        self.intervals = Ring(STATS_WINDOW)
        self.works = Ring(STATS_WINDOW)
        self.interval_sum = 0.0
        self.interval_count = 0
        self._sec_intervals: list[float] = []
        self._sec_works: list[float] = []
        self.phases: dict[str, list[float]] = {k: [] for k in PHASES}
        self._last_start: float | None = None
        self._file = None
        if telemetry is not None:
            # Appended to across restarts, rotated past `max_bytes` (one older file kept).
            try:
                self._file = RotatingLines(telemetry, max_bytes=max_bytes, keep=1, buffering=1)
            except OSError as e:
                raise UnstableError(f"--telemetry {telemetry}: cannot write it ({e.strerror or e})") from None

    def frame_started(self, begin: float) -> None:
        """A frame began at wall time `begin` (seconds)."""
        if self._last_start is not None:
            iv = begin - self._last_start
            self.intervals.append(iv)
            self.interval_sum += iv
            self.interval_count += 1
            self._sec_intervals.append(iv)
        self._last_start = begin

    def frame_done(self, work: float) -> None:
        """The frame's work took `work` seconds."""
        self.works.append(work)
        self._sec_works.append(work)

    def phase(self, name: str, seconds: float) -> None:
        self.phases[name].append(seconds)

    def timing(self) -> dict[str, float]:
        """The last second's frame rate and frame, work and phase times (ms)."""
        iv, wk = self._sec_intervals, self._sec_works
        return {
            "fps": round(len(iv) / max(sum(iv), 1e-9), 2) if iv else 0.0,
            "frame_ms_p50": round(pct(iv, 50), 2), "frame_ms_p99": round(pct(iv, 99), 2),
            "work_ms_p50": round(pct(wk, 50), 2), "work_ms_p99": round(pct(wk, 99), 2),
            **{f"{k}_ms_p50": round(pct(v, 50), 2) for k, v in self.phases.items()},
        }

    def second(self, line: Mapping[str, Any]) -> dict[str, float]:
        """Write one telemetry line (timing of the last second added) and start the next second;
        returns that second's timing."""
        timing = self.timing()
        if self._file is not None:
            head = {k: line[k] for k in ("t", "frame") if k in line}
            rest = {k: v for k, v in line.items() if k not in head}
            try:
                self._file.write(json.dumps({**head, **timing, **rest}) + "\n")
            except OSError as e:  # a full disk: telemetry stops, the show goes on
                log.error("telemetry stopped: %s (the show goes on)", e)
                with contextlib.suppress(OSError):
                    self._file.close()
                self._file = None
        self._sec_intervals.clear()
        self._sec_works.clear()
        for v in self.phases.values():
            v.clear()
        return timing

    @property
    def pending(self) -> bool:
        """Frames drawn since the last telemetry line (a show's last, partial second)."""
        return bool(self._sec_works)

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    def summary(self) -> dict[str, float]:
        """Seconds, fps and percentiles (ms) over the run, for the report."""
        elapsed = self.interval_sum
        return {"seconds": round(elapsed, 3),
                "fps": round(self.interval_count / elapsed, 2) if elapsed > 0 else 0.0,
                "interval_p50_ms": round(pct(self.intervals, 50), 2),
                "interval_p99_ms": round(pct(self.intervals, 99), 2),
                "work_p50_ms": round(pct(self.works, 50), 2), "work_p99_ms": round(pct(self.works, 99), 2)}
