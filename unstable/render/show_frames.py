"""The frames of a show rendered offline: the live show's own timeline and pipeline, driven by
frame numbers instead of the wall clock.

The weights come from the show's run folders (`runs/live/<show>/<piece>/checkpoint.pt`, what
`unstable live` trained); everything else that decides a frame (parameter values and their
smoothing, scenes and crossfades, walk phases and `walk_speed`, colour) comes from the same
`ShowTimeline` a live show advances, from the show's start or from an automation file's. Frames
are sampled one at a time, as live: with training off, frame n here is frame n of the live show,
pixel for pixel (tests/test_one_pipeline.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import torch

from ..control.store import ParameterStore
from ..errors import ConfigError, UnstableError
from ..frame.automation import Automation
from ..frame.lookahead import LookAhead
from ..frame.pipeline import FramePipeline
from ..frame.sources import PanelSource, load_run_into, make_walk
from ..frame.timeline import ShowTimeline
from ..formats import exact
from ..show import Show, display_name
from ..show_systems import build_systems, show_groups
from .job_sources import file_identity

__all__ = ["ShowFrames", "ShowPlan"]


@dataclass(frozen=True)
class ShowPlan:
    """How many frames a show render has, at which rate (the show's walk runs at its own speed)."""

    frames: int
    fps: Fraction
    speed: Fraction = Fraction(1)


class ShowFrames:
    """Frame k of the render is frame `first + k` of the show (first: 0, or the automation's start)."""

    def __init__(self, show: Show, run_dir: Path, device: torch.device, frames: int,
                 automation: Automation | None = None, audio=None):
        self.show, self.device, self.automation = show, device, automation
        self.audio = audio  # unstable.audio.mapping.FileInput, or None
        self.run_dir = Path(run_dir)
        s = show.settings
        systems = build_systems(show, device)
        self.groups = show_groups(show, systems)
        self._identity = [{"show": hashlib.sha256(Path(show.source).read_bytes()).hexdigest()}]
        for name, system in systems.items():
            ckpt = self.run_dir / name / "checkpoint.pt"
            if not ckpt.is_file():
                raise ConfigError(show.source, f"pieces.{name}", f"no trained weights at {ckpt} (play the show "
                                  "first: `unstable live`, or give --run the show's run folder)")
            try:
                payload = load_run_into(system, ckpt, device)
            except UnstableError as e:
                raise ConfigError(show.source, f"pieces.{name}", str(e)) from None
            self._identity.append({**file_identity(ckpt), "step": int(payload.get("step", 0))})
        if audio is not None:
            self._identity.append({"audio": file_identity(audio.path)})
        if automation is not None:
            self._identity.append(file_identity(automation.path))
            if automation.fps != exact(s.fps):
                raise UnstableError(f"--automation {automation.path}: recorded at {automation.fps} fps, the show "
                                    f"runs at {s.fps:g} fps")
        self.sources = {name: PanelSource(name, system, system, make_walk(name, system, s.walk, device, show.source),
                                          {display_name(name, p): p for p in system.panels()})
                        for name, system in systems.items()}
        self.panel_names = [d for src in self.sources.values() for d in src.panels]
        self.first = automation.start_frame if automation is not None else 0
        self.plan = ShowPlan(frames, exact(s.fps))
        self.pipeline: FramePipeline | None = None
        self.timeline: ShowTimeline | None = None
        self._next = 0
        self.generation_seconds = 0.0

    def identity(self) -> list:
        """What decides the pixels besides the render settings (for the resume manifest)."""
        return self._identity

    def bind(self, compositor) -> None:
        """Compose through `compositor` from now on."""
        # The live show's look-ahead, so the batches (and so the pixels) are the live show's.
        self.pipeline = FramePipeline(self.sources, self.show.resolved_scenes(), compositor,
                                      look_ahead=self.show.settings.look_ahead, walk_ahead=self._walk_ahead)

    def _restart(self) -> None:
        s = self.show.settings
        store = ParameterStore(self.groups)
        modulator = None
        if s.audio.map:
            from ..audio.mapping import AudioModulator
            specs = {k: store.spec(*k) for k in store.keys()}
            modulator = AudioModulator(s.audio.map, specs, self.plan.fps, self.audio)
        self.timeline = ShowTimeline(self.show.resolved_scenes(), store, list(self.sources), s.fps,
                                     loop=s.loop_scenes, start_values={n: e.params for n, e in s.pieces.items()},
                                     audio=modulator)
        if self.automation is not None:
            self.timeline.replay(self.automation)
        self._next = 0

    def _walk_ahead(self, name: str, frames):
        return self.timeline.walk_times_ahead(name, frames)

    def state(self, k: int):
        """The timeline's state at render frame k (advancing through skipped frames without drawing)."""
        if self.timeline is None or k < self._next:
            self._restart()
        # Frames skipped over (a part that starts at k): the last few are sampled (not drawn), the
        # one before them noted, so the look-ahead holds what it would had the render drawn them.
        prime_from = k - LookAhead.primed_frames(self.show.settings.look_ahead)
        while self._next < k:
            state = self.timeline.advance(self.first + self._next)
            if self._next >= prime_from - 1 and self.pipeline is not None:
                self.pipeline.prime(state, sample=self._next >= prime_from)
            self._next += 1
        self._next = k + 1
        return self.timeline.advance(self.first + k)

    def draw(self, k: int, variations: Sequence):
        """Compose render frame k with the show's own colours; yields once per variation."""
        import time
        state = self.state(k)
        t0 = time.perf_counter()
        images = self.pipeline.images(state)
        self.generation_seconds += time.perf_counter() - t0
        for v in variations:
            self.pipeline.compose(state, images)
            yield v
