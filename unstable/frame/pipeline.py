"""The one frame pipeline: panel sources -> images at a time for one snapshot -> compose -> sinks.

    timeline = ShowTimeline(show.resolved_scenes(), store, pieces, fps)   # or a job's JobTimeline
    pipeline = FramePipeline(sources, show.resolved_scenes(), compositor)
    state = timeline.advance(n)          # snapshot, scenes, walk times (a job: checkpoints) of frame n
    result = pipeline.frame(state)       # sample + compose: FrameResult(images, errors, timings)
    for sink in sinks:                   # window, encoder, still, preview (unstable.frame.sinks)
        sink.put(n, compositor)

`unstable live` drives it with the wall-clock timer, `unstable render` (shows and jobs) with frame
numbers; neither walks, samples or composes on its own.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch

from ..schema import with_common
from .compose import Composer
from .lookahead import LookAhead
from .sources import PanelSource
from .timelapse import TimelapseSource
from .timeline import FrameState

log = logging.getLogger("unstable.frame")

__all__ = ["FramePipeline", "FrameResult"]


@dataclass
class FrameResult:
    """What one frame call made (StyleGAN3's viz renderer returns the like): the panel images,
    the failures it held over, and where the time went."""

    frame: int
    images: dict[str, torch.Tensor]                  # {display: [3, H, W]} the frame showed
    next_images: dict[str, torch.Tensor] | None = None  # a timelapse crossfade's other checkpoint
    errors: dict[str, str] = field(default_factory=dict)  # source -> "Type: message" (hold_failures)
    sample_seconds: float = 0.0                      # walks + sampling (+ a timelapse's weights)
    compose_seconds: float = 0.0                     # compose into the compositor (GL calls)


class FramePipeline:
    """Samples the sources a frame shows and composes them with the frame's scenes.

    `scenes` are resolved scene settings (each with `layout` and `colour`). `hold_failures`: a
    source whose sampling raises holds its panels' last images (black before the first) and the
    frame goes on (a live show); otherwise the error propagates (a render must not hide it).
    `look_ahead` > 1 with `walk_ahead` (the timeline's `walk_times_ahead`) samples that many frames
    per call and keeps the ones to come (unstable.frame.lookahead): the same pictures, cheaper.
    `state_of` (a timeline that knows every frame ahead, a render job's) makes those groups aligned
    to absolute frame numbers instead of staggered.
    """

    def __init__(self, sources: Mapping[str, PanelSource], scenes: Sequence, compositor, *,
                 hold_failures: bool = False, look_ahead: int = 1,
                 walk_ahead: Callable[[str, Sequence[int]], list[float]] | None = None,
                 state_of: Callable[[int], FrameState] | None = None):
        self.sources = dict(sources)
        self.scenes = list(scenes)
        self.compositor = compositor
        self.hold_failures = hold_failures
        self.piece_of = {d: name for name, s in self.sources.items() for d in s.panels}
        self.composer = Composer(compositor, self.piece_of)
        self._shown: dict[tuple, frozenset] = {}
        self._blank: dict[str, torch.Tensor] = {}
        self._held: dict[str, torch.Tensor] = {}  # display -> its last good [3, H, W] (held on failure)
        self._failures = {name: 0 for name in self.sources}  # sampling failures in a row
        # Sampling `look_ahead` frames per call (unstable.frame.lookahead); needs the timeline's
        # walk-time prediction. 1: one frame per call.
        self.look_ahead: LookAhead | None = None
        if look_ahead > 1 and walk_ahead is not None:
            reads = {name: {p.name: p.reads for p in with_common(s.system.param_specs())}
                     for name, s in self.sources.items()}
            self.look_ahead = LookAhead(look_ahead, list(self.piece_of), walk_ahead, reads, state_of=state_of)

    def shown(self, scenes: tuple[int, int | None, float]) -> frozenset:
        """Display names the scenes of a frame show (cached per scene pair)."""
        key = (scenes[0], scenes[1])
        hit = self._shown.get(key)
        if hit is None:
            names = list(self.piece_of)
            hit = frozenset(n for i in key if i is not None for n in self.scenes[i].layout.panel_names(names) if n)
            self._shown[key] = hit
        return hit

    def frame(self, state: FrameState, colour=None) -> FrameResult:
        """The one frame call: sample the frame's panels and compose them (with `colour` instead of
        the scenes' grade when given); the picture is then in the compositor for the sinks."""
        t0 = time.perf_counter()
        result = self._sample_frame(state)
        t1 = time.perf_counter()
        self.compose(state, result.images, colour, result.next_images)
        result.sample_seconds, result.compose_seconds = t1 - t0, time.perf_counter() - t1
        return result

    def images(self, state: FrameState) -> dict[str, torch.Tensor]:
        """{display: [3, H, W]} of every panel the frame shows, each source at its walk time."""
        return self._sample_frame(state).images

    def _sample_frame(self, state: FrameState) -> FrameResult:
        shown = self.shown(state.scenes)
        result = FrameResult(state.frame, {})
        for name, src in self.sources.items():
            wanted = [d for d in src.panels if d in shown]
            if not wanted:
                if self.look_ahead is not None:  # its key of this frame, for the next that shows it
                    self.look_ahead.note(name, state.snapshot.get(name, {}))
                continue
            try:
                out = self._source_images(name, src, state, wanted, result)
                for d in wanted:
                    result.images[d] = out[d]  # [3, H, W]
                    self._held[d] = out[d]
                self._failures[name] = 0
            except Exception as e:
                if not self.hold_failures:
                    raise
                # One piece failing must not take the show down: its panels hold their last frame.
                failures = self._failures[name] = self._failures[name] + 1
                result.errors[name] = f"{type(e).__name__}: {str(e)[:200]}"
                if failures == 1 or failures % 1000 == 0:
                    log.error("sampling %s failed (%d frames in a row); its panels hold their last frame",
                              name, failures, exc_info=failures == 1)
                for d in wanted:
                    result.images[d] = self._held.get(d)
                    if result.images[d] is None:
                        result.images[d] = self._blank_for(name, src)
        if result.next_images is not None:  # the other sources show the same in both
            result.next_images = {**result.images, **result.next_images}
        if self.look_ahead is not None and state.upcoming is not None:
            self._warm_next_scene(state, shown)
        return result

    def _source_images(self, name: str, src: PanelSource, state: FrameState, wanted: list[str],
                       result: FrameResult) -> dict[str, torch.Tensor]:
        """{display: [3, H, W]} of one source's `wanted` panels for the frame (a timelapse's
        crossfade target goes into `result.next_images`)."""
        params = state.snapshot.get(name, {})
        scale = state.temperatures.get(name)
        if isinstance(src, TimelapseSource):
            shown, fading_into = state.checkpoints[name]
            at = state.walk_times[name]
            out = src.images_of(shown, at, scale, params, wanted)
            if fading_into is not None:
                result.next_images = {**(result.next_images or {}),
                                      **src.images_of(fading_into, at, scale, params, wanted)}
            return out
        if self.look_ahead is not None:
            return self.look_ahead.images(name, src, state.frame, state.walk_times[name], params,
                                          state.targets.get(name, {}), wanted, scale)
        z = src.latents([state.walk_times[name]], None if scale is None else [scale])  # {display: [1, D]}
        return {d: x[0] for d, x in src.sample(z, params, wanted).items()}

    def _warm_next_scene(self, state: FrameState, shown: frozenset) -> None:
        """Sample the panels a scheduled scene change brings in, one per frame in the `size` - 1
        frames before it (unstable.frame.lookahead), so the change frame does not sample them all."""
        change, scene = state.upcoming
        coming = self.shown((scene, None, 0.0))
        new = [d for d in self.piece_of if d in coming and d not in shown]
        lead = self.look_ahead.size - 1
        for i, d in enumerate(new):
            if state.frame != change - 1 - i % lead:
                continue
            name = self.piece_of[d]
            params = state.snapshot.get(name, {})
            if self.look_ahead.gliding(name, params, state.targets.get(name, {})):
                continue  # its frames to come will sample other values: nothing to gain
            try:
                self.look_ahead.warm(name, self.sources[name], d, change, params)
            except Exception:
                if not self.hold_failures:
                    raise
                # Live: the change frame samples it itself (and holds its last frame on failure).
                log.debug("sampling %s ahead of the scene change failed", d, exc_info=True)

    def prime(self, state: FrameState, sample: bool = True) -> None:
        """Sample frame `state` as `images` would, without keeping its pictures (`sample` False:
        only note its parameters): an offline render that starts at frame k primes the look-ahead
        with the `LookAhead.primed_frames` frames just before k, so its batches are those of one
        render from the start (no-op without look-ahead)."""
        if self.look_ahead is None:
            return
        if sample:
            self.images(state)
            return
        for name in self.sources:
            self.look_ahead.note(name, state.snapshot.get(name, {}))

    def _blank_for(self, name: str, src: PanelSource) -> torch.Tensor:
        """A black panel for a source that failed before its first frame ([3, 8, 8], made once)."""
        if name not in self._blank:
            self._blank[name] = torch.zeros(3, 8, 8, device=src.walk.device)
        return self._blank[name]

    def compose(self, state: FrameState, images: Mapping[str, torch.Tensor], colour=None,
                next_images: Mapping[str, torch.Tensor] | None = None) -> None:
        """Compose `images` with the frame's scenes (crossfading), styles and master fade.

        `colour` replaces the scenes' colour grade (a render job's variation).
        """
        a, b, mix = state.scenes
        first = (self.scenes[a].layout, colour if colour is not None else self.scenes[a].colour)
        second = None
        if b is not None:
            second = (self.scenes[b].layout, colour if colour is not None else self.scenes[b].colour)
        self.composer.render(images, state.snapshot, first, second, mix, next_images)
