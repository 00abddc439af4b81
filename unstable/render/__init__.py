"""`unstable render`: render jobs and shows offline, through the one frame pipeline.

    commands.py     `unstable render JOB|SHOW`: open, render here or on a cluster, mux the sound
    renderer.py     one render: outputs, parts, resume, concat (jobs and shows alike)
    job_sources.py  a job's runs or pieces, opened and checked
    job_frames.py   a job's frames: exact walk times or a timelapse, batched, per variation
    show_frames.py  a show's frames: its timeline (scenes, parameters, automation) frame by frame
    parts.py        part files, their locks, background closing, thread counts
    farm.py         the chunks of a render as Dask tasks (--workers N, --scheduler ADDR)
"""

from .job_sources import Source, list_checkpoints, open_sources
from .parts import RenderResult, RenderStats
from .commands import render_job, render_show
from .renderer import Renderer

__all__ = ["Renderer", "RenderResult", "RenderStats", "render_job", "render_show", "open_sources", "Source", "list_checkpoints"]
