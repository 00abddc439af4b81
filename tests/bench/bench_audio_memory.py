"""Peak memory and time of reading a long sound file for a show (decode + features), in a child
process, the way `unstable live/render --audio` does before its first frame.

    .venv/bin/python tests/bench/bench_audio_memory.py                 # a synthesised 1-hour file
    .venv/bin/python tests/bench/bench_audio_memory.py --minutes 10
    .venv/bin/python tests/bench/bench_audio_memory.py --file set.flac

The synthesised file is 44.1 kHz stereo 16-bit WAV (a 220 Hz tone beeping every second over quiet
noise), so the decode resamples and downmixes as it would for a real recording.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from unstable.audio.decode import analysis_bytes  # noqa: E402
from unstable.formats import ffmpeg_exe  # noqa: E402

CHILD = """
import resource, sys, time
t0 = time.perf_counter()
from unstable.audio.mapping import FileInput
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t1 = time.perf_counter()
f = FileInput(sys.argv[1], 30)
t2 = time.perf_counter()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f.frames, f"{t2 - t1:.2f}", base * 1024, peak * 1024, int(f.features.values["onset"].sum()))
"""


def synthesise(path: Path, minutes: float) -> None:
    s = minutes * 60
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
                    "-f", "lavfi", "-i", f"sine=f=220:beep_factor=4:r=44100:d={s}",
                    "-f", "lavfi", "-i", f"anoisesrc=r=44100:a=0.02:d={s}",
                    "-filter_complex", "[0][1]amix=inputs=2,pan=stereo|c0=c0|c1=c0", "-c:a", "pcm_s16le", str(path)],
                   check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--file", type=Path, default=None, help="measure this file instead of a synthesised one")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.file
        if path is None:
            path = Path(tmp) / "long.wav"
            synthesise(path, args.minutes)
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(CHILD), str(path)], capture_output=True,
                              text=True, cwd=ROOT)
        if proc.returncode != 0:
            print(proc.stderr[-2000:], file=sys.stderr)
            return 1
        frames, seconds, base, peak, onsets = proc.stdout.split()
        minutes = int(frames) / 30 / 60
        print(f"bench_audio_memory: {path.name} {path.stat().st_size / 1e6:.0f} MB, {minutes:.1f} min "
              f"({frames} frames at 30 fps, {onsets} onsets), load {os.getloadavg()[0]:.1f}")
        print(f"  decode + features {float(seconds):.1f} s; peak RSS {int(peak) / 1e6:.0f} MB "
              f"({int(base) / 1e6:.0f} MB after imports, +{(int(peak) - int(base)) / 1e6:.0f} MB; "
              f"analysis_bytes says {analysis_bytes(minutes * 60, 30) / 1e6:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
