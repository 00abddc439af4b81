"""Any audio file -> float32 mono PCM at the analysis rate, through the bundled ffmpeg (a pipe; no
audio library to install), in blocks: the signal is never held whole.

Before anything is decoded the file's header is read (`probe_header`: codec, rate, channels,
duration) and the file refused, in one UnstableError line naming it and the sizes, when its rate
is outside MIN_RATE..MAX_RATE (a WAV that claims 1 Hz would be resampled 48 000-fold) or its
analysis would pass MAX_SECONDS or MEMORY_BUDGET (`analysis_bytes`). The pipe itself stops after
MAX_SECONDS, so a header that lies about the duration cannot take more either. NaN and ±inf
samples (a float file) are read as silence and counted (`Decoder.nonfinite`).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import UnstableError
from ..formats import exact, ffmpeg_exe
from .features import COLUMN_BYTES, HOP, RATE

__all__ = ["decode", "Decoder", "AudioHeader", "probe_header", "analysis_bytes", "check_header",
           "MAX_SECONDS", "MIN_RATE", "MAX_RATE", "MEMORY_BUDGET", "BLOCK"]

MAX_SECONDS = 6 * 3600
MIN_RATE, MAX_RATE = 8_000, 384_000
MEMORY_BUDGET = 1_000_000_000  # bytes an analysis may hold (6 hours at 30 fps holds ~0.7 GB)
BLOCK = 1 << 18                # samples read from the pipe at once (1 MB of float32, 5.5 s)
# Held per video frame: its sum of squares (grown by doubling), six float32 features, the
# vectorised aggregation's ~25 temporaries and the modulator's levels table.
FRAME_BYTES = 2 * 8 + 6 * 4 + 25 * 8 + 4 * 8
# Held whatever the length: a pipe block and its float64 squares, one column block's STFT
# temporaries (256 x 1024 float64 and complex), the sliding window's source.
FIXED_BYTES = BLOCK * (4 + 8 + 4) + 256 * 1024 * 8 * 6

_LAYOUTS = {"mono": 1, "stereo": 2, "downmix": 2, "quad": 4, "hexagonal": 6, "octagonal": 8, "hexadecagonal": 16}


@dataclass(frozen=True)
class AudioHeader:
    """What ffmpeg reads from a file's header about its first audio stream."""

    codec: str
    rate: int
    channels: int | None        # None: a layout name this module does not know
    layout: str                 # as ffmpeg names it: mono, stereo, 5.1, 3 channels...
    sample_format: str          # s16, flt, fltp...
    seconds: float | None       # None: the container does not say


def _channels(layout: str) -> int | None:
    layout = layout.strip()
    base = layout.split("(")[0]
    if base in _LAYOUTS:
        return _LAYOUTS[base]
    m = re.fullmatch(r"(\d+) channels", layout)
    if m:
        return int(m.group(1))
    m = re.fullmatch(r"(\d+)\.(\d+)", base)
    return int(m.group(1)) + int(m.group(2)) if m else None


def _why(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines()
             if ln.strip() and not ln.startswith("At least one output file")]
    return lines[-1][:160] if lines else "ffmpeg failed"


def probe_header(path: str | os.PathLike, *, what: str = "audio") -> AudioHeader:
    """The header of `path`'s first audio stream (`ffmpeg -i`, nothing decoded); one UnstableError
    line when there is no such file or no audio stream in it."""
    path = Path(path)
    if not path.is_file():
        raise UnstableError(f"{what} {path}: no such file")
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True)
    text = proc.stderr.decode(errors="replace")
    m = re.search(r"Stream #\d+:\d+\S*: Audio: ([^\s,]+)[^\n]*?, (\d+) Hz, ([^,\n]+), ([^,\s]+)", text)
    if m is None:
        why = "it has no audio stream" if "Input #0" in text else _why(text)
        raise UnstableError(f"{what} {path}: not an audio file ffmpeg can read ({why})")
    d = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", text)
    seconds = int(d.group(1)) * 3600 + int(d.group(2)) * 60 + float(d.group(3)) if d else None
    return AudioHeader(m.group(1), int(m.group(2)), _channels(m.group(3)), m.group(3).strip(), m.group(4), seconds)


