"""The slots a late live frame dropped still happen on the show clock.

A render draws every slot of the grid; a live show under load drops some (unstable.frame.timers).
If the show's timeline simply jumped over them, everything that runs on the timeline would run a
little differently from the render of the same automation: a scheduled scene change would fall
at the next drawn frame instead of its own slot (its crossfade, and every later scene's start,
shifted), a glide would take one long smoothing step instead of several, a walk phase would sum
other floats. So before a late frame the timeline advances through each dropped slot, without
pixels (parameters, scene changes, walk clocks, the automation: microseconds a slot), and live
frame n is rendered frame n, bit for bit, however many slots were dropped before it.

Audio: in a dropped slot the levels of the last drawn frame hold (as a replayed automation holds
them, so the render replays the same snapshots), and the next drawn frame shows the loudest of the
slots it skipped (unstable.audio.mapping: an onset is never lost to a late frame).
"""

from __future__ import annotations

from ..frame.timeline import FrameState, ShowTimeline

__all__ = ["SlotClock"]


class SlotClock:
    """Advances a live show's timeline frame by frame, through the slots dropped between them.

        clock = SlotClock(timeline)            # wraps timeline.audio, if any
        held = clock.catch_up(number)          # the dropped slots' actions (record, still, ...)
        state = clock.advance(number)          # the frame itself
    """

    def __init__(self, timeline: ShowTimeline):
        self.timeline = timeline
        self.last: int | None = None    # the last slot advanced
        self.slots = 0                  # dropped slots advanced without pixels
        self._audio = timeline.audio
        self._held: list[float] | None = None
        self._holding = False
        if self._audio is not None:
            timeline.audio = self       # levels() and apply() come through here

    # -- the audio modulator's side (unstable.audio.mapping.AudioModulator) ---------------------

    @property
    def input(self):
        return self._audio.input

    def levels(self, frame: int) -> list[float]:
        """The modulator's levels at `frame`; in a dropped slot, those of the last frame (held)."""
        if self._holding and self._held is not None:
            return list(self._held)
        self._held = self._audio.levels(frame)
        return self._held

    def apply(self, snapshot, levels) -> None:
        self._audio.apply(snapshot, levels)

    def set_levels(self, levels) -> None:
        self._audio.set_levels(levels)

    # -- frames ---------------------------------------------------------------------------------

    def catch_up(self, number: int) -> list:
        """Advance the timeline through the slots after the last one and before `number`; returns
        their actions (the frame acts on them). Nothing when `number` follows the last slot, or
        goes back (a test's jump in time)."""
        if self.last is None or number <= self.last + 1:
            return []
        actions = []
        self._holding = True
        try:
            for k in range(self.last + 1, number):
                actions += self.timeline.advance(k).actions
                self.slots += 1
        finally:
            self._holding = False
        self.last = number - 1
        return actions

    def advance(self, number: int, now: float | None = None) -> FrameState:
        """The frame `number` (at `now`, default its slot on the grid): `ShowTimeline.advance`."""
        state = self.timeline.advance(number, now)
        self.last = number
        return state
