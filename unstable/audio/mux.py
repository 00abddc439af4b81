"""The audio of a render muxed into its finished video file, after the parts are joined: the video
stream is copied, the audio encoded with the preset's codec (AAC beside H.264, 16-bit PCM beside
ProRes and FFV1), its non-finite samples silenced (`SANITISE`), and cut to the video's length."""

from __future__ import annotations

import os
import subprocess
from fractions import Fraction
from pathlib import Path

from ..errors import UnstableError
from ..formats import PRESETS, ffmpeg_exe

__all__ = ["mux_audio", "stream_seconds", "preset_for_codec", "SANITISE"]

# Every sample finite and within full scale before the encoder sees it: a float file's NaN or
# ±inf makes ffmpeg's AAC encoder fail the whole mux ("Invalid argument"), and PCM would carry a
# full-scale burst. Silence for those, clipping past full scale (as any integer format does);
# integer sources pass through unchanged. Cheap enough to run on every mux (docs/figures.md,
# "Figures moved out of docstrings").
SANITISE = "aeval=exprs='if(isnan(val(ch))+isinf(val(ch)),0,clip(val(ch),-1,1))':channel_layout=same"


def preset_for_codec(codec: str, path: str | os.PathLike) -> str:
    """The preset whose audio suits a joined file of video codec `codec` (`unstable render concat`)."""
    for name in ("prores", "ffv1", "h264"):
        if codec.startswith(name):
            return name
    raise UnstableError(f"{path}: cannot mux audio beside {codec} video (a PNG sequence?)")


def mux_audio(video: str | os.PathLike, audio: str | os.PathLike, preset: str, seconds: Fraction | float) -> Path:
    """Replace `video` by itself with `audio`'s first audio stream added (at most `seconds` of it)."""
    video, audio = Path(video), Path(audio)
    args = PRESETS[preset].audio
    if not args:
        raise UnstableError(f"{video}: the {preset} preset holds no audio")
    tmp = video.with_name(f".{video.stem}.muxing{video.suffix}")
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", str(video), "-i", str(audio),
           "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-af", SANITISE, *args, "-t", f"{float(seconds):.6f}"]
    if video.suffix.lower() in (".mp4", ".mov"):
        cmd += ["-movflags", "+faststart"]
    proc = subprocess.run([*cmd, str(tmp)], capture_output=True)
    if proc.returncode != 0:
        if tmp.exists():
            tmp.unlink()
        lines = [ln.strip() for ln in proc.stderr.decode(errors="replace").splitlines() if ln.strip()]
        raise UnstableError(f"{video}: could not mux the audio of {audio} ({lines[-1][:160] if lines else 'ffmpeg failed'})")
    os.replace(tmp, video)
    return video


def stream_seconds(path: str | os.PathLike) -> dict[str, float]:
    """{"video": s, "audio": s}: each stream's duration as the bundled ffmpeg reads it back (the
    timestamp of its last packet plus that packet's duration), for tests and checks."""
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path),
                           "-map", "0:v:0?", "-map", "0:a:0?", "-c", "copy", "-f", "framemd5", "-"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise UnstableError(f"{path}: ffmpeg could not read it ({proc.stderr.strip()[-160:]})")
    tb: dict[int, Fraction] = {}
    end: dict[int, Fraction] = {}
    for line in proc.stdout.splitlines():
        if line.startswith("#tb "):
            idx, _, frac = line[4:].partition(":")
            tb[int(idx)] = Fraction(frac.strip())
        elif line and not line.startswith("#"):
            f = [x.strip() for x in line.split(",")]
            s, pts, dur = int(f[0]), int(f[2]), int(f[3])
            end[s] = max(end.get(s, Fraction(0)), (pts + dur) * tb[s])
    out = {}
    # framemd5 numbers the streams it was given in map order: 0 video, 1 audio (when present).
    for s, name in ((0, "video"), (1, "audio")):
        if s in end:
            out[name] = float(end[s])
    return out
