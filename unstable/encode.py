"""Video out through the ffmpeg binary that imageio-ffmpeg ships: presets, a threaded writer, probe, concat.

We drive `imageio_ffmpeg.get_ffmpeg_exe()` with subprocess rather than `imageio_ffmpeg.write_frames`
because the latter rounds the frame rate to two decimals (30000/1001 would become 29.97) and pads
sizes to multiples of 16 unless told otherwise (reference-notes §4). Here the frame rate goes to
ffmpeg as an exact rational and frames go in at exactly the size given.

Presets (`PRESETS`):

    h264           delivery: libx264 -crf 18 -preset slow, yuv420p, +faststart (.mp4/.mov)
    h264_live      live recording: libx264 -crf 20 -preset veryfast, yuv420p, fragmented MP4 so a
                   recording cut short by a crash of ffmpeg itself still plays up to the last
                   2-second keyframe (.mp4)
    prores         master: ProRes 422 HQ (prores_ks -profile:v 3), yuv422p10le (.mov)
    ffv1           lossless RGB (FFV1 level 3, intra-only) in .mov: bit-exact round trip, parts
                   concatenate bit-exactly; .mov keeps the exact rational frame rate (Matroska's
                   millisecond timestamps would not)
    h264_lossless  lossless RGB H.264 (libx264rgb -qp 0) in .mp4: bit-exact, smaller than FFV1,
                   but few players other than ffmpeg/VLC decode High 4:4:4
    png            a folder of numbered PNGs (frame_000000.png, ...) plus sequence.json (fps, size)

`-preset slow` for delivery follows the ecosystem convention; on a 2-core machine it encodes
1080p at a few frames per second (see tests/bench/bench_encode.py), so renders that must be quick
use h264_live or a lossless master and transcode later.

The colour presets tag and convert with BT.709: players assume BT.709 for HD, and ffmpeg's
untagged default (BT.601) would shift colours on playback.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import math
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
import weakref
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .errors import UnstableError

__all__ = ["Preset", "PRESETS", "VideoWriter", "EncodeStats", "VideoInfo", "parse_fps", "probe",
           "read_frames", "frame_md5s", "concat", "ffmpeg_exe"]

_BT709 = ["-vf", "scale=out_color_matrix=bt709:out_range=tv", "-colorspace", "bt709",
          "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv"]


@dataclass(frozen=True)
class Preset:
    """One way of encoding: ffmpeg output arguments, allowed file suffixes and chroma subsampling.

    `subsample` is the (horizontal, vertical) chroma subsampling of the pixel format: the frame
    width and height must be multiples of it. `sequence` presets write a folder of images.
    """

    name: str
    args: tuple[str, ...]
    suffixes: tuple[str, ...]
    pix_fmt: str
    subsample: tuple[int, int]
    sequence: bool = False
    doc: str = ""


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("h264", ("-c:v", "libx264", "-crf", "18", "-preset", "slow", "-pix_fmt", "yuv420p",
                    *_BT709, "-movflags", "+faststart"),
           (".mp4", ".mov"), "yuv420p", (2, 2), doc="H.264 delivery, crf 18, preset slow"),
    # -g is filled in from the frame rate: one keyframe (and one MP4 fragment) every 2 seconds.
    Preset("h264_live", ("-c:v", "libx264", "-crf", "20", "-preset", "veryfast", "-pix_fmt", "yuv420p",
                         *_BT709, "-movflags", "+frag_keyframe+empty_moov+default_base_moof"),
           (".mp4",), "yuv420p", (2, 2), doc="H.264 for live recording, preset veryfast, fragmented"),
    Preset("prores", ("-c:v", "prores_ks", "-profile:v", "3", "-pix_fmt", "yuv422p10le", *_BT709),
           (".mov",), "yuv422p10le", (2, 1), doc="ProRes 422 HQ master"),
    Preset("ffv1", ("-c:v", "ffv1", "-level", "3", "-g", "1", "-slicecrc", "1", "-pix_fmt", "bgr0"),
           (".mov",), "bgr0", (1, 1), doc="lossless RGB, FFV1"),
    Preset("h264_lossless", ("-c:v", "libx264rgb", "-qp", "0", "-preset", "veryfast", "-pix_fmt", "rgb24"),
           (".mp4", ".mov"), "rgb24", (1, 1), doc="lossless RGB, H.264 High 4:4:4"),
    Preset("png", ("-c:v", "png", "-pix_fmt", "rgb24"), ("",), "rgb24", (1, 1), sequence=True,
           doc="numbered PNG files in a folder"),
]}

PNG_PATTERN = "frame_%06d.png"
_PNG_GLOB = "frame_*.png"
SEQUENCE_SIDECAR = "sequence.json"


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with imageio-ffmpeg (no system ffmpeg needed)."""
    import imageio_ffmpeg
    return imageio_ffmpeg.get_ffmpeg_exe()


