"""A show on the frame clock: parameter values (smoothed), scenes and crossfades, each piece's walk
phase, and the automation in and out. Everything about a frame except the weights and the pixels.

`Timeline.advance(n)` is the first half of every frame: `ShowTimeline` of a live show and of its
offline render alike, `JobTimeline` (unstable.frame.job_timeline) of a render job. The same code at
the same frame time gives the same `FrameState`, which is what makes a live frame and a rendered
frame the same picture.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

from ..control.store import ParameterStore
from ..walk import WalkClock
from .automation import Automation, AutomationRecorder
from ..tempo import BeatClock
from .scenes import SceneDirector
from .timers import FrameTimer

__all__ = ["FrameState", "ShowTimeline", "Timeline"]


@dataclass
class FrameState:
    """Everything a frame is drawn from besides the weights."""

    frame: int
    t: float                                        # seconds on the frame clock
    snapshot: dict[str, dict[str, float]]           # {group: {name: value}}, smoothed
    scenes: tuple[int, int | None, float]           # (from, to or None, mix)
    walk_times: dict[str, float]                    # piece -> walk seconds (a job's: exact Fractions)
    actions: list = field(default_factory=list)     # show actions for the driver (record, still)
    targets: dict = field(default_factory=dict)     # {group: {name: target}}: where gliding values go
    upcoming: tuple[int, int] | None = None         # (frame, scene): a scheduled scene change coming soon
    temperatures: dict = field(default_factory=dict)  # piece -> latent scale (a job's curve); absent: its walk's
    checkpoints: dict = field(default_factory=dict)   # piece -> (checkpoint shown, the one faded into or None)


class Timeline(Protocol):
    """The first half of every frame: a show's (scenes, parameters, automation, tempo) or a render
    job's (curves, plan, timelapse). The drivers advance one; the pipeline draws its states."""

    timer: FrameTimer
    # `state_of(frame)` when every frame's state is known ahead, a pure function of its number (a
    # job's); None when frames depend on the ones before (a show's: advance in frame order).
    state_of: Callable[[int], FrameState] | None

    def advance(self, frame: int) -> FrameState:
        """The state of frame `frame` (a show's timeline moves on to it: call in frame order)."""

    def walk_times_ahead(self, name: str, frames: Sequence[int]) -> list[float]:
        """Piece `name`'s walk times at the coming `frames`, as `advance` will give them."""


