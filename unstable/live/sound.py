"""The sound of a live recording: the part of the show's audio file that its frames heard.

A live show that follows an audio file hears slot n of the file's [n / fps, (n + 1) / fps)
(unstable.audio.mapping); its recordings are constant-rate on the show clock (unstable.live.recorder),
so a recording of `frames` frames from slot `start` carries the sound from start / fps, exactly
frames / fps of it: padded with silence where the file ends first, cut where it goes on.
"""

from __future__ import annotations

import os
import subprocess
from fractions import Fraction
from pathlib import Path

from ..audio.mux import SANITISE
from ..errors import UnstableError
from ..formats import PRESETS, ffmpeg_exe

__all__ = ["mux_sound"]


def mux_sound(video: str | os.PathLike, audio: str | os.PathLike, start: Fraction, seconds: Fraction) -> Path:
    """Replace the recording `video` (H.264 in MP4) by itself with `audio` from `start` seconds on
    added, `seconds` long (AAC, as the h264 presets carry). The video stream is copied; on failure
    the video is left as it was and UnstableError says why in one line."""
    video, audio = Path(video), Path(audio)
    tmp = video.with_name(f".{video.stem}.muxing{video.suffix}")
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", str(video),
           # Input seeking: the audio decoded from `start` on, sample-accurate for PCM and FLAC.
           "-ss", f"{float(start):.6f}", "-i", str(audio),
           "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", *PRESETS["h264_live"].audio,
           # NaN/inf samples would fail the AAC encoder (and the recording lose its sound): silence.
           "-af", f"{SANITISE},apad", "-t", f"{float(seconds):.6f}", "-movflags", "+faststart", str(tmp)]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        lines = [ln.strip() for ln in proc.stderr.decode(errors="replace").splitlines() if ln.strip()]
        raise UnstableError(f"{audio}: ffmpeg could not mux it ({lines[-1][:160] if lines else 'no reason given'})")
    os.replace(tmp, video)
    return video
