"""Render jobs: `render/*.toml` files validated into a `RenderJob`, and the frame plan they imply.

A job says what to show (sources: trained runs or pieces, and which of their panels), how
(a compositor `Layout`, a size, colour variations), when (fps, duration or frame count, a
`WalkSettings` walk, a temperature curve, or a training timelapse) and where to (a codec preset
and an output path pattern). Everything that can be checked without rendering is checked here, so
a bad job fails before the first frame with one `ConfigError` line naming the file and key.

    job = load_job("render/equilibrium-1-1.toml")
    plan = FramePlan.of(job, "render/equilibrium-1-1.toml", walk.duration)  # once the sources are open

Panel names are `source/panel` (`eq/g0`, `bad/decoder`), as in a show's layout, so a show's
`[layout]` and `[walk]` tables can be copied into a job: each source walks its own path like a
piece in a live show, and the render shows what the show showed. Temperature: the job's (the
curve, or walk.temperature) scales the latents like a show's walk temperature; a system's own
`temperature` parameter keeps its default unless `sources.NAME.params` sets it. Paths in a job
(runs, pieces, output) are relative to the folder `unstable` runs in, like `runs/` for
`unstable train`.

Time: frame n of a walk render is at walk time `start + n * speed / fps`, an exact Fraction, so
every panel is on one time base and a looped walk wraps bit-exactly. Without `duration` or
`frames`, a looped walk renders exactly one loop: the frame count is the loop length times fps,
rounded, and the speed is nudged (by under half a frame per loop) so the frame after the last is
the first again.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import string
import types
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from .config import load_dataclass, read_toml, setting
from .display.layout import Colour, Layout
from .formats import MAX_FRAMES, PRESETS, check_work, exact, parse_fps
from .errors import ConfigError, UnstableError
from .walk import WalkSettings

__all__ = ["SourceSettings", "TimelapseSettings", "Variation", "RenderJob", "load_job", "FramePlan",
           "output_path", "parse_frame_range", "check_size", "check_suffix"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_PLACEHOLDERS = ("job", "variation", "index")


@dataclass(frozen=True)
class SourceSettings:
    """`[sources.NAME]`: one trained run (or an untrained piece) whose panels the frame shows."""

    run: str = setting("", doc="a run folder (uses its checkpoint.pt) or a checkpoint file (.pt)")
    piece: str = setting("", doc="instead of a run: a piece file, rendered with its untrained, seeded weights")
    panels: tuple[str, ...] = setting((), doc="which of the system's panels to show, in order (empty: all)")
    params: dict[str, float] = setting(default_factory=lambda: types.MappingProxyType({}),
                                       doc="live parameters of this source's system (e.g. truncation = 0.7)")
    optional: bool = setting(False, doc="leave this source out, with a note, while its run does not exist")

    def __post_init__(self):
        if self.run and self.piece:
            raise ValueError("run: give either run or piece, not both")
        if not self.run and not self.piece:
            raise ValueError("run: missing, expected a run folder or checkpoint file (or `piece` for untrained weights)")
        if self.optional and self.piece:
            raise ValueError("optional: only a run can be optional (a piece is always there)")


@dataclass(frozen=True)
class TimelapseSettings:
    """`[timelapse]`: show the evolution of a run instead of a walk: fixed latents, successive checkpoints."""

    on: bool = setting(False, doc="render a training timelapse of the (single) run source")
    at: float = setting(0.0, ge=0, doc="walk time in seconds of the fixed latents (the walk does not move)")
    hold: int = setting(1, ge=1, le=100_000, doc="frames each checkpoint is shown")
    crossfade: int = setting(0, ge=0, le=100_000, doc="last frames of each hold that crossfade into the next checkpoint")
    every: int = setting(1, ge=1, doc="use every n-th checkpoint")
    first_step: int = setting(0, ge=0, doc="leave out checkpoints before this step")
    last_step: int | None = setting(None, ge=0, doc="leave out checkpoints after this step (unset: up to the last)")

    def __post_init__(self):
        if self.crossfade >= self.hold:
            raise ValueError(f"crossfade: {self.crossfade} frames does not fit a hold of {self.hold} frames, "
                             "expected fewer than `hold`")
        if self.last_step is not None and self.last_step < self.first_step:
            raise ValueError(f"last_step: {self.last_step} is before first_step {self.first_step}")


@dataclass(frozen=True)
class Variation(Colour):
    """`[[variations]]`: one output file with its own colour grade (hue, saturation, brightness)."""

    name: str = setting("", doc="names the output file ({variation} in the output pattern)")

    def __post_init__(self):
        if not _NAME.match(self.name):
            raise ValueError(f"name: {self.name!r} is not a usable name, expected letters, digits, '_', '-', '.'")


@dataclass(frozen=True)
class RenderJob:
    """A render job file (render/*.toml)."""

    sources: dict[str, SourceSettings]
    name: str = setting("", doc="the job's name ({job} in the output pattern); default: the file's name")
    layout: Layout = setting(default_factory=Layout, doc="where the panels go (as in shows)")
    size: tuple[int, int] = setting((1024, 512), ge=1, le=16384, doc="output width and height in pixels")
    fps: int | float | str = setting(30, doc="frame rate: an integer, or exact, as a string like \"30000/1001\"")
    duration: float | None = setting(None, gt=0, doc="seconds of video (frames = duration x fps, rounded)")
    frames: int | None = setting(None, ge=1, doc="number of frames (instead of duration)")
    speed: float = setting(1.0, gt=0, le=1000, doc="walk seconds per video second (a default loop adjusts it slightly)")
    start: float = setting(0.0, ge=0, doc="walk time of the first frame, seconds")
    walk: WalkSettings = setting(default_factory=WalkSettings, doc="the latent walk (keyframes, interpolation, loop)")
    temperature: tuple[tuple[float, float], ...] = setting(
        (), doc="temperature over time: [[seconds, T], ...], linear between points (empty: walk.temperature)")
    params: dict[str, float] = setting(default_factory=lambda: types.MappingProxyType({}),
                                       doc="live parameters for every source whose system has them")
    curves: dict[str, tuple[tuple[float, float], ...]] = setting(
        default_factory=lambda: types.MappingProxyType({}),
        doc="keyframed parameters: \"SOURCE.NAME\" (or \"show.master_fade\") = [[seconds, value], ...], "
            "linear between points, held outside; any live parameter, hue/saturation/fade/walk_speed included")
    timelapse: TimelapseSettings = setting(default_factory=TimelapseSettings, doc="render a training timelapse")
    variations: tuple[Variation, ...] = setting((), doc="colour variations, one file each (empty: one, 'main')")
    hue_rotations: int = setting(0, ge=0, le=10_000, doc="instead of variations: N files, hue turned by 360/N each")
    preset: str = setting("h264", doc=f"codec preset: {', '.join(PRESETS)}")
    output: str = setting("render/out/{job}-{variation}.mp4",
                          doc="output path pattern with {job}, {variation}, {index}")
    batch: int = setting(8, ge=1, le=4096, doc="frames generated per batch")
    chunk: int = setting(240, ge=1, doc="frames per part file; an interrupted render redoes at most one part")
    variations_at_once: int = setting(4, ge=1, le=64, doc="variations encoded side by side from one generation")

    def __post_init__(self):
        if not self.sources:
            raise ValueError("sources: a job needs at least one source, e.g. [sources.main] run = \"runs/demo\"")
        for name in self.sources:
            if not _NAME.match(name) or "/" in name:
                raise ValueError(f"sources.{name}: not a usable source name, expected letters, digits, '_', '-'")
        try:
            parse_fps(self.fps)
        except UnstableError:
            raise ValueError(f"fps: {self.fps!r} is not a positive frame rate, expected e.g. 30 or \"30000/1001\"") from None
        if self.duration is not None and self.frames is not None:
            raise ValueError("frames: give either duration or frames, not both")
        if self.preset not in PRESETS:
            close = difflib.get_close_matches(self.preset, list(PRESETS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"preset: {self.preset!r} is unknown, expected one of {', '.join(PRESETS)}{hint}")
        check_size(tuple(self.size), self.preset)
        self._check_output()
        names = [v.name for v in self.variations]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"variations: name {dup[0]!r} is used twice; each variation needs its own name")
        if self.variations and self.hue_rotations:
            raise ValueError("hue_rotations: give either variations or hue_rotations, not both")
        for key, points in self.curves.items():
            _check_curve(key, points, set(self.sources))
        times = [t for t, _ in self.temperature]
        if any(t < 0 or not math.isfinite(t) for t in times) or any(b <= a for a, b in zip(times, times[1:])):
            raise ValueError(f"temperature: times {times} must be >= 0 and increasing, as [[seconds, T], ...]")
        if any(not (0 <= v <= 100) for _, v in self.temperature):
            raise ValueError("temperature: values must lie in 0..100")
        if self.timelapse.on:
            if self.duration is not None or self.frames is not None:
                raise ValueError("timelapse: a timelapse lasts checkpoints x hold frames; leave out duration and frames")
            if len(self.sources) != 1 or not next(iter(self.sources.values())).run:
                raise ValueError("timelapse: needs exactly one source, a run (its checkpoints are the timelapse)")

    def _check_output(self):
        try:
            parts = list(string.Formatter().parse(self.output))
        except ValueError as e:
            raise ValueError(f"output: {self.output!r} is not a valid pattern ({e})") from None
        if "\0" in self.output:
            raise ValueError("output: the pattern holds a NUL character")
        if any(spec or conv for _, f, spec, conv in parts if f is not None):
            raise ValueError(f"output: {self.output[:80]!r}: placeholders are plain, like {{job}}: no format "
                             "specs or conversions")
        fields = {f for _, f, _, _ in parts if f is not None}
        unknown = sorted(fields - set(_PLACEHOLDERS))
        if unknown:
            raise ValueError(f"output: unknown placeholder {{{unknown[0]}}}, expected "
                             + ", ".join("{" + p + "}" for p in _PLACEHOLDERS))
        if len(self.variation_list()) > 1 and not fields & {"variation", "index"}:
            raise ValueError(f"output: {self.output!r} would write every variation to one file; "
                             "put {variation} or {index} in it")
        check_suffix(Path(self.output), self.preset, "output")

    @property
    def frame_rate(self) -> Fraction:
        """fps as an exact Fraction."""
        return parse_fps(self.fps)

    def variation_list(self) -> list[Variation]:
        """The variations to render: the listed ones, the hue rotations, or one ungraded 'main'."""
        if self.variations:
            return list(self.variations)
        if self.hue_rotations:
            n = self.hue_rotations
            width = max(3, len(str(n - 1)))
            return [Variation(name=f"hue{i:0{width}d}", hue=360.0 * i / n) for i in range(n)]
        return [Variation(name="main")]


def _check_curve(key: str, points, sources: set[str]) -> None:
    """Raise ValueError("curves.KEY: ...") for a malformed curve or an unknown source."""
    group, dot, name = key.partition(".")
    if not dot or not name:
        raise ValueError(f"curves.{key}: expected \"SOURCE.PARAMETER\" or \"show.master_fade\", e.g. \"eq.hue\"")
    if group == "show":
        if name != "master_fade":
            raise ValueError(f"curves.{key}: the show group has only master_fade in a render")
    elif group not in sources:
        raise ValueError(f"curves.{key}: no source {group!r}, expected one of {', '.join(sorted(sources))}")
    if name == "training":
        raise ValueError(f"curves.{key}: training has no effect in a render")
    if not points:
        raise ValueError(f"curves.{key}: needs at least one [seconds, value] point")
    times = [t for t, _ in points]
    if any(t < 0 or not math.isfinite(t) for t in times) or any(b <= a for a, b in zip(times, times[1:])):
        raise ValueError(f"curves.{key}: times {times} must be >= 0 and increasing, as [[seconds, value], ...]")
    if any(not math.isfinite(v) for _, v in points):
        raise ValueError(f"curves.{key}: values must be finite numbers")


def check_size(size: tuple[int, int], preset: str) -> None:
    """Raise ValueError("size: ...") when frames of `size` cannot be made or encoded with `preset`."""
    w, h = size
    try:
        check_work(w, h)
    except UnstableError as e:
        raise ValueError(f"size: {e}") from None
    p = PRESETS[preset]
    sx, sy = p.subsample
    if w % sx or h % sy:
        need = "an even width and height" if (sx, sy) == (2, 2) else "an even width"
        raise ValueError(f"size: {w}x{h} cannot be encoded with preset {preset!r} ({p.pix_fmt} needs "
                         f"{need}); use an even size or the ffv1/png preset")


def check_suffix(path: Path, preset: str, key: str) -> None:
    """Raise ValueError("key: ...") when `path` does not suit `preset` (.mp4/.mov, or a folder for PNGs)."""
    p = PRESETS[preset]
    if p.sequence:
        if path.suffix.lower() in {s for q in PRESETS.values() for s in q.suffixes if s}:
            raise ValueError(f"{key}: preset {preset!r} writes a folder of PNG files, not a {path.suffix!r} file; "
                             "leave out the suffix")
    elif path.suffix.lower() not in p.suffixes:
        raise ValueError(f"{key}: preset {preset!r} writes {' or '.join(p.suffixes)} files, not "
                         f"{path.suffix or 'a path without suffix'!r}")


def load_job(path: str | Path) -> RenderJob:
    """Read and validate a render job file; its name defaults to the file's name."""
    path = Path(path)
    data = read_toml(path)
    walk = data.get("walk", {})
    if isinstance(walk, dict) and "temperature" in walk and data.get("temperature"):
        raise ConfigError(str(path), "temperature", "give either walk.temperature or a temperature curve, not both")
    job = load_dataclass(RenderJob, data, source=str(path))
    if not job.name:
        job = dataclasses.replace(job, name=path.stem)
    if not _NAME.match(job.name):
        raise ConfigError(str(path), "name", f"{job.name!r} is not a usable name, expected letters, digits, '_', '-', '.'")
    return job


def output_path(pattern: str, name: str, preset: str, variation: Variation, index: int,
                span: tuple[int, int] | None = None, total: int | None = None) -> Path:
    """The output of one variation of render `name`; a frame range other than the whole adds `.fA-B`
    before the suffix."""
    out = Path(pattern.format(job=name, variation=variation.name, index=index))
    if span is not None and span != (0, total):
        suffix = out.suffix if not PRESETS[preset].sequence else ""
        stem = out.name[: len(out.name) - len(suffix)] if suffix else out.name
        out = out.with_name(f"{stem}.f{span[0]:06d}-{span[1]:06d}{suffix}")
    return out


def parse_frame_range(text: str, total: int) -> tuple[int, int]:
    """`A:B` (frames A to B-1), `A:` or `:B`, checked against the job's `total` frames."""
    m = re.fullmatch(r"\s*(\d*)\s*:\s*(\d*)\s*", text or "")
    if not m:
        raise UnstableError(f"--frames {text!r}: expected A:B (first frame, end frame), e.g. 0:300")
    a = int(m[1]) if m[1] else 0
    b = int(m[2]) if m[2] else total
    if not 0 <= a < b <= total:
        raise UnstableError(f"--frames {text!r}: expected 0 <= A < B <= {total} (the job has {total} frames)")
    return a, b


# ------------------------------------------------------------------------------------ frame plan

@dataclass(frozen=True)
class FramePlan:
    """How many frames, and where each one is: walk time (exact), temperature, or checkpoint."""

    frames: int
    fps: Fraction
    speed: Fraction           # walk seconds per video second (after the loop adjustment)
    start: Fraction           # walk time of frame 0
    curve: tuple[tuple[float, float], ...]  # (video seconds, T); a constant curve without one
    hold: int = 0             # timelapse: frames per checkpoint (0: a walk render)
    checkpoints: int = 0      # timelapse: number of checkpoints
    crossfade: int = 0        # timelapse: crossfade frames at the end of each hold

    @staticmethod
    def of(job: RenderJob, source: str, walk_duration: Fraction, checkpoints: int = 0) -> "FramePlan":
        """The plan of `job` given its walk's loop length (Walk.duration) and, for a timelapse, the checkpoint count."""
        fps = job.frame_rate
        speed = exact(job.speed)
        start = exact(job.start)
        curve = job.temperature or ((0.0, job.walk.temperature),)
        if job.timelapse.on:
            return FramePlan(checkpoints * job.timelapse.hold, fps, speed, start, curve,
                             job.timelapse.hold, checkpoints, job.timelapse.crossfade)
        if job.frames is not None:
            n = job.frames
        elif job.duration is not None:
            n = round(exact(job.duration) * fps)
            if n < 1:
                raise ConfigError(source, "duration", f"{job.duration} s is less than one frame at {fps} fps")
        elif job.walk.loop:
            # One loop, exactly: round the frame count, then fit the speed to it.
            n = max(1, round(walk_duration * fps / speed))
            speed = walk_duration * fps / n
        else:
            n = round(walk_duration * fps / speed) + 1  # first keyframe to last, both shown
        if n > MAX_FRAMES:
            raise ConfigError(source, "duration" if job.duration is not None else "frames",
                              f"{n} frames is more than {MAX_FRAMES} (92 hours at 30 fps); render it in parts")
        plan = FramePlan(n, fps, speed, start, curve)
        if job.walk.loop and job.temperature and walk_duration > 0 and (n * speed / fps) % walk_duration == 0:
            t0, t1 = plan.temperatures(np.array([0, n]))
            if t0 != t1:
                raise ConfigError(source, "temperature", f"the walk loops seamlessly over {n} frames but the "
                                  f"temperature goes from {t0:g} to {t1:g}; end the curve at its first value "
                                  "or set walk.loop = false")
        return plan

    def walk_time(self, frame: int) -> Fraction:
        """Walk time in seconds of `frame` (exact)."""
        return self.start + frame * self.speed / self.fps

    def temperatures(self, frames: np.ndarray) -> np.ndarray:
        """Temperature at each frame: the curve at video time frame / fps, linear, constant outside."""
        t = np.asarray(frames, np.float64) / float(self.fps)
        xs = np.array([p[0] for p in self.curve], np.float64)
        ys = np.array([p[1] for p in self.curve], np.float64)
        return np.interp(t, xs, ys)

    def checkpoint_at(self, frame: int) -> tuple[int, int | None, float]:
        """Timelapse: (checkpoint index, next checkpoint or None, crossfade mix 0..1) of `frame`.

        The mix never reaches 1 inside a hold: the first frame of the next hold is the next
        checkpoint alone, so a crossfade of c frames moves in c + 1 equal steps.
        """
        k, within = divmod(frame, self.hold)
        fade_from = self.hold - self.crossfade
        if self.crossfade and within >= fade_from and k + 1 < self.checkpoints:
            return k, k + 1, (within - fade_from + 1) / (self.crossfade + 1)
        return k, None, 0.0
