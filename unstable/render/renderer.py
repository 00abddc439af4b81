"""Offline rendering: a render job (unstable/renderjob.py) or a show -> finished video files.

`Renderer` is the render of one job or show, in this process or as a cluster worker's
(render/farm.py); `unstable render JOB|SHOW` calls render/commands.py, which opens one. The frames go through the live show's own frame
pipeline (unstable/frame: sources -> images -> compose) and on to the VideoWriter, driven by frame
numbers instead of the wall clock; a show also advances the live show's own timeline.

    renderer = Renderer(load_job("render/equilibrium-1-1.toml"), "render/equilibrium-1-1.toml", torch.device("cpu"))
    results = render_show("shows/demo.toml", seconds=24, size=(1920, 1080))   # a show, from its run folders
    results = renderer.render()                         # every variation, whole length
    results = renderer.render(frames=(0, 300))          # a part, for a job scheduler

How a render is made, and why:
- Before any frame: every source is opened (runs loaded, fingerprints checked), the walk built,
  layout panels and parameters checked, so a bad job fails with one line and no partial files.
- Frames are generated in batches aligned to absolute frame numbers (frame f is always made in
  batch f // batch, in the same place). Batched convolutions need not give bit-identical results
  in another batch composition, and this alignment is what makes a render split with --frames
  and concatenated equal the whole render frame for frame.
- Each output is written as part files of `chunk` frames in `<output>.parts/` (atomic: written
  under a temporary name, renamed when ffmpeg has finished), with a manifest holding a hash of
  everything that decides the frames. A restarted render keeps the finished parts of the same
  job and redoes only the rest; then the parts are joined without re-encoding (encode.concat).
- Encoding overlaps generation: ffmpeg runs in its own process, fed by the VideoWriter's thread,
  and a finished part is closed in a background thread while the next part renders.
- On the CPU, generation uses half the cores (`threads`, fixed for the whole render) and leaves the
  rest to ffmpeg and the compositor: on a 2-core machine two torch threads fighting ffmpeg for the
  cores made a batch up to 100x slower here (each parallel region waits for a descheduled thread). A fixed
  thread count is also what makes frames reproducible: torch's CPU reductions, and so the last
  bits of a frame, depend on it.
- Past one machine (`--workers N`, `--scheduler ADDR`; render/farm.py): this process still opens,
  checks, owns the parts folders and joins; each chunk not done yet is a Dask task that a worker
  renders through the same `open_writers` + `draw_chunk`, so the parts are the same.
- Several colour variations share one generation: each frame is composed once per variation
  (`variations_at_once` files side by side) and the images are generated once per group.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from ..config import to_dict
from ..display.compositor import Compositor
from ..display.layout import cells
from ..encode import VideoWriter
from ..formats import PRESETS, exact
from ..errors import ConfigError, UnstableError
from ..renderjob import RenderJob, Variation, check_suffix, output_path
from .job_frames import JobFrames, without_sources
from .job_sources import open_sources
from .naming import choose_outputs
from .parts import (Finisher, RenderResult, RenderStats, Target, default_threads, join_parts, prepare_target,
                    torch_threads)

__all__ = ["Renderer", "show_renderer", "show_frame_count"]

class Renderer:
    """Renders a validated job: opens its sources on `device` (fails early), then `render()`.

    `ctx` is an OpenGL context to use (a headless EGL one is made, and released, when None).
    `threads`: torch CPU threads while rendering (default: half the cores, at least one).
    """

    def __init__(self, job: RenderJob, source: str, device: torch.device = torch.device("cpu"), *,
                 ctx=None, echo: Callable[[str], None] = print, progress: Callable | None = None,
                 threads: int | None = None, frames=None):
        self.job, self.source, self.device = job, str(source), torch.device(device)
        self.threads = threads or default_threads()
        self.echo = echo
        if frames is None:  # a render job: its own sources, walk and layout
            self.sources = open_sources(job, self.source, self.device, progress, echo)
            panel_names = [d for s in self.sources for d in s.panels]
            missing = [n for n in job.sources if n not in {s.name for s in self.sources}]
            layout = without_sources(job.layout, missing)
            layout.check_panels(panel_names, self.source)
            try:
                cells(layout, tuple(job.size), layout.panel_names(panel_names))
            except ValueError as e:
                raise ConfigError(self.source, "layout", str(e)) from None
            frames = JobFrames(job, self.source, self.sources, layout, self.device)
            self.identity = [s.identity for s in self.sources]
        else:  # a show (unstable.render.show_frames): it opened its runs itself
            self.sources = []
            self.identity = frames.identity()
        self.frames = frames
        self.plan = self.frames.plan
        self._ctx, self._own_ctx = ctx, ctx is None
        self._comp: Compositor | None = None
        self.stats = RenderStats()
        self.audio = None  # a show render's unstable.audio.mapping.FileInput (muxed after the join)

    # -- compositing ---------------------------------------------------------------------------

    def _compositor(self) -> Compositor:
        if self._comp is None:
            if self._ctx is None:
                from ..display.gl import create_headless_context
                self._ctx = create_headless_context()
            self._comp = Compositor(self._ctx, tuple(self.job.size))
            self.frames.bind(self._comp)
        return self._comp

    def close(self) -> None:
        """Free the compositor (and the GL context when this renderer made it)."""
        if self._comp is not None:
            self._comp.release()
            self._comp = None
        if self._own_ctx and self._ctx is not None:
            self._ctx.release()
            self._ctx = None

    def __enter__(self) -> "Renderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def compose(self, frame: int, variations: Sequence[Variation]) -> Iterator[tuple[Variation, np.ndarray]]:
        """Each variation's picture of `frame`: [H, W, 3] uint8 (a reused buffer: copy to keep)."""
        comp = self._compositor()
        t0 = time.perf_counter()
        for v in self.frames.draw(frame, variations):
            picture = comp.read()
            self.stats.compose_seconds += time.perf_counter() - t0
            yield v, picture
            t0 = time.perf_counter()

    def iter_frames(self, start: int, end: int, variations: Sequence[Variation] | None = None
                    ) -> Iterator[tuple[int, Variation, np.ndarray]]:
        """(frame, variation, [H, W, 3] uint8) for frames start..end-1 without encoding (tests, benchmarks)."""
        variations = list(variations or self.job.variation_list())
        with torch_threads(self.threads):
            for f in range(start, end):
                for v, picture in self.compose(f, variations):
                    yield f, v, picture

    # -- rendering -----------------------------------------------------------------------------

    def key(self, variation: Variation, frames: tuple[int, int]) -> str:
        """Hash of everything that decides the pixels and the encoding of one output's parts (its
        manifest's key; a cluster worker's must equal the driver's)."""
        job = to_dict(self.job)
        for k in ("name", "output", "variations", "hue_rotations", "variations_at_once"):
            job.pop(k)
        blob = {"job": job, "variation": to_dict(variation), "frames": list(frames),
                "sources": self.identity, "device": self.device.type,
                "torch": torch.__version__, "threads": self.threads, "plan": [self.plan.frames, str(self.plan.speed)]}
        return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:20]

    def _chunks(self, start: int, end: int) -> list[tuple[int, int]]:
        # Chunks are a whole number of batches and aligned to absolute frame numbers (see the module doc).
        k = -(-self.job.chunk // self.job.batch) * self.job.batch
        out, a = [], start
        while a < end:
            b = min(end, (a // k + 1) * k)
            out.append((a, b))
            a = b
        return out

    def prepare_target(self, index: int, variation: Variation, out: Path, frames: tuple[int, int],
                       fresh: bool) -> Target:
        """Output `out`'s parts folder for frames [A, B), locked, with its manifest and the parts
        already done (kept unless `fresh`)."""
        manifest = {"key": self.key(variation, frames), "job": self.job.name, "variation": variation.name,
                    "frames": list(frames), "preset": self.job.preset}
        suffix = "" if PRESETS[self.job.preset].sequence else out.suffix
        return prepare_target(index, variation, out, self._chunks(*frames), manifest, suffix, fresh)

    def outputs(self, out: str | None = None, frames: tuple[int, int] | None = None,
                variations: Sequence[str] = ()) -> list[tuple[int, Variation, Path]]:
        """(index, variation, output path) of each output a render with these options writes."""
        all_vars = self.job.variation_list()
        chosen = list(enumerate(all_vars))
        if variations:
            names = [v.name for v in all_vars]
            for name in variations:
                if name not in names:
                    raise UnstableError(f"--variation {name!r}: the job {self.source} has no such variation, "
                                        f"expected one of {', '.join(names[:10])}{' ...' if len(names) > 10 else ''}")
            chosen = [(i, v) for i, v in chosen if v.name in variations]
        pattern = out or self.job.output
        if out is not None:
            if len(chosen) > 1 and "{variation}" not in out and "{index}" not in out:
                raise UnstableError(f"--out {out}: the job renders {len(chosen)} variations; put {{variation}} "
                                    "in --out or pick one with --variation")
            try:
                check_suffix(Path(out), self.job.preset, "--out")
                Path(out.format(job="j", variation="v", index=0))
            except KeyError as e:
                raise UnstableError(f"--out {out}: unknown placeholder {{{e.args[0]}}}, expected {{job}}, "
                                    "{variation} or {index}") from None
            except (ValueError, IndexError) as e:
                raise UnstableError(f"--out {out}: {str(e).split(': ', 1)[-1]}") from None
        # The job's pattern marks a part of the job in the name (.fA-B); an explicit --out is taken as given.
        span = None if out is not None else frames
        paths = [(i, v, output_path(pattern, self.job, v, i, span, self.plan.frames)) for i, v in chosen]
        seen = {}
        for _, v, p in paths:
            if p.resolve() in seen:
                raise UnstableError(f"{p}: variations {seen[p.resolve()]!r} and {v.name!r} would both write it")
            seen[p.resolve()] = v.name
        return paths

    def render(self, *, out: str | None = None, frames: tuple[int, int] | None = None,
               variations: Sequence[str] = (), fresh: bool = False, show_progress: bool = True,
               overwrite: bool = False) -> list[RenderResult]:
        """Render every chosen variation for frames [A, B) (default: all) to finished files.

        Finished parts of an interrupted render of the same job are kept unless `fresh`. An output
        that exists is kept and the render goes to a numbered name beside it, unless `overwrite`.
        """
        frames = frames or (0, self.plan.frames)
        if not 0 <= frames[0] < frames[1] <= self.plan.frames:
            raise UnstableError(f"frames {frames[0]}:{frames[1]}: expected 0 <= A < B <= {self.plan.frames}")
        outputs = choose_outputs(self.outputs(out, frames, variations), overwrite, self.echo)
        self._compositor()  # no GL context is an error before any file is touched
        results: list[RenderResult] = []
        group_size = self.job.variations_at_once
        t_start = time.perf_counter()
        with torch_threads(self.threads):
            for g in range(0, len(outputs), group_size):
                results += self._render_group(outputs[g:g + group_size], frames, fresh, show_progress,
                                              len(outputs) > 1)
        self.stats.generation_seconds = self.frames.generation_seconds
        self.stats.wall_seconds += time.perf_counter() - t_start
        return results

    def _render_group(self, group, frames, fresh, show_progress, several) -> list[RenderResult]:
        """Render one group of variations from one generation (see `render`), holding their parts' locks."""
        t_group = time.perf_counter()
        targets: list[Target] = []
        try:
            for i, v, p in group:
                targets.append(self.prepare_target(i, v, p, frames, fresh))
            return self._render_targets(targets, frames, show_progress, several, t_group)
        finally:
            for t in targets:
                if t.lock is not None:
                    t.lock.close()

    def _render_targets(self, targets: list[Target], frames, show_progress, several, t_group) -> list[RenderResult]:
        from tqdm import tqdm

        from ..progress import progress_bar

        preset = PRESETS[self.job.preset]
        results = []
        suffix = "" if preset.sequence else targets[0].out.suffix
        todo = [c for c in targets[0].chunks if any(c not in t.done for t in targets)]
        total = sum(b - a for a, b in todo)
        names = ", ".join(t.variation.name for t in targets)
        desc = f"render {self.job.name} [{names}]" if several else f"render {self.job.name}"
        bar = (progress_bar(desc, total, unit="frame") if show_progress
               else tqdm(total=total, disable=True))
        finisher = Finisher()
        writers: dict[int, VideoWriter] = {}
        rendered = 0
        try:
            for chunk in todo:
                need = [t for t in targets if chunk not in t.done]
                writers = {}
                self.open_writers(need, chunk, suffix, writers)
                self.draw_chunk(chunk, need, writers, lambda: bar.update(1))
                rendered += chunk[1] - chunk[0]
                finisher.submit([(writers[t.index], t.part(chunk, suffix, tmp=True), t.part(chunk, suffix))
                                 for t in need])
                for t in need:
                    t.done.add(chunk)
            finisher.wait()
        except BaseException:
            # Interrupted or failed: finalise what is open (its tmp part is dropped on the next
            # run), keep the finished parts for a resume, and report the first error.
            for writer in writers.values():
                writer.close(_raise=False)
            try:
                finisher.wait()
            except BaseException:  # noqa: BLE001 - the error already propagating is the one to report
                pass
            raise
        finally:
            bar.close()
        self.stats.encode_seconds += finisher.encode_seconds
        self.stats.frames += rendered * len(targets)
        for t in targets:
            info = self._join(t, suffix, frames)
            results.append(RenderResult(t.variation.name, t.out, info.frames, info.fps, info.width, info.height,
                                        self.job.preset, rendered, time.perf_counter() - t_group))
        return results

    def open_writers(self, need: list[Target], chunk: tuple[int, int], suffix: str, writers: dict,
                     tag: str = "") -> None:
        """Start one VideoWriter per target into its chunk's temporary part (added to `writers` one
        by one, so a failure leaves every started one there to be closed)."""
        w, h = self.job.size
        for t in need:
            # Two batches of queue: ffmpeg keeps encoding while the next batch is generated.
            writers[t.index] = VideoWriter(t.part(chunk, suffix, tmp=True, tag=tag), w, h, self.plan.fps,
                                           self.job.preset, queue_frames=max(8, 2 * self.job.batch))

    def draw_chunk(self, chunk: tuple[int, int], need: list[Target], writers: dict,
                   on_frame: Callable[[], None] | None = None) -> None:
        """Compose every frame of `chunk` for each target's variation into its writer. The one way
        a part is made, in this process or on a cluster worker (unstable.render.farm)."""
        chosen = [t.variation for t in need]
        for f in range(*chunk):
            for t, (_, picture) in zip(need, self.compose(f, chosen)):
                t0 = time.perf_counter()
                writers[t.index].write(picture)
                self.stats.write_wait_seconds += time.perf_counter() - t0
            if on_frame is not None:
                on_frame()

    def _join(self, t: Target, suffix: str, frames: tuple[int, int]):
        """Parts -> the output file, checked for its exact frame count; the parts folder goes."""
        return join_parts(t, suffix, frames[1] - frames[0], self.plan.fps, PRESETS[self.job.preset].sequence)


def show_frame_count(show, seconds: float | None, automation, audio=None) -> int:
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
    walk = show.settings.walk
    return max(1, round(exact(walk.period) * walk.keyframes * fps))


def show_renderer(show_path: str | Path, *, seconds: float | None = None, preset: str = "h264",
                  size: tuple[int, int] | None = None, automation: str | Path | None = None,
                  run: str | Path | None = None, device: torch.device = torch.device("cpu"),
                  echo: Callable[[str], None] = print, ctx=None, threads: int | None = None,
                  audio: str | Path | None = None) -> Renderer:
    """A Renderer of the show at `show_path` from its run folders (`run`, default runs/live/<show>),
    its automation replayed when given, following `audio` (or the show's `[audio] file`) when
    given; close it when done."""
    from ..frame.automation import load_automation
    from ..renderjob import SourceSettings
    from ..show import load_show
    from .show_frames import ShowFrames
    show = load_show(show_path)
    if audio is not None:
        from ..audio.mapping import unmapped_line
        line = unmapped_line(show, audio, "render")
        if line:
            echo(line)
    auto = load_automation(automation) if automation is not None else None
    audio_path = show.audio_file(str(audio) if audio is not None else None)
    audio_in = None
    if audio_path is not None:
        from ..audio.mapping import FileInput
        what = "--audio" if audio is not None else f"{show_path}: audio.file"
        audio_in = FileInput(audio_path, exact(show.settings.fps), what=what)
    total = show_frame_count(show, seconds, auto, audio_in)
    run_dir = Path(run) if run is not None else Path("runs") / "live" / show.name
    s = show.settings
    try:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset, expected one of {', '.join(PRESETS)}")
        p = PRESETS[preset]
        default_out = "render/out/{job}" + ("" if p.sequence else p.suffixes[0])
        job = RenderJob(sources={n: SourceSettings(run=str(run_dir / n)) for n in show.pieces}, name=show.name,
                        layout=s.layout, size=tuple(size or s.size), fps=float(s.fps), frames=total, walk=s.walk,
                        preset=preset, output=default_out, batch=1)
    except ValueError as e:
        raise UnstableError(f"{show_path}: --preset {preset} / --size: {e}") from None
    frame_source = ShowFrames(show, run_dir, device, total, auto, audio_in)
    renderer = Renderer(job, str(show_path), device, ctx=ctx, echo=echo, frames=frame_source,
                        threads=threads or s.training.render_threads)
    renderer.audio = audio_in
    return renderer
