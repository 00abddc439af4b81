"""Scenes on the frame clock: which scene shows, and the crossfade between two.

The same director runs in a live show and in its offline render: it only reads the frame time
it is given, so both see the same scene, crossfade mix and preset changes at the same frame.
"""

from __future__ import annotations

from typing import Sequence

from ..control.store import ParameterStore
from ..schema import SHOW
from ..show import SceneSettings

__all__ = ["SceneDirector"]


class SceneDirector:
    """Which scene shows, and the crossfade between two: auto-advance, jumps, presets.

    `scenes` are resolved (each has its layout and colour). `update(now)` returns (from_index,
    to_index or None, mix): draw `from` crossfading into `to` by `mix` (0..1). `go(i, now)` starts
    scene i: its parameter presets are applied, the crossfade runs for the new scene's `crossfade`
    seconds, and its duration counts from then.
    """

    def __init__(self, scenes: Sequence[SceneSettings], store: ParameterStore, *, loop: bool = True, now: float = 0.0):
        if not scenes:
            raise ValueError("a scene director needs at least one scene")
        self.scenes = list(scenes)
        self.loop = loop
        self.store = store
        self.current = 0
        self.previous: int | None = None
        self.started = now
        self.fade_len = 0.0
        self.changes = 0
        # unstable.tempo.BeatClock, set by the timeline: scenes in beats count on it.
        self.beats = None
        self.started_beat = 0.0
        self._apply(0)

    def _apply(self, i: int) -> None:
        presets = self.scenes[i].params
        if presets:
            self.store.update({p: dict(v) for p, v in presets.items()})
        if (SHOW, "scene") in self.store:
            self.store.set(SHOW, "scene", i)  # origin None: controllers follow, no event queued

    def mix(self, now: float) -> float:
        if self.previous is None or self.fade_len <= 0:
            return 1.0
        return min(max((now - self.started) / self.fade_len, 0.0), 1.0)

    def go(self, i: int, now: float) -> None:
        """Start scene `i` (clamped to the list) at time `now`."""
        i = min(max(int(i), 0), len(self.scenes) - 1)
        if i == self.current and self.previous is None:
            return
        # Interrupting a crossfade: continue from whichever scene dominated the picture.
        if self.previous is not None and self.mix(now) < 0.5:
            frm = self.previous
        else:
            frm = self.current
        self.previous = frm if frm != i else None
        self.current = i
        self.started = now
        self.started_beat = self.beats.beat if self.beats is not None else 0.0
        scene = self.scenes[i]
        # A crossfade in beats lasts its beats at the tempo the scene starts at.
        beats = getattr(scene, "crossfade_beats", 0.0)
        self.fade_len = beats * 60.0 / self.beats.bpm if beats and self.beats is not None else scene.crossfade
        self.changes += 1
        self._apply(i)

    def due(self, now: float, beat: float | None = None) -> bool:
        """Whether the current scene's duration has run out at `now` (at `beat`, default the beat
        clock's now). A duration in beats runs out on the first whole beat at or after its end."""
        scene = self.scenes[self.current]
        beats = getattr(scene, "duration_beats", 0.0)
        if beats > 0 and self.beats is not None:
            from ..tempo import BeatClock
            beat = self.beats.beat if beat is None else beat
            return beat >= BeatClock.on_beat(self.started_beat + beats) - 1e-6
        return scene.duration > 0 and now - self.started >= scene.duration

    def _after(self) -> int:
        """The scene that follows the current one when its duration runs out (itself: the last
        scene of a show that does not loop holds)."""
        nxt = self.current + 1
        if nxt >= len(self.scenes):
            nxt = 0 if self.loop else self.current
        return nxt

    def scheduled(self) -> int | None:
        """The scene the current one's duration will lead to on its own, or None (a scene without
        a duration, or the last scene holding). A jump (OSC, the page) comes unannounced."""
        if self.scenes[self.current].duration <= 0:
            return None
        nxt = self._after()
        return None if nxt == self.current else nxt

    def update(self, now: float) -> tuple[int, int | None, float]:
        """Advance scenes whose duration ran out; (from, to or None, mix) of the frame at `now`."""
        if self.due(now):
            nxt = self._after()
            if nxt != self.current:
                self.go(nxt, now)
            else:
                self.started = now  # the last scene holds: nothing more to count
                self.started_beat = self.beats.beat if self.beats is not None else 0.0
        m = self.mix(now)
        if self.previous is None or m >= 1.0:
            self.previous = None
            return self.current, None, 0.0
        return self.previous, self.current, m
