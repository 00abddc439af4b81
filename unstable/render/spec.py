"""What an offline render is made of, a job's or a show's alike: where its frames come from (a
timeline and a pipeline, unstable.frame.cursor) and what it writes (size, rate, codec, outputs,
colour variations, part files). A job and a show differ only in how this is filled in
(render/job_frames.py, render/show_frames.py); the renderer knows nothing else of either."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable

from ..renderjob import Variation

__all__ = ["RenderSpec"]


@dataclass(frozen=True)
class RenderSpec:
    """One render: its frames (`cursor_over(compositor) -> FrameCursor`) and its outputs."""

    name: str                       # {job} in the output pattern
    path: str                       # the job or show file (messages name it)
    cursor_over: Callable[[Any], Any]  # compositor -> unstable.frame.cursor.FrameCursor
    size: tuple[int, int]           # output width, height
    fps: Fraction
    length: int                     # frames of the whole render
    preset: str                     # unstable.formats.PRESETS
    output: str                     # output path pattern ({job}, {variation}, {index})
    variations: tuple[Variation, ...]
    graded: bool                    # each variation's colour replaces the scenes' (a job's variations)
    chunk: int                      # frames per part file
    align: int                      # chunks start at multiples of this (a job's aligned look-ahead groups)
    variations_at_once: int         # variations encoded side by side from one generation
    settings: dict = field(default_factory=dict)   # what else decides the pixels (the render key)
    identity: list = field(default_factory=list)   # the files that decide them (runs, show, automation)
    paths: tuple[str, ...] = ()     # more paths cluster workers must see (a timelapse's run folder)
    audio: Any = None               # a show's unstable.audio.mapping.FileInput (muxed after the join)
    threads: int | None = None      # torch threads it asks for (a show's training.render_threads)
