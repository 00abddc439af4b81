"""Offline rendering: a render job (unstable/renderjob.py) -> finished video files.

`unstable render JOB` is this module. The frames go through the same path as the live show:
System.sample -> compositor (unstable/display/compositor.py) -> VideoWriter, driven by the frame
clock instead of wall time.

    renderer = Renderer(load_job("render/demo.toml"), "render/demo.toml", torch.device("cpu"))
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
  job and redoes only the rest; then the parts are joined without re-encoding (probe.concat).
- Encoding overlaps generation: ffmpeg runs in its own process, fed by the VideoWriter's thread,
  and a finished part is closed in a background thread while the next part renders.
- On the CPU, generation uses half the cores (`threads`, fixed for the whole render) and leaves the
  rest to ffmpeg and the compositor: on a 2-core machine two torch threads fighting ffmpeg for the
  cores made a batch up to 100x slower here (each parallel region waits for a descheduled thread). A fixed
  thread count is also what makes frames reproducible: torch's CPU reductions, and so the last
  bits of a frame, depend on it.
- Several colour variations share one generation: each frame is composed once per variation
  (`variations_at_once` files side by side) and the images are generated once per group.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from .checkpoint import load_checkpoint
from .config import to_dict
from .display.compositor import Compositor
from .display.layout import Layout, Scene, cells
from .encode import VideoWriter
from .formats import PRESETS
from .probe import concat, probe
from .errors import ConfigError, UnstableError
from .renderjob import (FramePlan, RenderJob, Variation, check_suffix, load_job, output_path,
                        parse_frame_range)
from .show import display_name
from .system import build_system, load_piece, piece_from_dict
from .trainer import restore
from .walk import Walk

__all__ = ["Renderer", "RenderResult", "render_job", "open_sources", "Source", "list_checkpoints"]

_PART = re.compile(r"^(part|tmp)_(\d{6,})-(\d{6,})")


# ------------------------------------------------------------------------------------- sources

@dataclass
class Source:
    """One open source: its system (weights loaded) and which of its panels the frame shows."""

    name: str
    system: object
    panels: dict[str, str]          # display name -> the system's panel name
    params: dict[str, float]        # live parameters for System.sample
    identity: dict                  # what decides its pixels (for the resume manifest)
    run: Path | None = None         # the run folder (timelapse)
    checkpoints: list[tuple[int, Path]] = field(default_factory=list)  # timelapse: (step, file)


def list_checkpoints(run: Path, latest_step: int) -> list[tuple[int, Path]]:
    """A run's checkpoints in step order: checkpoints/step_NNNNNN.pt, then checkpoint.pt if newer."""
    found = []
    for f in (run / "checkpoints").glob("step_*.pt"):
        m = re.fullmatch(r"step_(\d+)\.pt", f.name)
        if m:
            found.append((int(m[1]), f))
    found.sort()
    if not found or found[-1][0] < latest_step:
        found.append((latest_step, run / "checkpoint.pt"))
    return found