def parse_fps(fps) -> Fraction:
    """A frame rate as an exact Fraction: 30, "30000/1001", Fraction(24000, 1001), 29.97, "25".

    Floats are read through their shortest decimal form (29.97 -> 2997/100); pass "30000/1001" for
    NTSC rates. Zero, negative, non-finite or unparsable values raise UnstableError.
    """
    try:
        if isinstance(fps, bool):
            raise ValueError
        if isinstance(fps, float):
            if not math.isfinite(fps):
                raise ValueError
            value = Fraction(repr(fps))
        elif isinstance(fps, str):
            value = Fraction(fps.strip())
        else:
            value = Fraction(fps)
    except (ValueError, TypeError, ZeroDivisionError):
        raise UnstableError(f"fps {fps!r} is not a frame rate, expected a positive number like 30 or 30000/1001") from None
    if value <= 0:
        raise UnstableError(f"fps {fps!r} must be positive, expected a number like 30 or 30000/1001")
    return value


@dataclass(frozen=True)
class EncodeStats:
    """What a VideoWriter did, for the renderer's report.

    `encode_seconds`: wall time the writer thread spent pushing frames into ffmpeg (blocked while
    ffmpeg was busy) plus ffmpeg's finalisation after the last frame. `producer_wait_seconds`: time
    `write()` blocked because the queue was full, i.e. generation waiting on encoding.
    `encoder_cpu_seconds`: ffmpeg's user+system CPU time (None where the OS does not report it).
    """

    frames: int
    wall_seconds: float
    encode_seconds: float
    producer_wait_seconds: float
    encoder_cpu_seconds: float | None


_OPEN_WRITERS: "weakref.WeakSet[VideoWriter]" = weakref.WeakSet()


@atexit.register
def _close_open_writers():
    # Finalise every writer still open at interpreter exit (uncaught exception, sys.exit) so the file
    # plays. A SIGKILL/SIGTERM of this process skips atexit, but ffmpeg then sees end-of-input on
    # its pipe and finalises the frames it already has by itself.
    for w in list(_OPEN_WRITERS):
        try:
            w.close()
        except Exception:  # noqa: BLE001 - best effort at exit, nothing left to report to
            pass


