"""What `unstable render JOB|SHOW` calls: open the renderer of a job or a show (render/renderer.py),
render it here or as chunks on a Dask cluster (render/farm.py), and mux a show's sound into the
finished files. Above both, so that the renderer and the farm import only downwards."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch

from ..formats import PRESETS
from ..progress import progress_bar
from ..renderjob import load_job, parse_frame_range
from .parts import RenderResult
from .renderer import Renderer, job_renderer, show_renderer

__all__ = ["render_job", "render_show"]


def render_job(job_path: str | Path, *, out: str | None = None, frame_range: str | None = None,
               variations: Sequence[str] = (), device: torch.device = torch.device("cpu"), fresh: bool = False,
               echo: Callable[[str], None] = print, show_progress: bool = True, ctx=None,
               threads: int | None = None, workers: int | None = None, scheduler: str | None = None,
               client=None, overwrite: bool = False) -> list[RenderResult]:
    """`unstable render JOB`: load, check, render and join; `frame_range` is "A:B" (a part of the job);
    an existing output is kept (the render takes a numbered name) unless `overwrite`.

    `workers` (a LocalCluster of that many processes), `scheduler` (tcp://HOST:PORT) or `client` (a
    dask.distributed Client): the chunks are rendered on Dask (unstable.render.farm), same output."""
    job = load_job(job_path)
    with job_renderer(job, str(job_path), device, ctx=ctx, echo=echo, threads=threads,
                      progress=progress_bar if show_progress else None) as renderer:
        span = parse_frame_range(frame_range, renderer.spec.length) if frame_range is not None else None
        if workers or scheduler or client is not None:
            from .farm import on_cluster, spec_for
            return on_cluster(renderer, spec_for("job", job_path, device), workers=workers, scheduler=scheduler,
                              client=client, out=out, span=span, variations=variations, fresh=fresh,
                              show_progress=show_progress, echo=echo, overwrite=overwrite)
        return renderer.render(out=out, span=span, variations=variations, fresh=fresh,
                               show_progress=show_progress, overwrite=overwrite)


def render_show(show_path: str | Path, *, seconds: float | None = None, frame_range: str | None = None,
                out: str | None = None, preset: str = "h264", size: tuple[int, int] | None = None,
                automation: str | Path | None = None, run: str | Path | None = None,
                device: torch.device = torch.device("cpu"), fresh: bool = False,
                echo: Callable[[str], None] = print, show_progress: bool = True, ctx=None,
                threads: int | None = None, workers: int | None = None, scheduler: str | None = None,
                client=None, audio: str | Path | None = None, overwrite: bool = False) -> list[RenderResult]:
    """`unstable render SHOW`: the show offline from its run folders, its automation replayed when given;
    on Dask with `workers`, `scheduler` or `client` (see render_job). With `audio` (or the show's
    `[audio] file`) the render follows the sound frame by frame, lasts as long as it (unless
    `seconds`) and, once the parts are joined, has it muxed in (not into a part: `frame_range`)."""
    with show_renderer(show_path, seconds=seconds, preset=preset, size=size, automation=automation, run=run,
                       device=device, echo=echo, ctx=ctx, threads=threads, audio=audio) as renderer:
        span = parse_frame_range(frame_range, renderer.spec.length) if frame_range is not None else None
        if workers or scheduler or client is not None:
            from .farm import on_cluster, spec_for
            spec = spec_for("show", show_path, device, seconds=seconds, preset=preset, size=size,
                            automation=str(automation) if automation is not None else None,
                            run=str(run) if run is not None else None,
                            audio=str(Path(audio).resolve()) if audio is not None else None)
            results = on_cluster(renderer, spec, workers=workers, scheduler=scheduler, client=client, out=out,
                                 span=span, fresh=fresh, show_progress=show_progress, echo=echo, overwrite=overwrite)
        else:
            results = renderer.render(out=out, span=span, fresh=fresh, show_progress=show_progress,
                                      overwrite=overwrite)
        if renderer.audio is not None:
            _mux_results(renderer, results, span, preset, echo)
        return results


def _mux_results(renderer: Renderer, results: list[RenderResult], span, preset: str, echo) -> None:
    """The render's audio into each finished file (after the join; parts and sequences get none)."""
    from fractions import Fraction

    from ..audio.mux import mux_audio
    audio = renderer.audio
    if span is not None and span != (0, renderer.spec.length):
        echo(f"render: frames {span[0]}:{span[1]} are a part: no audio muxed into it (join the parts with "
             f"`unstable render concat ... --audio {audio.path}`)")
        return
    if not PRESETS[preset].audio:
        echo(f"render: the {preset} preset holds no audio; {audio.path} is not muxed (the frames follow it)")
        return
    for r in results:
        mux_audio(r.path, audio.path, preset, Fraction(r.frames) / renderer.spec.fps)