def _file_identity(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def open_sources(job: RenderJob, source: str, device: torch.device,
                 progress: Callable | None = None, echo: Callable[[str], None] = print) -> list[Source]:
    """Load every source of `job` on `device`; a missing run, a foreign checkpoint, an unknown panel
    or parameter is one ConfigError naming the job file and key. Optional sources whose run is
    missing are left out (with a note through `echo`)."""
    from tqdm import tqdm
    progress = progress or (lambda desc, total=None, **kw: tqdm(total=total, disable=True))
    opened: list[Source] = []
    for name, s in job.sources.items():
        key = f"sources.{name}"
        if s.piece:
            if not Path(s.piece).is_file():
                raise ConfigError(source, f"{key}.piece", f"{s.piece!r}: no such piece file")
            piece = load_piece(s.piece)
            system = build_system(piece, device)
            system.prepare(progress)
            identity = {"piece": to_dict(piece)}
            run = None
        else:
            path = Path(s.run)
            ckpt = path / "checkpoint.pt" if path.is_dir() else path
            if not ckpt.is_file():
                if s.optional:
                    echo(f"note: {source}: {key}.run {s.run!r} does not exist yet; rendering without it")
                    continue
                what = ("no checkpoint.pt in that run folder" if path.is_dir()
                        else "no such run folder or checkpoint file")
                raise ConfigError(source, f"{key}.run", f"{s.run!r}: {what} (train it first: `unstable train`, "
                                  "or a show with `unstable live`)")
            try:
                payload = load_checkpoint(ckpt, map_location=device)
                piece = piece_from_dict(payload["piece"], f"{ckpt} (its piece)")
                system = build_system(piece, device)
                restore(system, payload, str(ckpt))
            except ConfigError:
                raise
            except UnstableError as e:
                raise ConfigError(source, f"{key}.run", str(e)) from None
            identity = {**_file_identity(ckpt), "step": int(payload.get("step", 0)),
                        "fingerprint": payload.get("fingerprint")}
            run = ckpt.parent
        available = system.panels()
        chosen = list(s.panels) or list(available)
        for p in chosen:
            if p not in available:
                raise ConfigError(source, f"{key}.panels", f"no panel {p!r} in {name}'s system, expected one of "
                                  f"{', '.join(repr(a) for a in available)}")
        specs = {spec.name: spec for spec in system.param_specs()}
        params = {k: v for k, v in job.params.items() if k in specs}
        for k, v in s.params.items():
            if k not in specs:
                raise ConfigError(source, f"{key}.params.{k}", f"not a parameter of {name}'s system, expected one of "
                                  f"{', '.join(sorted(specs))}")
            params[k] = v
        for k, v in params.items():
            spec = specs[k]
            if not spec.lo <= v <= spec.hi:
                where = f"{key}.params.{k}" if k in s.params else f"params.{k}"
                raise ConfigError(source, where, f"{v!r} is out of range, expected {spec.lo} to {spec.hi}")
        # As in a live show: the walk's temperature (here the job's curve) scales the latents and a
        # system's own `temperature` parameter, if it has one, keeps its default unless set here.
        panels = {display_name(name, p): p for p in chosen}
        opened.append(Source(name, system, panels, params, identity, run))
    if not opened:
        raise ConfigError(source, "sources", "none of the sources exists yet (all optional runs are missing)")
    for k in job.params:
        if not any(k in {sp.name for sp in src.system.param_specs()} for src in opened):
            raise ConfigError(source, f"params.{k}", "not a parameter of any source's system")
    if job.timelapse.on:
        src = opened[0]
        tl = job.timelapse
        if not Path(job.sources[src.name].run).is_dir():
            raise ConfigError(source, f"sources.{src.name}.run", f"{job.sources[src.name].run!r}: a timelapse "
                              "needs a run folder (its checkpoints/ are the timelapse), not a checkpoint file")
        ckpts = list_checkpoints(src.run, src.identity["step"])
        ckpts = [c for c in ckpts if c[0] >= tl.first_step and (tl.last_step is None or c[0] <= tl.last_step)]
        ckpts = ckpts[::tl.every]
        if not ckpts:
            raise ConfigError(source, "timelapse", f"no checkpoints of {src.run} between steps {tl.first_step} "
                              f"and {tl.last_step if tl.last_step is not None else 'the last'}")
        src.checkpoints = ckpts
        src.identity["timelapse"] = [{"step": st, **_file_identity(f)} for st, f in ckpts]
    return opened


# ------------------------------------------------------------------------------------- frames

class _Frames:
    """Panel images for any frame number: walk batches or timelapse checkpoints, cached."""

    def __init__(self, job: RenderJob, source: str, sources: list[Source], device: torch.device):
        self.job, self.sources, self.device = job, sources, device
        # One walk per source over all of its system's panels, exactly as a live show walks each
        # piece: a panel's path is seeded by its place in its own system, so a render shows the
        # same latents as the show with the same [walk] (and leaving a panel out changes nothing).
        self.walks: dict[str, Walk] = {}
        for src in sources:
            dims = {display_name(src.name, p): d for p, d in src.system.panels().items()}
            try:
                self.walks[src.name] = Walk(job.walk, dims, device)
            except (UnstableError, ValueError) as e:
                raise ConfigError(source, "walk.latents", str(e).split(": ", 1)[-1]) from None
        self.panel_names = [d for src in sources for d in src.panels]
        checkpoints = len(sources[0].checkpoints) if job.timelapse.on else 0
        # Every walk has the same keyframe count and period, hence the same loop length.
        self.plan = FramePlan.of(job, source, next(iter(self.walks.values())).duration, checkpoints)
        self._batch_index: int | None = None
        self._batch: dict[str, torch.Tensor] = {}
        self._ckpt_images: dict[int, dict[str, torch.Tensor]] = {}
        self.generation_seconds = 0.0

    def latents(self, frames: Sequence[int]) -> dict[str, torch.Tensor]:
        """{display panel: z [T, D]} at these frames, temperature applied (exactly as rendered)."""
        frames = list(frames)
        return self._scaled([self.plan.walk_time(f) for f in frames], self.plan.temperatures(np.array(frames)))

    def _scaled(self, times: list, temperatures: np.ndarray) -> dict[str, torch.Tensor]:
        # Every path is linear in the temperature (walk.py), so scaling rows by T(frame) is the
        # walk at that temperature, frame by frame.
        temp = torch.as_tensor(temperatures, dtype=torch.float32, device=self.device)[:, None]  # [T, 1]
        out = {}
        for src in self.sources:
            z = self.walks[src.name].latents_at_many(times, temperature=1.0)
            out.update({d: z[d] * temp for d in src.panels})  # [T, D] each
        return out

    def _sample(self, latents: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for src in self.sources:
            images = src.system.sample({p: latents[d] for d, p in src.panels.items()}, src.params)
            out.update({d: images[p] for d, p in src.panels.items()})  # [N, 3, H, W] each
        return out

    def _walk_images(self, frame: int) -> dict[str, torch.Tensor]:
        b = self.job.batch
        index = frame // b
        if index != self._batch_index:
            t0 = time.perf_counter()
            self._batch = self._sample(self.latents(range(index * b, index * b + b)))
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
            at = Fraction(repr(self.job.timelapse.at))
            images = self._sample(self._scaled([at], self.plan.temperatures(np.array([0]))))
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


# ------------------------------------------------------------------------------------- threads

def default_threads() -> int:
    """Torch CPU threads for rendering: half the cores this process may use (the rest encode)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, cores // 2)


@contextmanager
def torch_threads(n: int):
    """Run the block with `n` torch intra-op threads, then restore the caller's setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------- writing

@dataclass(frozen=True)
class RenderResult:
    """One finished output file (or PNG folder) and what it took."""

    variation: str
    path: Path
    frames: int
    fps: Fraction
    width: int
    height: int
    preset: str
    rendered: int             # frames rendered now (the rest came from parts of an earlier run)
    seconds: float


@dataclass
class RenderStats:
    """Where the time of `Renderer.render` went (for the benchmark)."""

    wall_seconds: float = 0.0
    generation_seconds: float = 0.0     # System.sample
    compose_seconds: float = 0.0        # compositor render + read (main thread)
    write_wait_seconds: float = 0.0     # time write() blocked on a full encoder queue
    encode_seconds: float = 0.0         # writer threads' time inside ffmpeg pipes (summed)
    frames: int = 0


class _Finisher:
    """Closes the writers of finished chunks in the background and renames the parts into place.

    A chunk's closing starts as soon as its last frame is queued (so an interruption right after
    still keeps it); `submit` then waits for the chunk before it, so at most two chunks are ever
    being encoded and memory stays bounded.
    """

    def __init__(self):
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        self._lock = threading.Lock()
        self.encode_seconds = 0.0

    def submit(self, items: list[tuple[VideoWriter, Path, Path]]) -> None:
        def run():
            try:
                for writer, tmp, final in items:
                    stats = writer.close()
                    with self._lock:
                        self.encode_seconds += stats.encode_seconds
                    os.replace(tmp, final)
            except BaseException as e:  # noqa: BLE001 - re-raised in the main thread by wait()
                with self._lock:
                    self._errors.append(e)
                for writer, _, _ in items:
                    writer.close(_raise=False)

        thread = threading.Thread(target=run, name="render:finish", daemon=True)
        thread.start()
        self._threads.append(thread)
        self.wait(keep=1)

    def wait(self, keep: int = 0) -> None:
        """Wait until at most `keep` chunks are still closing; raise the first error of any."""
        while len(self._threads) > keep:
            self._threads[0].join()
            self._threads.pop(0)
        with self._lock:
            if self._errors:
                error = self._errors[0]
                self._errors.clear()
                raise error


@dataclass
class _Target:
    """One output being made: a variation, its file, its parts folder and the chunks already done."""

    index: int
    variation: Variation
    out: Path
    parts: Path
    chunks: list[tuple[int, int]]
    done: set = field(default_factory=set)
    lock: object = None               # the open lock file while this render owns the parts folder

    def part(self, chunk: tuple[int, int], suffix: str, tmp: bool = False) -> Path:
        return self.parts / f"{'tmp' if tmp else 'part'}_{chunk[0]:06d}-{chunk[1]:06d}{suffix}"


def _lock(path: Path, out: Path):
    """Hold an exclusive lock on `path`: a second render of the same output would delete this one's
    unfinished parts, so it must stop at once instead. Returns the open file (closing it unlocks)."""
    f = open(path, "a+")
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        return f
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise UnstableError(f"{out}: another render is writing it right now (it holds {path}); "
                            "wait for it to finish or stop it") from None
    return f


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _without_sources(layout: Layout, missing: Sequence[str]) -> Layout:
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


class Renderer:
    """Renders a validated job: opens its sources on `device` (fails early), then `render()`.

    `ctx` is an OpenGL context to use (a headless EGL one is made, and released, when None).
    `threads`: torch CPU threads while rendering (default: half the cores, at least one).
    """

    def __init__(self, job: RenderJob, source: str, device: torch.device = torch.device("cpu"), *,
                 ctx=None, echo: Callable[[str], None] = print, progress: Callable | None = None,
                 threads: int | None = None):
        self.job, self.source, self.device = job, str(source), torch.device(device)
        self.threads = threads or default_threads()
        self.echo = echo
        self.sources = open_sources(job, self.source, self.device, progress, echo)
        self.frames = _Frames(job, self.source, self.sources, self.device)
        panel_names = self.frames.panel_names
        missing = [n for n in job.sources if n not in {s.name for s in self.sources}]
        self.layout = _without_sources(job.layout, missing)
        self.layout.check_panels(panel_names, self.source)
        try:
            cells(self.layout, tuple(job.size), self.layout.panel_names(panel_names))
        except ValueError as e:
            raise ConfigError(self.source, "layout", str(e)) from None
        self.plan = self.frames.plan
        self._ctx, self._own_ctx = ctx, ctx is None
        self._comp: Compositor | None = None
        self.stats = RenderStats()

    # -- compositing ---------------------------------------------------------------------------

    def _compositor(self) -> Compositor:
        if self._comp is None:
            if self._ctx is None:
                from .display.gl import create_headless_context
                self._ctx = create_headless_context()
            self._comp = Compositor(self._ctx, tuple(self.job.size))
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
        images, nxt, mix = self.frames.images(frame)
        comp = self._compositor()
        for v in variations:
            t0 = time.perf_counter()
            comp.render(Scene(images, self.layout, v),
                        next=Scene(nxt, self.layout, v) if nxt is not None else None, mix=mix)
            picture = comp.read()
            self.stats.compose_seconds += time.perf_counter() - t0
            yield v, picture

    def iter_frames(self, start: int, end: int, variations: Sequence[Variation] | None = None
                    ) -> Iterator[tuple[int, Variation, np.ndarray]]:
        """(frame, variation, [H, W, 3] uint8) for frames start..end-1 without encoding (tests, benchmarks)."""
        variations = list(variations or self.job.variation_list())
        with torch_threads(self.threads):
            for f in range(start, end):
                for v, picture in self.compose(f, variations):
                    yield f, v, picture

    # -- rendering -----------------------------------------------------------------------------

    def _key(self, variation: Variation, frames: tuple[int, int]) -> str:
        """Hash of everything that decides the pixels and the encoding of one output's parts."""
        job = to_dict(self.job)
        for k in ("name", "output", "variations", "hue_rotations", "variations_at_once"):
            job.pop(k)
        blob = {"job": job, "variation": to_dict(variation), "frames": list(frames),
                "sources": [s.identity for s in self.sources], "device": self.device.type,
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

    def _prepare_target(self, index: int, variation: Variation, out: Path, frames: tuple[int, int],
                        fresh: bool) -> _Target:
        parts = out.with_name(out.name + ".parts")
        target = _Target(index, variation, out, parts, self._chunks(*frames))
        suffix = "" if PRESETS[self.job.preset].sequence else out.suffix
        manifest = parts / "manifest.json"
        key = self._key(variation, frames)
        keep = False
        if parts.is_dir() and manifest.is_file() and not fresh:
            try:
                keep = json.loads(manifest.read_text()).get("key") == key
            except (OSError, json.JSONDecodeError):
                keep = False
        parts.mkdir(parents=True, exist_ok=True)
        lock = _lock(parts / ".lock", out)
        try:
            for f in parts.iterdir():
                m = _PART.match(f.name)
                if m and (m[1] == "tmp" or not keep):
                    _remove(f)  # unfinished parts, or parts of a different job: only ours, by name
            manifest.write_text(json.dumps({"key": key, "job": self.job.name, "variation": variation.name,
                                            "frames": list(frames), "preset": self.job.preset}) + "\n")
        except BaseException:
            lock.close()
            raise
        target.lock = lock
        target.done = {c for c in target.chunks if target.part(c, suffix).exists()}
        return target

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
               variations: Sequence[str] = (), fresh: bool = False, show_progress: bool = True) -> list[RenderResult]:
        """Render every chosen variation for frames [A, B) (default: all) to finished files.

        Finished parts of an interrupted render of the same job are kept unless `fresh`.
        """
        frames = frames or (0, self.plan.frames)
        if not 0 <= frames[0] < frames[1] <= self.plan.frames:
            raise UnstableError(f"frames {frames[0]}:{frames[1]}: expected 0 <= A < B <= {self.plan.frames}")
        outputs = self.outputs(out, frames, variations)
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
        targets: list[_Target] = []
        try:
            for i, v, p in group:
                targets.append(self._prepare_target(i, v, p, frames, fresh))
            return self._render_targets(targets, frames, show_progress, several, t_group)
        finally:
            for t in targets:
                if t.lock is not None:
                    t.lock.close()

    def _render_targets(self, targets: list[_Target], frames, show_progress, several, t_group) -> list[RenderResult]:
        from .trainer import progress_bar
        from tqdm import tqdm

        preset = PRESETS[self.job.preset]
        w, h = self.job.size
        results = []
        suffix = "" if preset.sequence else targets[0].out.suffix
        todo = [c for c in targets[0].chunks if any(c not in t.done for t in targets)]
        total = sum(b - a for a, b in todo)
        names = ", ".join(t.variation.name for t in targets)
        desc = f"render {self.job.name} [{names}]" if several else f"render {self.job.name}"
        bar = (progress_bar(desc, total, unit="frame") if show_progress
               else tqdm(total=total, disable=True))
        finisher = _Finisher()
        writers: dict[int, VideoWriter] = {}
        rendered = 0
        try:
            for chunk in todo:
                need = [t for t in targets if chunk not in t.done]
                writers = {}
                for t in need:
                    tmp = t.part(chunk, suffix, tmp=True)
                    # Two batches of queue: ffmpeg keeps encoding while the next batch is generated.
                    writers[t.index] = VideoWriter(tmp, w, h, self.plan.fps, self.job.preset,
                                                   queue_frames=max(8, 2 * self.job.batch))
                chosen = [t.variation for t in need]
                for f in range(*chunk):
                    for t, (_, picture) in zip(need, self.compose(f, chosen)):
                        t0 = time.perf_counter()
                        writers[t.index].write(picture)
                        self.stats.write_wait_seconds += time.perf_counter() - t0
                    bar.update(1)
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

    def _join(self, t: _Target, suffix: str, frames: tuple[int, int]):
        """Parts -> the output file, checked for its exact frame count; the parts folder goes."""
        parts = [t.part(c, suffix) for c in t.chunks]
        sequence = PRESETS[self.job.preset].sequence
        t.out.parent.mkdir(parents=True, exist_ok=True)
        if sequence:
            info = concat(parts, t.out)
        elif len(parts) == 1:
            os.replace(parts[0], t.out)
            info = probe(t.out)
        else:
            tmp = t.out.with_name(f".{t.out.stem}.joining{t.out.suffix}")
            try:
                concat(parts, tmp)
                os.replace(tmp, t.out)
            finally:
                if tmp.exists():
                    tmp.unlink()
            info = probe(t.out)
        expected = frames[1] - frames[0]
        if info.frames != expected or info.fps != self.plan.fps:
            raise UnstableError(f"{t.out}: has {info.frames} frames at {info.fps} fps, expected {expected} at "
                                f"{self.plan.fps} fps (the parts are kept in {t.parts})")
        shutil.rmtree(t.parts)
        return info


def render_job(job_path: str | Path, *, out: str | None = None, frames: str | None = None,
               variations: Sequence[str] = (), device: torch.device = torch.device("cpu"), fresh: bool = False,
               echo: Callable[[str], None] = print, show_progress: bool = True, ctx=None,
               threads: int | None = None) -> list[RenderResult]:
    """`unstable render JOB`: load, check, render and join; `frames` is "A:B" (a part of the job)."""
    from .trainer import progress_bar
    job = load_job(job_path)
    with Renderer(job, str(job_path), device, ctx=ctx, echo=echo, threads=threads,
                  progress=progress_bar if show_progress else None) as renderer:
        span = parse_frame_range(frames, renderer.plan.frames) if frames is not None else None
        return renderer.render(out=out, frames=span, variations=variations, fresh=fresh,
                               show_progress=show_progress)
