"""A render job on the frame clock: its curves become each frame's parameter snapshot, its plan
each frame's walk times and temperature, its timelapse the checkpoint a frame shows.

Unlike a show's, a job's timeline has no memory: frame n's state is a pure function of n, so a
render may start anywhere (a part, a cluster worker's chunk) and the look-ahead can sample whole
groups aligned to absolute frame numbers from the states of frames it has not reached yet
(`state_of`, unstable.frame.lookahead).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..formats import exact
from ..renderjob import FramePlan
from ..schema import SHOW
from .curves import ParamCurves
from .timeline import FrameState
from .timers import FrameTimer

__all__ = ["JobTimeline"]


class JobTimeline:
    """The `Timeline` of a render job.

    `plan` (renderjob.FramePlan): frame count, exact walk times, the temperature curve, a
    timelapse's holds. `curves`: the job's keyframed parameters. `fixed`: {source: parameter
    values that do not move} (the job's `params` and each source's own). `sources` name the walks; with
    `timelapse_at` (walk seconds) the first source is a timelapse standing at that walk time.
    """

    def __init__(self, plan: FramePlan, curves: ParamCurves, fixed: Mapping[str, Mapping[str, float]],
                 sources: Sequence[str], timelapse_at: float | None = None):
        self.plan, self.curves = plan, curves
        self.timer = FrameTimer(plan.fps)
        self.fixed = {name: dict(fixed.get(name, {})) for name in sources}
        self.sources = list(sources)
        self.timelapse_at = None if timelapse_at is None else exact(timelapse_at)

    def advance(self, frame: int) -> FrameState:
        """Frame `frame`'s state (the same whenever asked)."""
        return self.state_of(frame)

    def state_of(self, frame: int) -> FrameState:
        """Frame `frame`'s snapshot ({source: fixed values and curves at the frame, "show":
        master_fade}), walk times, temperatures and, for a timelapse, checkpoints and crossfade."""
        snap = {name: {**fixed, **self.curves.values(name, self.curves.names(name), frame)}
                for name, fixed in self.fixed.items()}
        fade = self.curves.value(SHOW, "master_fade", frame)
        if fade is not None:
            snap[SHOW] = {"master_fade": fade}
        t = self.timer.time_of(frame)
        if self.timelapse_at is None:
            temperature = float(self.plan.temperatures(np.array([frame]))[0])
            return FrameState(frame, t, snap, (0, None, 0.0),
                              {name: self.walk_time(name, frame) for name in self.sources},
                              temperatures={name: temperature for name in self.sources})
        # A timelapse: the walk stands still at `at` (temperature of video time 0) and the
        # checkpoints follow each other, the last frames of each hold crossfading into the next.
        shown, fading_into, mix = self.plan.checkpoint_at(frame)
        temperature = float(self.plan.temperatures(np.array([0]))[0])
        first = self.sources[0]
        return FrameState(frame, t, snap, (0, 0 if fading_into is not None else None, mix),
                          {name: self.timelapse_at for name in self.sources},
                          temperatures={name: temperature for name in self.sources},
                          checkpoints={first: (shown, fading_into)})

    def walk_time(self, name: str, frame: int):
        """Source `name`'s walk time at `frame`: exact (start + frame x speed / fps, a Fraction),
        or through the integral of its `walk_speed` curve when it has one."""
        progress = self.curves.walk_progress(name, frame)
        if progress is None:
            return self.plan.walk_time(frame)
        return float(self.plan.start) + float(self.plan.speed) * progress

    def walk_times_ahead(self, name: str, frames: Sequence[int]) -> list:
        """Source `name`'s walk times at `frames` (exact: a job's walk depends on nothing else)."""
        return [self.walk_time(name, f) for f in frames]
