"""A show opened for the renderer: the live show's own timeline and pipeline, driven by frame
numbers instead of the wall clock.

The weights come from the show's run folders (`runs/live/<show>/<piece>/checkpoint.pt`, what
`unstable live` trained); everything else that decides a frame (parameter values and their
smoothing, scenes and crossfades, walk phases and `walk_speed`, colour) comes from the same
`ShowTimeline` a live show advances, from the show's start or from an automation file's, and the
same staggered look-ahead: with training off, frame n here is frame n of the live show, pixel for
pixel (tests/test_one_pipeline.py).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import torch

from ..control.store import ParameterStore
from ..errors import ConfigError, UnstableError
from ..formats import PRESETS, exact
from ..frame.automation import Automation, load_automation
from ..frame.cursor import FrameCursor
from ..frame.pipeline import FramePipeline
from ..frame.sources import PanelSource, load_run_into, make_walk
from ..frame.timeline import ShowTimeline
from ..renderjob import Variation, check_size
from ..show import Show, display_name, load_show
from ..show_systems import build_systems, show_groups
from .job_sources import file_identity
from .spec import RenderSpec

__all__ = ["open_show", "show_frame_count"]


def show_frame_count(show: Show, seconds: float | None, automation: Automation | None, audio=None) -> int:
    """Frames of a show render: `seconds`, else as long as its audio (ceil(samples / rate x fps):
    the video covers all of the sound and ends less than a frame after it), else through the
    automation's last frame, else one pass through the scenes when they all have durations, else
    one loop of the walk."""
    fps = exact(show.settings.fps)
    if seconds is not None:
        return max(1, round(exact(seconds) * fps))
    if audio is not None:
        return audio.frames
    if automation is not None:
        return automation.last_frame - automation.start_frame + 1
    scenes = show.scene_list()
    if all(s.duration > 0 for s in scenes) and show.settings.scenes:
        return max(1, round(exact(sum(s.duration for s in scenes)) * fps))
    return max(1, round(show.settings.walk.loop_seconds() * fps))


def _load_weights(show: Show, systems: dict, run_dir: Path, device: torch.device) -> list:
    """Each piece's trained weights from the show's run folder; returns their identities."""
    identity = []
    for name, system in systems.items():
        ckpt = run_dir / name / "checkpoint.pt"
        if not ckpt.is_file():
            raise ConfigError(show.show_file, f"pieces.{name}", f"no trained weights at {ckpt} (play the show "
                              "first: `unstable live`, or give --run the show's run folder)")
        try:
            payload = load_run_into(system, ckpt, device)
        except UnstableError as e:
            raise ConfigError(show.show_file, f"pieces.{name}", str(e)) from None
        identity.append({**file_identity(ckpt), "step": int(payload.get("step", 0))})
    return identity


def _audio_input(show: Show, show_path, audio, echo):
    """The sound the render follows (--audio, else the show's `[audio] file`), or None."""
    if audio is not None:
        from ..audio.mapping import unmapped_line
        line = unmapped_line(show, audio, "render")
        if line:
            echo(line)
    path = show.audio_file(str(audio) if audio is not None else None)
    if path is None:
        return None
    from ..audio.mapping import FileInput
    what = "--audio" if audio is not None else f"{show_path}: audio.file"
    return FileInput(path, exact(show.settings.fps), what=what)


def open_show(show_path: str | Path, *, seconds: float | None = None, preset: str = "h264",
              size: tuple[int, int] | None = None, automation: str | Path | None = None,
              run: str | Path | None = None, device: torch.device = torch.device("cpu"),
              echo: Callable[[str], None] = print, audio: str | Path | None = None) -> RenderSpec:
    """The render of the show at `show_path` from its run folders (`run`, default runs/live/<show>),
    its automation replayed when given, following `audio` (or the show's `[audio] file`)."""
    show = load_show(show_path)
    s = show.settings
    auto = load_automation(automation) if automation is not None else None
    audio_in = _audio_input(show, show_path, audio, echo)
    total = show_frame_count(show, seconds, auto, audio_in)
    out_size = tuple(size or s.size)
    try:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset, expected one of {', '.join(PRESETS)}")
        check_size(out_size, preset)
    except ValueError as e:
        raise UnstableError(f"{show_path}: --preset {preset} / --size: {e}") from None
    output = "render/out/{job}" + ("" if PRESETS[preset].sequence else PRESETS[preset].suffixes[0])
    run_dir = Path(run) if run is not None else Path("runs") / "live" / show.name
    systems = build_systems(show, device)
    groups = show_groups(show, systems)
    identity = [{"show": hashlib.sha256(Path(show.show_file).read_bytes()).hexdigest()},
                *_load_weights(show, systems, run_dir, device)]
    if audio_in is not None:
        identity.append({"audio": file_identity(audio_in.path)})
    if auto is not None:
        identity.append(file_identity(auto.path))
        if auto.fps != exact(s.fps):
            raise UnstableError(f"--automation {auto.path}: recorded at {auto.fps} fps, the show runs at {s.fps:g} fps")
    sources = {name: PanelSource(name, system, system, make_walk(name, system, s.walk, device, show.show_file),
                                 {display_name(name, q): q for q in system.panels()})
               for name, system in systems.items()}
    fps = exact(s.fps)

    def timeline() -> ShowTimeline:
        store = ParameterStore(groups)
        modulator = None
        if s.audio.map:
            from ..audio.mapping import AudioModulator
            modulator = AudioModulator(s.audio.map, {k: store.spec(*k) for k in store.keys()}, fps, audio_in)
        tl = ShowTimeline(show.resolved_scenes(), store, list(sources), s.fps, loop=s.loop_scenes,
                          start_values={n: e.params for n, e in s.pieces.items()}, audio=modulator,
                          walk_bpm=show.walk_tempo)
        if auto is not None:
            tl.replay(auto)
        return tl

    def cursor_over(compositor) -> FrameCursor:
        def pipeline(tl: ShowTimeline) -> FramePipeline:
            # The live show's look-ahead, so the batches (and so the pixels) are the live show's.
            return FramePipeline(sources, show.resolved_scenes(), compositor, look_ahead=s.look_ahead,
                                 walk_ahead=tl.walk_times_ahead)
        return FrameCursor(timeline, pipeline, first=auto.start_frame if auto is not None else 0)

    settings = {"show": show.name, "size": list(out_size), "fps": str(fps), "preset": preset, "length": total}
    return RenderSpec(name=show.name, path=str(show_path), cursor_over=cursor_over, size=out_size, fps=fps,
                      length=total, preset=preset, output=output, variations=(Variation(name="main"),),
                      graded=False, chunk=240, align=1, variations_at_once=1, settings=settings,
                      identity=identity, audio=audio_in, threads=s.training.render_threads)
