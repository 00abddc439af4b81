"""The frames of a render job, through the frame pipeline: each source's walk at the job's exact
frame times (or a training timelapse), sampled in batches, composed per colour variation.

Frames are generated in batches aligned to absolute frame numbers (frame f is always made in
batch f // batch, in the same place). Batched convolutions need not give bit-identical results in
another batch composition, and this alignment is what makes a render split with --frames and
concatenated equal the whole render frame for frame. Within a batch, frames whose sampling
parameters differ (a parameter curve) are sampled in separate groups, in frame order.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Mapping, Sequence

import numpy as np
import torch

from ..checkpoint import load_checkpoint, restore
from ..display.layout import Colour, Layout
from ..formats import exact
from ..frame.pipeline import FramePipeline
from ..frame.sources import PanelSource, make_walk
from ..frame.timeline import FrameState
from ..renderjob import FramePlan, RenderJob
from ..show import SceneSettings
from .curves import ParamCurves
from .job_sources import Source

__all__ = ["JobFrames", "without_sources"]


def without_sources(layout: Layout, missing: Sequence[str]) -> Layout:
    """The layout with the panels of left-out (optional, not yet trained) sources taken out: dropped
    from a side-by-side row so the others fill the frame, an empty cell in a grid or rects."""
    if not missing:
        return layout
    gone = lambda name: any(name.startswith(f"{m}/") for m in missing)  # noqa: E731
    if layout.mode == "side_by_side":
        panels = tuple(p for p in layout.panels if not gone(p))
    else:
        panels = tuple("" if gone(p) else p for p in layout.panels)
    styles = {k: v for k, v in layout.styles.items() if not gone(k)}
    return dataclasses.replace(layout, panels=panels, styles=styles)


class JobFrames:
    """Panel images and compositions for any frame number of a job."""

    def __init__(self, job: RenderJob, source: str, sources: list[Source], layout: Layout, device: torch.device):
        self.job, self.sources, self.device = job, sources, device
        # One walk per source over all of its system's panels, exactly as a live show walks each piece.
        self.panel_sources = {
            src.name: PanelSource(src.name, src.system, src.system, make_walk(src.name, src.system, job.walk, device,
                                                                             source, "walk.latents"),
                                  dict(src.panels), dict(src.params))
            for src in sources}
        self.panel_names = [d for src in sources for d in src.panels]
        checkpoints = len(sources[0].checkpoints) if job.timelapse.on else 0
        # Every walk has the same keyframe count and period, hence the same loop length.
        first = next(iter(self.panel_sources.values())).walk
        self.plan = FramePlan.of(job, source, first.duration, checkpoints)
        self.curves = ParamCurves(job.curves, self.plan.fps)
        specs = {src.name: {sp.name: sp for sp in src.system.param_specs()} for src in sources}
        self.curves.check(source, specs)
        self._own = {name: set(table) for name, table in specs.items()}
        self.scenes = [SceneSettings(name="main", crossfade=0.0, layout=layout, colour=Colour())]
        self.pipeline: FramePipeline | None = None
        self._batch_index: int | None = None
        self._batch: dict[str, torch.Tensor] = {}
        self._ckpt_images: dict[int, dict[str, torch.Tensor]] = {}
        self.generation_seconds = 0.0

    def bind(self, compositor) -> None:
        """Compose through `compositor` from now on."""
        self.pipeline = FramePipeline(self.panel_sources, self.scenes, compositor)

    def walk_times(self, name: str, frames: Sequence[int]) -> list:
        """Walk times of source `name` at these frames: exact (start + frame x speed / fps), or the
        integral of its `walk_speed` curve when it has one."""
        out = []
        for f in frames:
            progress = self.curves.walk_progress(name, f)
            out.append(self.plan.walk_time(f) if progress is None
                       else float(self.plan.start) + float(self.plan.speed) * progress)
        return out

    def latents(self, frames: Sequence[int]) -> dict[str, torch.Tensor]:
        """{display panel: z [T, D]} at these frames, temperature applied (exactly as rendered)."""
        frames = list(frames)
        return self._scaled({n: self.walk_times(n, frames) for n in self.panel_sources},
                            self.plan.temperatures(np.array(frames)))

    def _scaled(self, times: Mapping[str, list], temperatures: np.ndarray) -> dict[str, torch.Tensor]:
        # Every path is linear in the temperature (walk.py), so scaling rows by T(frame) is the
        # walk at that temperature, frame by frame.
        temp = torch.as_tensor(temperatures, dtype=torch.float32, device=self.device)[:, None]  # [T, 1]
        out = {}
        for name, src in self.panel_sources.items():
            z = src.latents(times[name], [1.0] * len(times[name]))
            out.update({d: v * temp for d, v in z.items()})  # [T, D] each
        return out

    def _sample(self, latents: Mapping[str, torch.Tensor], frames: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
        """{display: [N, 3, H, W]}; frames whose curved sampling parameters differ are sampled apart."""
        out = {}
        for name, src in self.panel_sources.items():
            n = next(iter(latents.values())).shape[0]
            params = [self.curves.sampling(name, self._own[name], f) for f in frames] if frames else [{}] * n
            groups, start = [], 0
            for i in range(1, n + 1):  # runs of equal parameters, in frame order
                if i == n or params[i] != params[start]:
                    groups.append((start, i))
                    start = i
            parts = [src.sample({d: latents[d][a:b] for d in src.panels}, params[a]) for a, b in groups]
            out.update({d: parts[0][d] if len(parts) == 1 else torch.cat([p[d] for p in parts]) for d in src.panels})
        return out

    def _walk_images(self, frame: int) -> dict[str, torch.Tensor]:
        b = self.job.batch
        index = frame // b
        if index != self._batch_index:
            t0 = time.perf_counter()
            frames = range(index * b, index * b + b)
            self._batch = self._sample(self.latents(frames), frames)
            self._batch_index = index
            self.generation_seconds += time.perf_counter() - t0
        return {name: x[frame - index * b] for name, x in self._batch.items()}  # [3, H, W] each

    def _checkpoint_images(self, k: int) -> dict[str, torch.Tensor]:
        if k not in self._ckpt_images:
            t0 = time.perf_counter()
            src = self.sources[0]
            _, path = src.checkpoints[k]
            restore(src.system, load_checkpoint(path, map_location=self.device), str(path))
            # The walk stands still at `at`: the same latents for every checkpoint, one frame's worth.
            at = exact(self.job.timelapse.at)
            images = self._sample(self._scaled({n: [at] for n in self.panel_sources},
                                               self.plan.temperatures(np.array([0]))))
            self._ckpt_images = {j: v for j, v in self._ckpt_images.items() if j >= k - 1}
            self._ckpt_images[k] = {name: x[0] for name, x in images.items()}  # [3, H, W] each
            self.generation_seconds += time.perf_counter() - t0
        return self._ckpt_images[k]

    def images(self, frame: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None, float]:
        """(images, next images or None, crossfade mix) of `frame`, {panel: [3, H, W]}."""
        if not self.job.timelapse.on:
            return self._walk_images(frame), None, 0.0
        k, nxt, mix = self.plan.checkpoint_at(frame)
        return self._checkpoint_images(k), (self._checkpoint_images(nxt) if nxt is not None else None), mix

    def draw(self, frame: int, variations: Sequence[Colour]):
        """Compose `frame` once per variation; yields each variation after its composition."""
        images, nxt, mix = self.images(frame)
        state = FrameState(frame, float(frame / self.plan.fps), self.curves.snapshot(frame),
                           (0, 0 if nxt is not None else None, mix), {})
        for v in variations:
            self.pipeline.compose(state, images, colour=v, next_images=nxt)
            yield v
