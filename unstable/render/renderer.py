"""Offline rendering: a render job (unstable/renderjob.py) or a show -> finished video files.

`Renderer` is one render, in this process or as a cluster worker's (render/farm.py); it takes a
`RenderSpec` (render/spec.py): the frames, from a timeline and the one frame pipeline
(unstable.frame.cursor), and what to write. A job and a show differ only in how the spec is
filled in (render/job_frames.py `open_job`, render/show_frames.py `open_show`); every frame is one
`FramePipeline.frame` call, composed once per colour variation, into that variation's encoder sink
(unstable.frame.sinks.EncoderSink).

    renderer = job_renderer(load_job("render/equilibrium-1-1.toml"), "render/equilibrium-1-1.toml")
    renderer = show_renderer("shows/demo.toml", seconds=24, size=(1920, 1080))  # from its run folders
    results = renderer.render()                         # every variation, whole length
    results = renderer.render(span=(0, 300))            # a part, for a job scheduler

How a render is made, and why:
- Before any frame: every source is opened (runs loaded, fingerprints checked), the walk built,
  layout panels and parameters checked, so a bad job fails with one line and no partial files.
- A job's frames are sampled in look-ahead groups aligned to absolute frame numbers and chunks
  start at multiples of the group (`RenderSpec.align`), so a part is the same wherever it is
  made; a show's timeline is advanced (and its look-ahead primed) up to a part's first frame.
- Each output is written as part files of `chunk` frames in `<output>.parts/` (atomic: written
  under a temporary name, renamed when ffmpeg has finished), with a manifest holding a hash of
  everything that decides the frames. A restarted render keeps the finished parts of the same
  render and redoes only the rest; then the parts are joined without re-encoding (encode.concat).
- Encoding overlaps generation: ffmpeg runs in its own process, fed by the VideoWriter's thread,
  and a finished part is closed in a background thread while the next part renders.
- On the CPU, generation uses half the cores (`threads`, fixed for the whole render) and leaves the
  rest to ffmpeg and the compositor: two torch threads fighting ffmpeg for two cores make each
  parallel region wait for a descheduled thread. A fixed thread count is also what makes frames
  reproducible: torch's CPU reductions, and so the last bits of a frame, depend on it.
- Past one machine (`--workers N`, `--scheduler ADDR`; render/farm.py): this process still opens,
  checks, owns the parts folders and joins; each chunk not done yet is a Dask task that a worker
  renders through the same `open_sinks` + `draw_chunk`, so the parts are the same.
- Several colour variations share one generation: each frame is sampled once and composed once
  per variation (`variations_at_once` files side by side).
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
from ..encode import VideoWriter
from ..errors import UnstableError
from ..formats import PRESETS
from ..frame.cursor import FrameCursor
from ..frame.sinks import EncoderSink
from ..renderjob import RenderJob, Variation
from .job_frames import open_job
from .naming import choose_outputs, output_paths
from .parts import (Finisher, RenderResult, RenderStats, Target, default_threads, join_parts, prepare_target,
                    torch_threads)
from .show_frames import open_show, show_frame_count
from .spec import RenderSpec

__all__ = ["Renderer", "job_renderer", "show_renderer", "show_frame_count"]


class Renderer:
    """Renders a `RenderSpec` (its sources already open and checked): `render()` writes its files.

    `ctx` is an OpenGL context to use (a headless EGL one is made, and released, when None).
    `threads`: torch CPU threads while rendering (default: the spec's, else half the cores).
    """

    def __init__(self, spec: RenderSpec, device: torch.device = torch.device("cpu"), *, ctx=None,
                 echo: Callable[[str], None] = print, threads: int | None = None):
        self.spec, self.device = spec, torch.device(device)
        self.threads = threads or spec.threads or default_threads()
        self.echo = echo
        self._ctx, self._own_ctx = ctx, ctx is None
        self._comp: Compositor | None = None
        self._cursor: FrameCursor | None = None
        self.stats = RenderStats()

    @property
    def audio(self):
        """A show render's unstable.audio.mapping.FileInput (muxed after the join), or None."""
        return self.spec.audio

    # -- frames --------------------------------------------------------------------------------

    def _compositor(self) -> Compositor:
        if self._comp is None:
            if self._ctx is None:
                from ..display.gl import create_headless_context
                self._ctx = create_headless_context()
            self._comp = Compositor(self._ctx, tuple(self.spec.size))
            self._cursor = self.spec.cursor_over(self._comp)
        return self._comp

    @property
    def cursor(self) -> FrameCursor:
        """Any frame of the render on demand: its timeline and pipeline over this renderer's compositor."""
        self._compositor()
        return self._cursor

    def close(self) -> None:
        """Free the compositor (and the GL context when this renderer made it)."""
        if self._comp is not None:
            self._comp.release()
            self._comp = None
            self._cursor = None
        if self._own_ctx and self._ctx is not None:
            self._ctx.release()
            self._ctx = None

    def __enter__(self) -> "Renderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def compose(self, frame: int, variations: Sequence[Variation]) -> Iterator[Variation]:
        """Sample `frame` once and compose it once per variation; yields each variation while its
        picture is in the compositor."""
        cursor = self.cursor
        state = result = None
        for v in variations:
            colour = v if self.spec.graded else None
            if result is None:
                state, result = cursor.frame(frame, colour)
            else:
                cursor.compose(state, result, colour)
            yield v

    def iter_frames(self, start: int, end: int, variations: Sequence[Variation] | None = None
                    ) -> Iterator[tuple[int, Variation, np.ndarray]]:
        """(frame, variation, [H, W, 3] uint8, a reused buffer) for frames start..end-1 without
        encoding (tests, benchmarks)."""
        variations = list(variations or self.spec.variations)
        with torch_threads(self.threads):
            for f in range(start, end):
                for v in self.compose(f, variations):
                    yield f, v, self._comp.read()

    # -- rendering -----------------------------------------------------------------------------

    def key(self, variation: Variation, span: tuple[int, int]) -> str:
        """Hash of everything that decides the pixels and the encoding of one output's parts (its
        manifest's key; a cluster worker's must equal the driver's)."""
        blob = {"render": self.spec.settings, "variation": to_dict(variation), "frames": list(span),
                "sources": self.spec.identity, "device": self.device.type, "torch": torch.__version__,
                "threads": self.threads}
        return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:20]

    def _chunks(self, start: int, end: int) -> list[tuple[int, int]]:
        # Chunks are a whole number of look-ahead groups, aligned to absolute frame numbers.
        k = -(-self.spec.chunk // self.spec.align) * self.spec.align
        out, a = [], start
        while a < end:
            b = min(end, (a // k + 1) * k)
            out.append((a, b))
            a = b
        return out

    def prepare_target(self, index: int, variation: Variation, out: Path, span: tuple[int, int],
                       fresh: bool) -> Target:
        """Output `out`'s parts folder for frames [A, B), locked, with its manifest and the parts
        already done (kept unless `fresh`)."""
        manifest = {"key": self.key(variation, span), "job": self.spec.name, "variation": variation.name,
                    "frames": list(span), "preset": self.spec.preset}
        suffix = "" if PRESETS[self.spec.preset].sequence else out.suffix
        return prepare_target(index, variation, out, self._chunks(*span), manifest, suffix, fresh)

    def outputs(self, out: str | None = None, span: tuple[int, int] | None = None,
                variations: Sequence[str] = ()) -> list[tuple[int, Variation, Path]]:
        """(index, variation, output path) of each output a render with these options writes."""
        return output_paths(self.spec, out, span, variations)

    def render(self, *, out: str | None = None, span: tuple[int, int] | None = None,
               variations: Sequence[str] = (), fresh: bool = False, show_progress: bool = True,
               overwrite: bool = False) -> list[RenderResult]:
        """Render every chosen variation for frames [A, B) (default: all) to finished files.

        Finished parts of an interrupted render of the same job are kept unless `fresh`. An output
        that exists is kept and the render goes to a numbered name beside it, unless `overwrite`.
        """
        span = span or (0, self.spec.length)
        if not 0 <= span[0] < span[1] <= self.spec.length:
            raise UnstableError(f"frames {span[0]}:{span[1]}: expected 0 <= A < B <= {self.spec.length}")
        outputs = choose_outputs(self.outputs(out, span, variations), overwrite, self.echo)
        self._compositor()  # no GL context is an error before any file is touched
        results: list[RenderResult] = []
        group_size = self.spec.variations_at_once
        t_start = time.perf_counter()
        with torch_threads(self.threads):
            for g in range(0, len(outputs), group_size):
                results += self._render_group(outputs[g:g + group_size], span, fresh, show_progress,
                                              len(outputs) > 1)
        self.stats.generation_seconds = self._cursor.sample_seconds
        self.stats.compose_seconds = self._cursor.compose_seconds
        self.stats.wall_seconds += time.perf_counter() - t_start
        return results

    def _render_group(self, group, span, fresh, show_progress, several) -> list[RenderResult]:
        """Render one group of variations from one generation (see `render`), holding their parts' locks."""
        t_group = time.perf_counter()
        targets: list[Target] = []
        try:
            for i, v, p in group:
                targets.append(self.prepare_target(i, v, p, span, fresh))
            return self._render_targets(targets, span, show_progress, several, t_group)
        finally:
            for t in targets:
                if t.lock is not None:
                    t.lock.close()

    def _render_targets(self, targets: list[Target], span, show_progress, several, t_group) -> list[RenderResult]:
        from tqdm import tqdm

        from ..progress import progress_bar

        preset = PRESETS[self.spec.preset]
        results = []
        suffix = "" if preset.sequence else targets[0].out.suffix
        todo = [c for c in targets[0].chunks if any(c not in t.done for t in targets)]
        total = sum(b - a for a, b in todo)
        names = ", ".join(t.variation.name for t in targets)
        desc = f"render {self.spec.name} [{names}]" if several else f"render {self.spec.name}"
        bar = (progress_bar(desc, total, unit="frame") if show_progress
               else tqdm(total=total, disable=True))
        finisher = Finisher()
        sinks: dict[int, EncoderSink] = {}
        rendered = 0
        try:
            for chunk in todo:
                need = [t for t in targets if chunk not in t.done]
                sinks = {}
                self.open_sinks(need, chunk, suffix, sinks)
                self.draw_chunk(chunk, need, sinks, lambda: bar.update(1))
                rendered += chunk[1] - chunk[0]
                finisher.submit([(sinks[t.index].writer, t.part(chunk, suffix, tmp=True), t.part(chunk, suffix))
                                 for t in need])
                for t in need:
                    t.done.add(chunk)
            finisher.wait()
        except BaseException:
            # Interrupted or failed: finalise what is open (its tmp part is dropped on the next
            # run), keep the finished parts for a resume, and report the first error.
            for sink in sinks.values():
                sink.writer.close(_raise=False)
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
            info = join_parts(t, suffix, span[1] - span[0], self.spec.fps, preset.sequence)
            results.append(RenderResult(t.variation.name, t.out, info.frames, info.fps, info.width, info.height,
                                        self.spec.preset, rendered, time.perf_counter() - t_group))
        return results

    def open_sinks(self, need: list[Target], chunk: tuple[int, int], suffix: str, sinks: dict,
                   tag: str = "") -> None:
        """Start one encoder sink per target into its chunk's temporary part (added to `sinks` one
        by one, so a failure leaves every started one there to be closed)."""
        w, h = self.spec.size
        for t in need:
            # Two groups of queue: ffmpeg keeps encoding while the next group is sampled.
            sinks[t.index] = EncoderSink(VideoWriter(t.part(chunk, suffix, tmp=True, tag=tag), w, h, self.spec.fps,
                                                     self.spec.preset, queue_frames=max(8, 2 * self.spec.align)))

    def draw_chunk(self, chunk: tuple[int, int], need: list[Target], sinks: dict,
                   on_frame: Callable[[], None] | None = None) -> None:
        """Every frame of `chunk`, composed for each target's variation, into its sink. The one way
        a part is made, in this process or on a cluster worker (unstable.render.farm)."""
        chosen = [t.variation for t in need]
        self._compositor()
        for f in range(*chunk):
            for t, _ in zip(need, self.compose(f, chosen)):
                sink = sinks[t.index]
                before = sink.wait_seconds
                sink.put(f, self._comp)
                self.stats.write_wait_seconds += sink.wait_seconds - before
            if on_frame is not None:
                on_frame()


def job_renderer(job: RenderJob, path: str | Path, device: torch.device = torch.device("cpu"), *, ctx=None,
                 echo: Callable[[str], None] = print, progress: Callable | None = None,
                 threads: int | None = None) -> Renderer:
    """A Renderer of `job` (read from `path`): its sources opened on `device` and checked (a bad
    job fails here, before any file is touched); close it when done."""
    spec = open_job(job, str(path), torch.device(device), progress, echo)
    return Renderer(spec, device, ctx=ctx, echo=echo, threads=threads)


def show_renderer(show_path: str | Path, *, seconds: float | None = None, preset: str = "h264",
                  size: tuple[int, int] | None = None, automation: str | Path | None = None,
                  run: str | Path | None = None, device: torch.device = torch.device("cpu"),
                  echo: Callable[[str], None] = print, ctx=None, threads: int | None = None,
                  audio: str | Path | None = None) -> Renderer:
    """A Renderer of the show at `show_path` from its run folders (`run`, default runs/live/<show>),
    its automation replayed when given, following `audio` (or the show's `[audio] file`) when
    given; close it when done."""
    spec = open_show(show_path, seconds=seconds, preset=preset, size=size, automation=automation, run=run,
                     device=torch.device(device), echo=echo, audio=audio)
    return Renderer(spec, device, ctx=ctx, echo=echo, threads=threads)
