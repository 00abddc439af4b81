"""The two timers of the frame pipeline: frame number x exact fps (offline) and the wall clock (live).

Both put frames on one grid: frame n is at `n / fps` seconds, computed the same way by both, so a
live frame and the offline frame with the same number have bit-identical times (and so the same
parameter smoothing, walk phase and scene). The live timer only decides *which* slot of that grid
comes next: a frame that ends a little late (within half a slot) is followed at once by the next
slot, which catches up; one that ends later skips the slots it missed instead of hurrying through
them (moderngl-window's timers: one injectable clock, two drivers).
"""

from __future__ import annotations

import math
import time
from fractions import Fraction
from typing import Callable

from ..formats import exact

__all__ = ["FrameTimer", "WallTimer"]


class FrameTimer:
    """Frame number -> seconds on the frame clock, exactly `n / fps` (offline renders, and the grid
    the live timer schedules on)."""

    def __init__(self, fps: Fraction | float | int):
        self.fps = exact(fps)
        if self.fps <= 0:
            raise ValueError(f"fps {fps!r}: expected a positive frame rate")

    def time_of(self, frame: int) -> float:
        """Seconds of frame `frame` (exact Fraction, rounded once to a float)."""
        return float(Fraction(int(frame)) / self.fps)


class WallTimer(FrameTimer):
    """Live pacing on the frame grid: `wait(n)` sleeps until frame n is due, `next_after(n)` is the
    slot to draw after frame n (n + 1 when on time or less than `catch_up` slots late, else the
    first slot not yet `catch_up` slots overdue).

    Why catch up at all: on a busy CPU a frame's work sometimes runs a few milliseconds past its
    slot. Dropping the next slot then shows a 2-slot hole (66.7 ms at 30 fps); drawing it at once,
    a few milliseconds late, shows a jitter of those milliseconds and the following frames are
    back on the grid. Beyond half a slot, catching up would mean a burst of frames, so those slots
    are dropped: `late` counts the frames that dropped slots, `dropped` the slots (a recording
    repeats its last frame in each, unstable.live.recorder). Frame numbers, and so frame content,
    never depend on this.

    `time_source` is injectable (tests drive a show with simulated time); `sleep` likewise.
    """

    def __init__(self, fps, time_source: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], object] = time.sleep, catch_up: float = 0.5):
        super().__init__(fps)
        if not 0.0 <= catch_up < 1.0:
            raise ValueError(f"catch_up {catch_up!r}: expected a fraction of a slot in [0, 1)")
        self.catch_up = exact(catch_up)
        self.now = time_source
        self.sleep = sleep
        self.start = self.now()
        self.late = 0
        self.dropped = 0

    def restart(self) -> None:
        """Frame 0 is due now."""
        self.start = self.now()
        self.late = 0
        self.dropped = 0

    def elapsed(self) -> float:
        """Wall seconds since frame 0 was due."""
        return self.now() - self.start

    def wait(self, frame: int) -> None:
        """Sleep until frame `frame` is due (returns at once when it already is)."""
        remaining = self.time_of(frame) - self.elapsed()
        if remaining > 0:
            self.sleep(remaining)

    def next_after(self, frame: int) -> int:
        """The next slot to draw once frame `frame` is done: n + 1 while it is less than `catch_up`
        of a slot overdue (drawn at once), else the first slot that is not (the skipped slots
        are counted in `dropped`, the frame in `late`), so a hiccup costs frames, never a burst."""
        nxt = frame + 1
        now = exact(self.elapsed())
        if now > (nxt + self.catch_up) / self.fps:
            self.late += 1
            # The first slot k with k / fps + catch_up / fps >= now.
            nxt = max(nxt + 1, math.ceil(now * self.fps - self.catch_up))
            self.dropped += nxt - frame - 1
        return nxt
