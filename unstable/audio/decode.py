"""Any audio file -> float32 mono PCM at the analysis rate, through the bundled ffmpeg (a pipe; no
audio library to install). A file ffmpeg cannot read as audio is one UnstableError line naming it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np

from ..errors import UnstableError
from ..formats import ffmpeg_exe
from .features import RATE

__all__ = ["decode", "MAX_SECONDS"]

MAX_SECONDS = 6 * 3600  # 6 hours of mono float32 at 48 kHz is 4 GB; longer is refused


def decode(path: str | os.PathLike, *, what: str = "audio") -> np.ndarray:
    """The samples of `path`'s first audio stream: mono (channels averaged), RATE Hz, float32 [S]."""
    path = Path(path)
    if not path.is_file():
        raise UnstableError(f"{what} {path}: no such file")
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-i", str(path),
           "-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(RATE), "-t", str(MAX_SECONDS),
           "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1"]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.decode(errors="replace").splitlines() if ln.strip()]
        why = lines[-1] if lines else "ffmpeg failed"
        if any("matches no streams" in ln for ln in lines):
            why = "it has no audio stream"
        raise UnstableError(f"{what} {path}: not an audio file ffmpeg can read ({why[:160]})")
    x = np.frombuffer(proc.stdout, np.float32)
    if len(x) == 0:
        raise UnstableError(f"{what} {path}: no audio samples in it")
    return x