def analysis_bytes(seconds: float, fps) -> int:
    """Bytes the analysis of `seconds` of sound at `fps` holds at its peak (`unstable.audio.features`:
    per STFT column, per frame, and a fixed part for the blocks in flight)."""
    fps = exact(fps)
    cols = int(seconds * RATE / HOP) + 2
    frames = int(seconds * fps) + 2
    return cols * COLUMN_BYTES + frames * FRAME_BYTES + FIXED_BYTES


def _size(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def _length(seconds: float) -> str:
    return f"{seconds / 3600:.1f} hours" if seconds >= 3600 else f"{seconds:.1f} s"


def check_header(h: AudioHeader, path: str | os.PathLike, fps, *, what: str = "audio") -> None:
    """One UnstableError line when `h` (of `path`) has a rate outside MIN_RATE..MAX_RATE, or lasts
    longer than MAX_SECONDS or than MEMORY_BUDGET allows to analyse at `fps`."""
    desc = f"{h.codec}, {h.rate} Hz, {h.layout}"
    if not MIN_RATE <= h.rate <= MAX_RATE:
        raise UnstableError(f"{what} {path}: its header says {h.rate} Hz ({desc}), expected {MIN_RATE}.."
                            f"{MAX_RATE} Hz")
    if h.seconds is None:
        return  # the pipe stops at MAX_SECONDS all the same
    need = analysis_bytes(h.seconds, fps)
    if h.seconds > MAX_SECONDS or need > MEMORY_BUDGET:
        raise UnstableError(f"{what} {path}: {_length(h.seconds)} long ({desc}): analysing it would hold "
                            f"~{_size(need)}, over the limits of {MAX_SECONDS // 3600} hours and "
                            f"{_size(MEMORY_BUDGET)}")


class Decoder:
    """`path`'s first audio stream as mono float32 at RATE, block by block (`blocks`), after its
    header passed `check_header` at `fps`."""

    def __init__(self, path: str | os.PathLike, fps=30, *, what: str = "audio"):
        self.path = Path(path)
        self.what = what
        self.header = probe_header(self.path, what=what)
        check_header(self.header, self.path, fps, what=what)
        self.samples = 0
        self.nonfinite = 0   # NaN and ±inf samples read as silence

    def blocks(self, size: int = BLOCK) -> Iterator[np.ndarray]:
        """The samples in blocks of `size` (the last shorter), every one finite. Raises one
        UnstableError line when ffmpeg fails or the stream holds no samples."""
        cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-i", str(self.path),
               "-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(RATE), "-t", str(MAX_SECONDS),
               "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1"]
        # stderr to a file: a damaged file can log more than a pipe holds while we read stdout.
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
            try:
                while True:
                    buf = bytearray(size * 4)
                    n = proc.stdout.readinto(buf)
                    while n and n < len(buf) and n % 4:  # a short read mid-sample: complete it
                        more = proc.stdout.read(4 - n % 4)
                        if not more:
                            break
                        buf[n:n + len(more)] = more
                        n += len(more)
                    if not n:
                        break
                    x = np.frombuffer(buf, np.float32, n // 4)  # writable: buf is a bytearray
                    bad = ~np.isfinite(x)
                    if bad.any():
                        self.nonfinite += int(bad.sum())
                        x[bad] = 0.0
                    self.samples += len(x)
                    yield x
                rc = proc.wait()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                proc.stdout.close()
            if rc != 0:
                err.seek(0)
                raise UnstableError(f"{self.what} {self.path}: not an audio file ffmpeg can read "
                                    f"({_why(err.read().decode(errors='replace'))})")
        if self.samples == 0:
            raise UnstableError(f"{self.what} {self.path}: no audio samples in it")


def decode(path: str | os.PathLike, *, what: str = "audio", fps=30) -> np.ndarray:
    """The samples of `path`'s first audio stream: mono (channels averaged), RATE Hz, float32 [S],
    whole (for short sounds; an analysis reads `Decoder.blocks` instead)."""
    return np.concatenate(list(Decoder(path, fps, what=what).blocks()))
