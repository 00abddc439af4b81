"""Background work that leaves the frames alone: a worker thread of the show's own interpreter
(the channel clusters' and latent directions' refreshes) paces itself, working in short slices
with sleeps between them, so that in any frame it takes little of a core and of the GIL.

Why: such a worker holds the interpreter between its torch calls (a k-means of 50 small
iterations, hooks on every layer), and a torch call of its own gives the GIL back and takes it
again hundreds of times a second; the render thread, which needs the GIL between its own calls,
then waits behind it. At a lower CPU priority it is worse: the worker is descheduled while holding
the lock. Measured in the demo's network soak, the late frames were the frames during which a
refresh ran (docs/figures.md). A paced worker takes longer (a refresh of half a second spreads over
two), which nobody sees: the current clusters and directions bend and steer meanwhile.

The loops that do such work call `tick()` at natural points (a chunk of latents, a layer's hook,
a k-means iteration). On a thread without a pacer (`paced`), `tick()` returns at once: offline,
in `unstable train` and in a render the same code runs unpaced and gives the same numbers.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable, Iterator

__all__ = ["Pacer", "paced", "tick"]

_local = threading.local()


class Pacer:
    """Work at most `duty` of the wall time, in slices of at most about `slice_s` seconds.

    `tick()` after a slice of work longer than `slice_s` sleeps for the time that brings the share
    of work since the last sleep down to `duty`. A tick costs a clock read otherwise. While
    `unpaced()` is true (e.g. before the first frame, when nothing else needs the time) ticks never
    sleep. `clock` and `sleep` are parameters for the tests' sake only.
    """

    def __init__(self, duty: float = 0.25, slice_s: float = 0.004, *, unpaced: Callable[[], bool] | None = None,
                 clock: Callable[[], float] = time.perf_counter, sleep: Callable[[float], None] = time.sleep):
        if not 0.0 < duty <= 1.0:
            raise ValueError(f"pacing duty {duty!r}: expected a share of the time in (0, 1]")
        if slice_s <= 0:
            raise ValueError(f"pacing slice {slice_s!r}: expected a positive number of seconds")
        self.duty = float(duty)
        self.slice_s = float(slice_s)
        self._unpaced = unpaced
        self._clock = clock
        self._sleep = sleep
        self._since = clock()      # when the current slice of work began
        self.slept = 0.0           # seconds slept so far (a test's and a log's figure)
        self.ticks = 0

    def tick(self) -> None:
        """Sleep if this slice of work has run longer than `slice_s`."""
        self.ticks += 1
        if self.duty >= 1.0:
            return
        worked = self._clock() - self._since
        if worked < self.slice_s:
            return
        if self._unpaced is not None and self._unpaced():
            self._since = self._clock()
            return
        pause = worked * (1.0 - self.duty) / self.duty
        self._sleep(pause)
        self.slept += pause
        self._since = self._clock()


@contextlib.contextmanager
def paced(pacer: Pacer) -> Iterator[Pacer]:
    """Within this block, `tick()` on this thread paces by `pacer` (blocks nest: the innermost)."""
    outer = getattr(_local, "pacer", None)
    _local.pacer = pacer
    pacer._since = pacer._clock()  # a slice begins here, not when the pacer was made
    try:
        yield pacer
    finally:
        _local.pacer = outer


def tick() -> None:
    """A natural pause point of background work: sleeps when this thread is paced and has worked
    its slice; returns at once otherwise."""
    pacer = getattr(_local, "pacer", None)
    if pacer is not None:
        pacer.tick()
