"""The frame clock of an offline render: any frame k on demand, from a timeline and a pipeline.

A render job's timeline knows every frame (`state_of`): frame k is its state, and the look-ahead's
groups are aligned to absolute frame numbers, so nothing before k matters. A show's timeline has a
memory (smoothing, scenes, walk phases): frame k of the show is reached by advancing through the
frames before it without pixels, and the look-ahead is primed with the `LookAhead.primed_frames`
frames just before k (sampled, not shown), so a part's batches, and so its pixels, are those of
one render from the start. Asked for an earlier frame than the last, it starts over with a fresh
timeline and pipeline.
"""

from __future__ import annotations

import time
from typing import Callable

from .lookahead import LookAhead
from .pipeline import FramePipeline, FrameResult
from .timeline import FrameState, Timeline

__all__ = ["FrameCursor"]


class FrameCursor:
    """Frames of an offline render: `frame(k, colour)` samples and composes frame k.

    `timeline()` makes the timeline at frame 0 (offset by `first`: frame k of the render is frame
    `first + k` of the timeline, an automation's start); `pipeline(timeline)` the pipeline over it.
    """

    def __init__(self, timeline: Callable[[], Timeline], pipeline: Callable[[Timeline], FramePipeline],
                 first: int = 0):
        self._make_timeline, self._make_pipeline = timeline, pipeline
        self.first = first
        self.timeline: Timeline
        self.pipeline: FramePipeline
        self.restart()
        self.sample_seconds = 0.0
        self.compose_seconds = 0.0

    def restart(self) -> None:
        """Start over from frame 0 with a fresh timeline and pipeline (nothing sampled is kept)."""
        self.timeline = self._make_timeline()
        self.pipeline = self._make_pipeline(self.timeline)
        self._next = 0

    def state(self, k: int) -> FrameState:
        """Render frame k's state (a show's timeline advanced to it)."""
        if self.timeline.state_of is None and k < self._next:
            self.restart()
        if self.timeline.state_of is not None:
            return self.timeline.advance(self.first + k)
        look = self.pipeline.look_ahead
        prime_from = k - LookAhead.primed_frames(look.size if look is not None else 1)
        while self._next < k:  # frames skipped over: the last few sampled (not shown), one noted
            state = self.timeline.advance(self.first + self._next)
            if self._next >= prime_from - 1:
                self.pipeline.prime(state, sample=self._next >= prime_from)
            self._next += 1
        self._next = k + 1
        return self.timeline.advance(self.first + k)

    def frame(self, k: int, colour=None) -> tuple[FrameState, FrameResult]:
        """Sample and compose render frame k (`colour`: a variation's grade instead of the
        scenes'); the picture is in the pipeline's compositor for the sinks."""
        state = self.state(k)
        result = self.pipeline.frame(state, colour)
        self.sample_seconds += result.sample_seconds
        self.compose_seconds += result.compose_seconds
        return state, result

    def compose(self, state: FrameState, result: FrameResult, colour=None) -> None:
        """Compose the frame of `result` again with another `colour` (one more variation)."""
        t0 = time.perf_counter()
        self.pipeline.compose(state, result.images, colour, result.next_images)
        self.compose_seconds += time.perf_counter() - t0
