"""Reading videos back through the ffmpeg binary: probe (exact frame count and rate), decoded
frames and their md5s, and `concat`, which joins render parts without re-encoding.

Works on video files and PNG sequence folders alike (see `unstable.formats`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .errors import UnstableError
from .formats import (PNG_PATTERN, SEQUENCE_SIDECAR, ffmpeg_exe, frame_number, is_sequence, parse_fps,
                      sequence_files)

__all__ = ["VideoInfo", "probe", "read_frames", "frame_md5s", "concat"]


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
    if is_sequence(path):
        files = sequence_files(path)
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
    if is_sequence(path):
        return [hashlib.md5(f.tobytes()).hexdigest() for f in read_frames(path)]
    return [r[5] for r in _framemd5(path, decode=True)[4] if len(r) >= 6]


def read_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Decode a video file or PNG sequence folder into uint8 RGB frames [H, W, 3], one at a time."""
    path = Path(path)
    info = probe(path)
    if is_sequence(path):
        files = sequence_files(path)
        if not files:
            return
        src = ["-f", "image2", "-start_number", str(max(frame_number(files[0]), 0)), "-framerate",
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

    if all(is_sequence(p) for p in parts):
        out.mkdir(parents=True, exist_ok=True)
        for old in sequence_files(out):
            old.unlink()
        i = 0
        for p in parts:
            for f in sequence_files(p):
                shutil.copyfile(f, out / (PNG_PATTERN % i))
                i += 1
        shutil.copyfile(parts[0] / SEQUENCE_SIDECAR, out / SEQUENCE_SIDECAR)
        return probe(out)
    if any(is_sequence(p) for p in parts):
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
