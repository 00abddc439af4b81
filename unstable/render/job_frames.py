"""A render job opened for the renderer: its sources, its timeline (unstable.frame.job_timeline:
curves, plan, timelapse) and the pipeline over them, checked before any frame.

Nothing here samples, walks or composes: the job's frames are drawn by the one frame pipeline
(unstable.frame), its batches by the look-ahead in aligned groups of `batch` frames (frame f is
always sampled in group f // batch, in the same place: batched convolutions need not give
bit-identical results in another batch composition, and this alignment is what makes a render
split with --frames and concatenated equal the whole render frame for frame).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import torch

from ..config import to_dict
from ..display.layout import Colour, Layout, cells
from ..errors import ConfigError
from ..frame.curves import ParamCurves
from ..frame.job_timeline import JobTimeline
from ..frame.cursor import FrameCursor
from ..frame.pipeline import FramePipeline
from ..frame.sources import PanelSource, make_walk
from ..frame.timelapse import TimelapseSource
from ..renderjob import FramePlan, RenderJob
from ..show import SceneSettings
from .job_sources import JobSource, open_sources
from .spec import RenderSpec

__all__ = ["open_job", "without_sources"]


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


def _panel_sources(job: RenderJob, job_path: str, opened: list[JobSource], device: torch.device) -> dict[str, PanelSource]:
    """One walk per source over all of its system's panels, exactly as a live show walks each
    piece; a timelapse's source shows its run's checkpoints in turn."""
    out: dict[str, PanelSource] = {}
    for src in opened:
        walk = make_walk(src.name, src.system, job.walk, device, job_path, "walk.latents")
        if job.timelapse.on:
            out[src.name] = TimelapseSource(src.name, src.system, src.system, walk, dict(src.panels),
                                            checkpoints=[path for _, path in src.checkpoints])
        else:
            out[src.name] = PanelSource(src.name, src.system, src.system, walk, dict(src.panels))
    return out


def open_job(job: RenderJob, job_path: str, device: torch.device, progress: Callable | None = None,
             echo: Callable[[str], None] = print) -> RenderSpec:
    """Open and check every source of `job` (a bad job fails here with one line naming `job_path`
    and the key), and the render it makes."""
    opened = open_sources(job, job_path, device, progress, echo)
    panel_names = [d for s in opened for d in s.panels]
    missing = [n for n in job.sources if n not in {s.name for s in opened}]
    layout = without_sources(job.layout, missing)
    layout.check_panels(panel_names, job_path)
    try:
        cells(layout, tuple(job.size), layout.panel_names(panel_names))
    except ValueError as e:
        raise ConfigError(job_path, "layout", str(e)) from None
    sources = _panel_sources(job, job_path, opened, device)
    # Every walk has the same keyframe count and period, hence the same loop length.
    first = next(iter(sources.values())).walk
    plan = FramePlan.of(job, job_path, first.duration, len(opened[0].checkpoints) if job.timelapse.on else 0)
    curves = ParamCurves(job.curves, plan.fps)
    curves.check(job_path, {s.name: {sp.name: sp for sp in s.system.param_specs()} for s in opened})
    scenes = [SceneSettings(name="main", crossfade=0.0, layout=layout, colour=Colour())]
    fixed = {s.name: s.params for s in opened}
    at = job.timelapse.at if job.timelapse.on else None

    def timeline() -> JobTimeline:
        return JobTimeline(plan, curves, fixed, list(sources), timelapse_at=at)

    def cursor_over(compositor) -> FrameCursor:
        def pipeline(tl: JobTimeline) -> FramePipeline:
            return FramePipeline(sources, scenes, compositor, look_ahead=job.batch,
                                 walk_ahead=tl.walk_times_ahead, state_of=tl.state_of)
        return FrameCursor(timeline, pipeline)

    settings = to_dict(job)
    for k in ("name", "output", "variations", "hue_rotations", "variations_at_once"):
        settings.pop(k)
    settings["plan"] = [plan.frames, str(plan.speed)]
    paths = tuple(str(s.run.resolve()) for s in opened if s.run is not None and s.checkpoints)
    return RenderSpec(name=job.name, path=job_path, cursor_over=cursor_over, size=tuple(job.size), fps=plan.fps,
                      length=plan.frames, preset=job.preset, output=job.output,
                      variations=tuple(job.variation_list()), graded=True, chunk=job.chunk, align=job.batch,
                      variations_at_once=job.variations_at_once, settings=settings,
                      identity=[s.identity for s in opened], paths=paths)
