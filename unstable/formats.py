"""Output formats of the ffmpeg binary that imageio-ffmpeg ships: presets, exact frame rates,
the layout of PNG sequence folders.

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

import numbers
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from .errors import UnstableError

__all__ = ["Preset", "PRESETS", "PNG_PATTERN", "SEQUENCE_SIDECAR", "ffmpeg_exe", "exact", "parse_fps",
           "is_sequence", "sequence_files", "frame_number"]

_BT709 = ["-vf", "scale=out_color_matrix=bt709:out_range=tv", "-colorspace", "bt709",
          "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv"]

# The audio of a render (`--audio`): AAC beside H.264, 16-bit PCM beside the masters.
_AAC = ("-c:a", "aac", "-b:a", "256k")
_PCM = ("-c:a", "pcm_s16le")


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
    audio: tuple[str, ...] = ()   # ffmpeg arguments of the audio stream muxed into it (unstable.audio.mux)


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("h264", ("-c:v", "libx264", "-crf", "18", "-preset", "slow", "-pix_fmt", "yuv420p",
                    *_BT709, "-movflags", "+faststart"),
           (".mp4", ".mov"), "yuv420p", (2, 2), doc="H.264 delivery, crf 18, preset slow", audio=_AAC),
    # -g is filled in from the frame rate: one keyframe (and one MP4 fragment) every 2 seconds.
    Preset("h264_live", ("-c:v", "libx264", "-crf", "20", "-preset", "veryfast", "-pix_fmt", "yuv420p",
                         *_BT709, "-movflags", "+frag_keyframe+empty_moov+default_base_moof"),
           (".mp4",), "yuv420p", (2, 2), doc="H.264 for live recording, preset veryfast, fragmented", audio=_AAC),
    Preset("prores", ("-c:v", "prores_ks", "-profile:v", "3", "-pix_fmt", "yuv422p10le", *_BT709),
           (".mov",), "yuv422p10le", (2, 1), doc="ProRes 422 HQ master", audio=_PCM),
    Preset("ffv1", ("-c:v", "ffv1", "-level", "3", "-g", "1", "-slicecrc", "1", "-pix_fmt", "bgr0"),
           (".mov",), "bgr0", (1, 1), doc="lossless RGB, FFV1", audio=_PCM),
    Preset("h264_lossless", ("-c:v", "libx264rgb", "-qp", "0", "-preset", "veryfast", "-pix_fmt", "rgb24"),
           (".mp4", ".mov"), "rgb24", (1, 1), doc="lossless RGB, H.264 High 4:4:4", audio=_AAC),
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


def exact(value) -> Fraction:
    """A frame rate, a time or a speed as the exact rational it was written as.

    A float is read through its shortest decimal form (29.97 -> 2997/100, 0.1 -> 1/10), not its
    binary value (0.1000000000000000055...): what the artist wrote in a TOML file is a decimal, and
    frame n at n / fps, a duration times the fps and a loop period must add up without drift. Ints,
    Fractions and strings ("30000/1001", "29.97") are taken as they are. Raises ValueError or
    TypeError for anything that is not a finite number (booleans included).
    """
    if isinstance(value, bool):
        raise TypeError(f"{value!r} is not a number")
    if isinstance(value, str):
        return Fraction(value.strip())
    if isinstance(value, numbers.Rational):
        return Fraction(value)
    return Fraction(repr(float(value)))  # float() first: numpy's repr is "np.float64(29.97)"


def parse_fps(fps) -> Fraction:
    """A frame rate as an exact Fraction: 30, "30000/1001", Fraction(24000, 1001), 29.97, "25".

    Floats are read through their shortest decimal form (29.97 -> 2997/100); pass "30000/1001" for
    NTSC rates. Zero, negative, non-finite or unparsable values raise UnstableError.
    """
    try:
        value = exact(fps)
    except (ValueError, TypeError, ZeroDivisionError):
        raise UnstableError(f"fps {fps!r} is not a frame rate, expected a positive number like 30 or 30000/1001") from None
    if value <= 0:
        raise UnstableError(f"fps {fps!r} must be positive, expected a number like 30 or 30000/1001")
    if not MIN_FPS <= value <= MAX_FPS:  # ffmpeg fails on these only after rendering has begun
        raise UnstableError(f"fps {fps!r} is out of range, expected {MIN_FPS} to {MAX_FPS} frames per second")
    return value


MIN_FPS, MAX_FPS = Fraction(1, 100), Fraction(1000)
MAX_PIXELS = 7680 * 4320       # 8K UHD: a bigger frame fails inside the encoders after rendering began
MAX_FRAMES = 10_000_000        # 92 hours at 30 fps


def check_work(width: int, height: int, frames: int | None = None) -> None:
    """Refuse work that cannot finish before any of it starts: too many pixels or frames."""
    if width * height > MAX_PIXELS:
        raise UnstableError(f"size {width}x{height} is {width * height / 1e6:.0f} megapixels, more than the "
                            f"{MAX_PIXELS / 1e6:.1f} (7680x4320) the encoders take")
    if frames is not None and frames > MAX_FRAMES:
        raise UnstableError(f"{frames} frames is more than {MAX_FRAMES} (92 hours at 30 fps); render it in parts")


def is_sequence(path: Path) -> bool:
    """True when `path` is a PNG sequence folder rather than a video file."""
    return path.is_dir()


def sequence_files(path: Path) -> list[Path]:
    """The numbered PNGs of a sequence folder, in frame order."""
    return sorted(path.glob(_PNG_GLOB))


def frame_number(file: Path) -> int:
    """The frame number in a PNG file name (-1 if it has none)."""
    m = re.search(r"(\d+)\.png$", file.name)
    return int(m[1]) if m else -1
