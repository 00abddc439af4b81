"""The two timers of the frame pipeline: frame number x exact fps (offline) and the wall clock (live).

Both put frames on one grid: frame n is at `n / fps` seconds, computed the same way by both, so a
live frame and the offline frame with the same number have bit-identical times (and so the same
parameter smoothing, walk phase and scene). The live timer only decides *which* slot of that grid
comes next: a late frame skips the slots it missed instead of hurrying the next ones
(moderngl-window's timers: one injectable clock, two drivers).
"""

from __future__ import annotations

import time
from fractions import Fraction
from typing import Callable

__all__ = ["FrameTimer", "WallTimer"]


class FrameTimer:
    """Frame number -> seconds on the frame clock, exactly `n / fps` (offline renders, and the grid
    the live timer schedules on)."""

    def __init__(self, fps: Fraction | float | int):
        self.fps = Fraction(fps) if not isinstance(fps, float) else Fraction(repr(fps))
        if self.fps <= 0:
            raise ValueError(f"fps {fps!r}: expected a positive frame rate")

    def time_of(self, frame: int) -> float:
        """Seconds of frame `frame` (exact Fraction, rounded once to a float)."""
        return float(Fraction(int(frame)) / self.fps)


class WallTimer(FrameTimer):
    """Live pacing on the frame grid: `wait(n)` sleeps until frame n is due, `next_after(n)` is the
    slot to draw after frame n (n + 1 when on time, the first slot still ahead when late).

    `time_source` is injectable (tests drive a show with simulated time); `sleep` likewise.
    """

    def __init__(self, fps, time_source: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], object] = time.sleep):
        super().__init__(fps)
        self.now = time_source
        self.sleep = sleep
        self.start = self.now()
        self.late = 0

    def restart(self) -> None:
        """Frame 0 is due now."""
        self.start = self.now()
        self.late = 0

    def elapsed(self) -> float:
        """Wall seconds since frame 0 was due."""
        return self.now() - self.start

    def wait(self, frame: int) -> None:
        """Sleep until frame `frame` is due (returns at once when it already is)."""
        remaining = self.time_of(frame) - self.elapsed()
        if remaining > 0:
            self.sleep(remaining)

    def next_after(self, frame: int) -> int:
        """The next slot to draw once frame `frame` is done: a frame that overran its slot drops
        the slots it ran into (counted in `late`), so a hiccup costs frames, never a burst."""
        nxt = frame + 1
        now = self.elapsed()
        if now > self.time_of(nxt):
            self.late += 1
            # The first slot that is still ahead of now.
            nxt = int(Fraction(repr(now)) * self.fps) + 1
        return nxt
