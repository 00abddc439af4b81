"""`unstable render`: render jobs and shows offline, through the one frame pipeline.

    commands.py     `unstable render JOB|SHOW`: open, render here or on a cluster, mux the sound
    renderer.py     one render of a RenderSpec: frames into encoder sinks, parts, resume, join
    spec.py         RenderSpec: a render's frames (timeline + pipeline) and outputs, job or show
    job_frames.py   a job opened: its sources, its JobTimeline, its pipeline (aligned look-ahead)
    job_sources.py  a job's runs or pieces, opened and checked
    show_frames.py  a show opened: its ShowTimeline (scenes, parameters, automation), the live look-ahead
    parts.py        part files, their locks, background closing, thread counts
    farm.py         the chunks of a render as Dask tasks (--workers N, --scheduler ADDR)
"""

from .job_sources import JobSource, list_checkpoints, open_sources
from .parts import RenderResult, RenderStats
from .commands import render_job, render_show
from .renderer import Renderer, job_renderer, show_renderer

__all__ = ["Renderer", "RenderResult", "RenderStats", "render_job", "render_show", "open_sources", "JobSource",
           "list_checkpoints", "job_renderer", "show_renderer"]