class VideoWriter:
    """Encode HxWx3 uint8 RGB frames with ffmpeg in a background thread.

        with VideoWriter("out.mp4", 512, 256, "30000/1001", "h264") as w:
            for frame in frames:          # [H, W, 3] uint8, or a batch [T, H, W, 3]
                w.write(frame)
        print(w.stats)

    `write` copies the frame into a bounded queue (`queue_frames` deep) and returns, so generation
    and encoding overlap; a full queue blocks the producer (back pressure, bounded memory).
    `close()` is idempotent and safe in `finally` or atexit: it drains the queue, closes ffmpeg's
    input and waits for a finalised, playable file. ffmpeg runs in its own session, so a ctrl-C
    in the terminal reaches only Python (whose `finally` closes the writer), and if this process
    is killed outright ffmpeg sees end-of-input and finalises the frames it received.

    `start_number` numbers the first PNG of a png sequence (for resumed renders).
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps, preset: str = "h264", *,
                 queue_frames: int = 8, start_number: int = 0, overwrite: bool = True):
        if preset not in PRESETS:
            raise UnstableError(f"preset {preset!r} is unknown, expected one of {', '.join(PRESETS)}")
        self.preset = PRESETS[preset]
        self.path = Path(path)
        self.fps = parse_fps(fps)
        self.width, self.height = int(width), int(height)
        if self.width < 1 or self.height < 1:
            raise UnstableError(f"{self.path}: size {width}x{height} is empty, expected a positive width and height")
        sx, sy = self.preset.subsample
        if self.width % sx or self.height % sy:
            need = "even width and height" if (sx, sy) == (2, 2) else "an even width"
            raise UnstableError(
                f"{self.path}: size {self.width}x{self.height} cannot be encoded with preset {preset!r} "
                f"({self.preset.pix_fmt} needs {need}); use an even size or the ffv1/png preset")
        if not self.preset.sequence and self.path.suffix.lower() not in self.preset.suffixes:
            raise UnstableError(f"{self.path}: preset {preset!r} writes {' or '.join(self.preset.suffixes)} files, "
                                f"not {self.path.suffix or 'a file without suffix'!r}")
        if start_number < 0:
            raise UnstableError(f"{self.path}: start_number {start_number} must be >= 0")
        if not overwrite and self.path.exists() and not self.preset.sequence:
            raise UnstableError(f"{self.path}: already exists (refusing to overwrite)")

        self._frame_bytes = self.width * self.height * 3
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, queue_frames))
        self._lock = threading.Lock()
        self._closed = False
        self._error: str | None = None
        self._submitted = 0
        self._written = 0
        self._encode_seconds = 0.0
        self._producer_wait = 0.0
        self._cpu: float | None = None
        self._t_open = time.perf_counter()
        self.stats: EncodeStats | None = None

        cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostats", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{self.width}x{self.height}",
               "-framerate", f"{self.fps.numerator}/{self.fps.denominator}", "-i", "pipe:0",
               "-an", *self.preset.args]
        if preset == "h264_live":
            cmd += ["-g", str(max(1, round(2 * self.fps)))]
        if self.preset.sequence:
            self.path.mkdir(parents=True, exist_ok=True)
            # Frames from start_number on are (re)written now: stale ones from an older, longer
            # render would otherwise be counted as part of this one.
            stale = [f for f in _sequence_files(self.path) if _frame_number(f) >= start_number]
            if stale and not overwrite:
                raise UnstableError(f"{self.path}: already holds frames from {PNG_PATTERN % start_number} on "
                                    "(refusing to overwrite)")
            for f in stale:
                f.unlink()
            (self.path / SEQUENCE_SIDECAR).write_text(json.dumps({
                "fps": f"{self.fps.numerator}/{self.fps.denominator}", "width": self.width,
                "height": self.height, "pattern": PNG_PATTERN}) + "\n")
            cmd += ["-f", "image2", "-start_number", str(start_number), str(self.path / PNG_PATTERN)]
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            cmd += [str(self.path)]
        self._stderr = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                          stderr=self._stderr, start_new_session=True)
        except OSError as e:
            self._stderr.close()
            raise UnstableError(f"{self.path}: cannot start ffmpeg ({e})") from None
        self._thread = threading.Thread(target=self._pump, name=f"encode:{self.path.name}", daemon=True)
        self._thread.start()
        _OPEN_WRITERS.add(self)

    @property
    def pid(self) -> int:
        """Process id of the ffmpeg encoder (it outlives this process if this one is killed)."""
        return self._proc.pid

    @property
    def frames_written(self) -> int:
        """Frames handed to ffmpeg so far (queued frames not yet counted)."""
        return self._written

    def _pump(self):
        """Writer thread: queue -> ffmpeg stdin; on failure keep draining so producers never block."""
        stdin = self._proc.stdin
        while True:
            item = self._queue.get()
            if item is None:
                break
            if self._error is not None:
                continue
            t0 = time.perf_counter()
            try:
                stdin.write(item)
                self._written += len(item) // self._frame_bytes
            except (BrokenPipeError, OSError, ValueError):
                self._error = "ffmpeg stopped accepting frames"
            self._encode_seconds += time.perf_counter() - t0
        t0 = time.perf_counter()
        try:
            stdin.close()
        except (BrokenPipeError, OSError):
            pass
        self._wait_encoder()
        self._encode_seconds += time.perf_counter() - t0

    def _wait_encoder(self):
        # wait4 also reports the child's CPU time; fall back to a plain wait where it is missing.
        if hasattr(os, "wait4"):
            try:
                _, status, usage = os.wait4(self._proc.pid, 0)
                self._proc.returncode = os.waitstatus_to_exitcode(status)
                self._cpu = usage.ru_utime + usage.ru_stime
                return
            except ChildProcessError:
                pass
        self._proc.wait()

    def _stderr_tail(self) -> str:
        try:
            self._stderr.seek(0)
            lines = [ln.strip() for ln in self._stderr.read().decode(errors="replace").splitlines() if ln.strip()]
        except (OSError, ValueError):
            return ""
        return lines[-1] if lines else ""

    def _fail(self, what: str):
        self.close(_raise=False)
        tail = self._stderr_tail()
        raise UnstableError(f"{self.path}: {what}" + (f" ({tail})" if tail else ""))

    def write(self, frames) -> None:
        """Queue one frame [H, W, 3] or a batch [T, H, W, 3] of uint8 RGB (copied; the caller may reuse it)."""
        if self._closed:
            raise UnstableError(f"{self.path}: write after close")
        if self._error is not None or self._proc.poll() is not None:
            self._fail(self._error or "ffmpeg exited early")
        a = np.asarray(frames)
        if a.ndim == 3:
            a = a[None]
        if a.ndim != 4 or a.shape[1:] != (self.height, self.width, 3) or a.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 [T, {self.height}, {self.width}, 3] or "
                             f"[{self.height}, {self.width}, 3], got {a.dtype} {list(np.shape(frames))}")
        if len(a) == 0:
            return
        data = np.ascontiguousarray(a).tobytes()  # the copy that lets the caller reuse its buffer
        t0 = time.perf_counter()
        self._queue.put(data)
        self._producer_wait += time.perf_counter() - t0
        self._submitted += len(a)

    def close(self, _raise: bool = True) -> EncodeStats | None:
        """Finish: encode what is queued, close ffmpeg's input, wait for the file. Idempotent.

        Returns the EncodeStats (also kept as `self.stats`); raises UnstableError if ffmpeg failed.
        """
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(None)
                self._thread.join()
                _OPEN_WRITERS.discard(self)
                self.stats = EncodeStats(
                    frames=self._written, wall_seconds=time.perf_counter() - self._t_open,
                    encode_seconds=self._encode_seconds, producer_wait_seconds=self._producer_wait,
                    encoder_cpu_seconds=self._cpu)
                if self._proc.returncode not in (0, None) and self._error is None:
                    self._error = f"ffmpeg failed with exit status {self._proc.returncode}"
        if _raise and self._error is not None:
            tail = self._stderr_tail()
            raise UnstableError(f"{self.path}: {self._error}" + (f" ({tail})" if tail else ""))
        return self.stats

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb):
        # On an exception in the body, still finalise (a playable partial file) but let the original
        # exception propagate rather than one about the encoder.
        self.close(_raise=exc_type is None)

    def __del__(self):
        try:
            if not self._closed:
                self.close(_raise=False)
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass


# --------------------------------------------------------------------------------------------- reading

@dataclass(frozen=True)
class VideoInfo:
    """What `probe` found: exact frame count and rational frame rate."""

    path: str
    frames: int
    fps: Fraction
    width: int
    height: int
    codec: str

    @property
    def seconds(self) -> Fraction:
        """Duration as frames / fps (exact)."""
        return Fraction(self.frames) / self.fps


def _is_sequence(path: Path) -> bool:
    return path.is_dir()


def _sequence_files(path: Path) -> list[Path]:
    return sorted(path.glob(_PNG_GLOB))


def _frame_number(file: Path) -> int:
    m = re.search(r"(\d+)\.png$", file.name)
    return int(m[1]) if m else -1


def _png_size(file: Path) -> tuple[int, int]:
    with open(file, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise UnstableError(f"{file}: not a PNG file")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _sequence_meta(path: Path) -> dict:
    side = path / SEQUENCE_SIDECAR
    if not side.exists():
        raise UnstableError(f"{path}: no {SEQUENCE_SIDECAR} (the frame rate of a PNG sequence is kept there)")
    try:
        return json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UnstableError(f"{side}: cannot be read ({e})") from None


def _run_ffmpeg(path: Path, args: Sequence[str]) -> bytes:
    if not path.exists():
        raise UnstableError(f"{path}: file not found")
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-i", str(path), *args],
                          capture_output=True)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.decode(errors="replace").splitlines() if ln.strip()]
        raise UnstableError(f"{path}: not a video ffmpeg can read ({lines[-1].strip() if lines else 'no message'})")
    return proc.stdout


_TB = re.compile(r"^#tb 0: (\d+)/(\d+)", re.M)
_DIM = re.compile(r"^#dimensions 0: (\d+)x(\d+)", re.M)
_CODEC = re.compile(r"^#codec_id 0: (\S+)", re.M)


def _framemd5(path: Path, decode: bool) -> tuple[Fraction, int, int, str, list[list[str]]]:
    args = ["-map", "0:v:0"] + ([] if decode else ["-c", "copy"])
    if decode:
        args += ["-fps_mode", "passthrough", "-pix_fmt", "rgb24"]
    text = _run_ffmpeg(path, [*args, "-f", "framemd5", "-"]).decode()
    tb, dim, codec = _TB.search(text), _DIM.search(text), _CODEC.search(text)
    if not (tb and dim and codec):
        raise UnstableError(f"{path}: has no video stream")
    rows = [[c.strip() for c in ln.split(",")] for ln in text.splitlines() if ln and not ln.startswith("#")]
    return (Fraction(int(tb[1]), int(tb[2])), int(dim[1]), int(dim[2]), codec[1], rows)


def probe(path: str | os.PathLike, *, decode: bool = False) -> VideoInfo:
    """Frame count, exact frame rate (Fraction), size and codec of a video file or PNG sequence folder.

    Reads the container's packets without decoding (one packet is one frame for every preset here);
    `decode=True` decodes every frame instead, for files of unknown origin. The frame rate is
    1 / (most common packet duration x stream time base), exact in MP4/MOV.
    """
    path = Path(path)
    if _is_sequence(path):
        files = _sequence_files(path)
        meta = _sequence_meta(path)
        w, h = _png_size(files[0]) if files else (meta["width"], meta["height"])
        return VideoInfo(str(path), len(files), parse_fps(meta["fps"]), w, h, "png")
    tb, w, h, codec, rows = _framemd5(path, decode)
    durations = Counter(int(r[3]) for r in rows if len(r) >= 6 and int(r[3]) > 0)
    if durations:
        fps = 1 / (durations.most_common(1)[0][0] * tb)
    elif len(rows) >= 2:  # no durations stored: fall back to the pts step
        fps = 1 / ((int(rows[1][2]) - int(rows[0][2])) * tb)
    else:
        raise UnstableError(f"{path}: cannot tell its frame rate (fewer than two frames, no durations)")
    return VideoInfo(str(path), len(rows), fps, w, h, codec)


def frame_md5s(path: str | os.PathLike) -> list[str]:
    """MD5 of every decoded frame as rgb24, in order (cheap equality checks between videos)."""
    path = Path(path)
    if _is_sequence(path):
        return [hashlib.md5(f.tobytes()).hexdigest() for f in read_frames(path)]
    return [r[5] for r in _framemd5(path, decode=True)[4] if len(r) >= 6]


def read_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Decode a video file or PNG sequence folder into uint8 RGB frames [H, W, 3], one at a time."""
    path = Path(path)
    info = probe(path)
    if _is_sequence(path):
        files = _sequence_files(path)
        if not files:
            return
        src = ["-f", "image2", "-start_number", str(max(_frame_number(files[0]), 0)), "-framerate",
               f"{info.fps.numerator}/{info.fps.denominator}", "-i", str(path / PNG_PATTERN)]
    else:
        src = ["-i", str(path)]
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", *src, "-map", "0:v:0",
           "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    n = info.width * info.height * 3
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        while True:
            buf = proc.stdout.read(n)
            if len(buf) < n:
                break
            yield np.frombuffer(buf, np.uint8).reshape(info.height, info.width, 3)
    finally:
        proc.stdout.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait()