class ShowTimeline:
    """The time-varying state of a show: one per live show, one per offline render of it.

    `scenes` are resolved (`Show.resolved_scenes()`); `pieces` name the walk clocks. The store
    starts at the show's starting values and scene 0's presets, settled. `walk_bpm` (`Show.walk_tempo`):
    the walk's period was given in beats and is its seconds at this tempo, so the walk clocks run at
    walk_speed x tempo / walk_bpm; None: a period in seconds, the clocks run at walk_speed.
    """

    state_of = None  # frame n follows from the frames before it (smoothing, scenes, walk phases)

    # How far ahead a scheduled scene change is announced in `FrameState.upcoming` (the frame
    # pipeline samples the next scene's new panels in the frames before it).
    UPCOMING_FRAMES = 8

    def __init__(self, scenes: Sequence, store: ParameterStore, pieces: Sequence[str], fps, *, loop: bool = True,
                 start_values: Mapping[str, Mapping[str, float]] | None = None, audio=None,
                 walk_bpm: float | None = None):
        self.timer = FrameTimer(fps)
        self.store = store
        if start_values:
            store.update({p: dict(v) for p, v in start_values.items() if v})
        self.director = SceneDirector(scenes, store, loop=loop)
        # Beats on the frame clock, from the show's `tempo` (scenes in beats and bars count on them).
        self.beats = BeatClock(store.get("show", "tempo") if ("show", "tempo") in store else 120.0)
        self.director.beats = self.beats
        store.settle()
        self.now = 0.0
        self.clocks = {name: WalkClock(time_source=self._clock_time) for name in pieces}
        self.walk_bpm = None if walk_bpm is None else float(walk_bpm)
        self.recorder: AutomationRecorder | None = None
        self.automation: Automation | None = None
        # unstable.audio.mapping.AudioModulator: audio features move mapped parameters in the
        # snapshot (never the targets), recorded as each frame's levels.
        self.audio = audio

    def _clock_time(self) -> float:
        return self.now

    # -- the frame ------------------------------------------------------------------------------

    def advance(self, frame: int, t: float | None = None) -> FrameState:
        """Frame `frame` at `t` (default: its place on the grid, frame / fps): replayed changes go in,
        the snapshot is taken, scene jumps handled, scenes and walk clocks move on."""
        t = self.timer.time_of(frame) if t is None else float(t)
        self.now = t
        if self.automation is not None:
            self._replay(frame)
        targets: dict = {}
        snap = self.store.snapshot(t, targets=targets)
        show = snap.get("show", {})
        offset_before = self.beats.offset
        self.beats.advance(t, show.get("tempo"), show.get("beat_offset"))
        moved = self.beats.offset - offset_before  # beats a Link alignment moved the count by
        levels = None
        if self.audio is not None:
            levels = self.audio.levels(frame)
            self.audio.apply(snap, levels)
        jumps, actions = [], []
        for ev in self.store.drain_events():
            if ev.kind == "scene":
                jumps.append(int(ev.value))
                self.director.go(int(ev.value), t)
            else:
                actions.append(ev)
        if self.recorder is not None:
            self.recorder.capture(frame, t, targets, jumps, levels)
        scenes = self.director.update(t)
        walk_times = {}
        for name, clock in self.clocks.items():
            speed = snap.get(name, {}).get("walk_speed", 1.0)
            if self.walk_bpm is not None:
                # A period in beats: walk seconds per second follow the tempo (the beat clock's,
                # a non-finite one already refused). Through the clock's speed, so the time since the
                # last frame runs at the tempo it had (as the beats do) and a change never jumps.
                speed *= self.beats.bpm / self.walk_bpm
            clock.speed = speed
            if moved and self.walk_bpm is not None:
                # A Link alignment moves the walk with the beat count (as far as walk_speed walks
                # in those beats), so a loop in beats stands on the session's beat as scenes do.
                clock.phase = clock.phase + moved * speed * 60.0 / self.beats.bpm  # walk s a beat now
            walk_times[name] = clock.tick()
        return FrameState(frame, t, snap, scenes, walk_times, actions, targets, self._upcoming(frame))

    def _upcoming(self, frame: int) -> tuple[int, int] | None:
        """(frame, scene) of the scheduled scene change within the next UPCOMING_FRAMES frames, if
        one is: the frame the director's `update` will make it at, from the same frame times."""
        scene = self.director.scheduled()
        if scene is None:
            return None
        for n in range(frame + 1, frame + 1 + self.UPCOMING_FRAMES):
            tn = self.timer.time_of(n)
            if self.director.due(tn, beat=self.beats.ahead(tn)):
                return n, scene
        return None

    def walk_times_ahead(self, name: str, frames: Sequence[int]) -> list[float]:
        """Piece `name`'s walk times at the coming `frames` (after the last advanced one) if its
        walk_speed stays as it is now: what `advance` will give them, bit for bit, unless it changes."""
        return self.clocks[name].ahead([self.timer.time_of(f) for f in frames])

    def _replay(self, frame: int) -> None:
        change = self.automation.at(frame)
        if not change:
            return
        if "set" in change:
            self.store.update(change["set"])
        for s in change.get("scenes", ()):
            self.store.post_event("scene", float(s))
        if "audio" in change and self.audio is not None and self.audio.input is None:
            self.audio.set_levels(change["audio"])

    # -- state: automation headers, resumed shows ----------------------------------------------

    def resume_state(self) -> dict[str, Any]:
        """Everything a replay needs to go on from the last frame, in plain numbers (an automation
        header's `state`); not a FrameState, which is one frame's."""
        d = self.director
        return {
            "store": self.store.smoothing_state(),
            "scene": {"current": d.current, "previous": d.previous, "started": d.started,
                      "fade_len": d.fade_len, "started_beat": d.started_beat},
            "beat": {"beat": self.beats.beat, "bpm": self.beats.bpm, "t": self.beats.t, "offset": self.beats.offset},
            "walk": {n: {"phase": c.phase, "speed": c.speed, "at": self.now} for n, c in self.clocks.items()},
        }

    def load_resume_state(self, state: Mapping[str, Any]) -> None:
        """Continue from `resume_state()` (values the schema does not know are skipped)."""
        self.store.load_smoothing_state(state.get("store", {}))
        scene = state.get("scene") or {}
        d = self.director
        if "current" in scene:
            d.current = min(max(int(scene["current"]), 0), len(d.scenes) - 1)
            prev = scene.get("previous")
            d.previous = None if prev is None else min(max(int(prev), 0), len(d.scenes) - 1)
            d.started = float(scene.get("started", 0.0))
            d.fade_len = float(scene.get("fade_len", 0.0))
            d.started_beat = float(scene.get("started_beat", 0.0))
        beat = state.get("beat") or {}
        if "beat" in beat:
            self.beats.beat, self.beats.bpm = float(beat["beat"]), float(beat.get("bpm", self.beats.bpm))
            self.beats.t = None if beat.get("t") is None else float(beat["t"])
            self.beats.offset = float(beat.get("offset", 0.0))
        for name, w in (state.get("walk") or {}).items():
            clock = self.clocks.get(name)
            if clock is None:
                continue
            self.now = float(w.get("at", self.now))
            clock.load_state_dict({"phase": w["phase"], "speed": w["speed"]})

    def start_recording(self, path, show: str, frame: int, max_bytes: int | None = None) -> AutomationRecorder:
        """Record automation from frame `frame` on (call before that frame's `advance`); the file
        stops past `max_bytes` (default AutomationRecorder.MAX_BYTES; 0: no cap)."""
        self.stop_recording()
        self.recorder = AutomationRecorder(path, show=show, fps=self.timer.fps, start_frame=frame,
                                           state=self.resume_state(), targets=self.store.targets(), max_bytes=max_bytes)
        return self.recorder

    def stop_recording(self, quiet: bool = False) -> str | None:
        """Finish the automation file, if one is being written; returns why writing it failed, if
        it did (logged unless `quiet`)."""
        if self.recorder is not None:
            rec, self.recorder = self.recorder, None
            return rec.close(quiet)
        return None

    def replay(self, automation: Automation) -> int:
        """Play `automation` from its start: loads its start state; returns its first frame."""
        self.automation = automation
        self.load_resume_state(automation.state)
        return automation.start_frame