# --------------------------------------------------------------------------------------------- concat

def concat(parts: Sequence[str | os.PathLike], out: str | os.PathLike) -> VideoInfo:
    """Join parts made with the same preset, size and fps into `out` without re-encoding.

    Video files go through ffmpeg's concat demuxer with `-c copy` (so lossless parts join
    bit-exactly); PNG sequence folders are copied into one folder and renumbered from 0.
    Returns `probe(out)`.
    """
    parts = [Path(p) for p in parts]
    out = Path(out)
    if not parts:
        raise UnstableError(f"{out}: nothing to concatenate")
    for p in parts:
        if not p.exists():
            raise UnstableError(f"{p}: file not found")
    infos = [probe(p) for p in parts]
    first = infos[0]
    for info in infos[1:]:
        if (info.width, info.height, info.fps, info.codec) != (first.width, first.height, first.fps, first.codec):
            raise UnstableError(
                f"{info.path}: is {info.codec} {info.width}x{info.height} at {info.fps} fps, but {first.path} is "
                f"{first.codec} {first.width}x{first.height} at {first.fps} fps; parts must match to join")
    if out.resolve() in {p.resolve() for p in parts}:
        raise UnstableError(f"{out}: the output is also one of the parts")

    if all(_is_sequence(p) for p in parts):
        out.mkdir(parents=True, exist_ok=True)
        for old in _sequence_files(out):
            old.unlink()
        i = 0
        for p in parts:
            for f in _sequence_files(p):
                shutil.copyfile(f, out / (PNG_PATTERN % i))
                i += 1
        shutil.copyfile(parts[0] / SEQUENCE_SIDECAR, out / SEQUENCE_SIDECAR)
        return probe(out)
    if any(_is_sequence(p) for p in parts):
        raise UnstableError(f"{out}: cannot join PNG sequences with video files")

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        for p in parts:
            # The concat list quotes with single quotes; an embedded ' is written as '\''.
            f.write("file '" + str(p.resolve()).replace("'", "'\\''") + "'\n")
        listing = f.name
    try:
        args = ["-map", "0:v:0", "-c", "copy"]
        if out.suffix.lower() in (".mp4", ".mov"):
            args += ["-movflags", "+faststart"]
        proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
                               "-f", "concat", "-safe", "0", "-i", listing, *args, str(out)],
                              capture_output=True)
    finally:
        os.unlink(listing)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.decode(errors="replace").splitlines() if ln.strip()]
        raise UnstableError(f"{out}: ffmpeg could not join the parts ({lines[-1].strip() if lines else 'no message'})")
    return probe(out)
