"""Makes shows/sounds/demo.flac, the sound `shows/demo-sound.toml` plays: 32 s (16 bars at 120 BPM)
synthesised here from sines and seeded noise, so its licence is the project's own.

    .venv/bin/python scripts/make_sound.py            # writes shows/sounds/demo.flac
    .venv/bin/python scripts/make_sound.py --out x.wav

Mono, 44.1 kHz, 16-bit FLAC (lossless: the samples are exactly `synthesise()`'s, quantised).
The arrangement gives each of the show's [[audio.map]] something to follow, at known times:

    0-2 s      a pad chord alone (mid band; no kick, no hats)
    2-16 s     kick on every beat (onsets, low band) and the bass; hats on the off-beats from 4 s
               (high band), a snare on beats 2 and 4 from 8 s
    16-20 s    a break: the pad and the hats only
    20-32 s    everything
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "shows" / "sounds" / "demo.flac"
RATE = 44_100
BPM = 120
SECONDS = 32.0
BEAT = 60.0 / BPM
SEED = 7


def _env(n: int, decay: float) -> np.ndarray:
    """An exponential decay of time constant `decay` seconds over n samples, [n]."""
    return np.exp(-np.arange(n) / (decay * RATE))


def _kick(rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(0.35 * RATE)) / RATE
    freq = 45.0 + 75.0 * np.exp(-t / 0.04)         # a falling pitch: 120 Hz down to 45 Hz
    phase = 2 * np.pi * np.cumsum(freq) / RATE
    body = np.sin(phase) * _env(len(t), 0.09)
    # The beater's click: 5 ms of noise, low-passed (a 6-sample average: mostly under 4 kHz, so the
    # kicks stay out of the hats' band). The body alone rises in a handful of low bins, too little
    # spectral flux for an onset; with the click every kick is one.
    n = int(0.005 * RATE)
    click = np.convolve(rng.standard_normal(n + 5), np.ones(6) / 6, "valid")
    body[:n] += 0.3 * click * _env(n, 0.0015)
    return body


def _hat(rng: np.random.Generator) -> np.ndarray:
    n = rng.standard_normal(int(0.15 * RATE))
    n = np.diff(n, prepend=0.0)                     # first difference: the energy moves up the spectrum
    return 0.5 * n * _env(len(n), 0.035)


def _snare(rng: np.random.Generator) -> np.ndarray:
    k = int(0.18 * RATE)
    t = np.arange(k) / RATE
    return (0.4 * rng.standard_normal(k) * _env(k, 0.04) + 0.3 * np.sin(2 * np.pi * 190 * t) * _env(k, 0.03))


def _add(x: np.ndarray, at: float, sound: np.ndarray, gain: float = 1.0) -> None:
    i = int(round(at * RATE))
    j = min(len(x), i + len(sound))
    x[i:j] += gain * sound[:j - i]


def synthesise() -> np.ndarray:
    """The whole sound, float64 in -0.9..0.9, [SECONDS × RATE]."""
    rng = np.random.default_rng(SEED)
    n = int(SECONDS * RATE)
    t = np.arange(n) / RATE
    x = np.zeros(n)
    # Pad: a chord a bar (A minor, F, C, G), three detuned sines per note, slow attack and release.
    chords = [(220.0, 261.63, 329.63), (174.61, 220.0, 261.63), (196.0, 261.63, 329.63), (196.0, 246.94, 293.66)]
    bar = 4 * BEAT
    for b in range(int(SECONDS / bar)):
        i0, i1 = int(b * bar * RATE), int((b + 1) * bar * RATE)
        tb = t[i0:i1] - b * bar
        shape = np.minimum(1.0, tb / 0.3) * np.minimum(1.0, (bar - tb) / 0.3)
        for f in chords[b % 4]:
            for detune in (0.998, 1.0, 1.002):
                x[i0:i1] += 0.04 * shape * np.sin(2 * np.pi * f * detune * tb)
    kick, snare = _kick(rng), _snare(rng)
    beats = int(SECONDS / BEAT)
    for k in range(beats):
        at = k * BEAT
        in_break = 16.0 <= at < 20.0
        if at >= 2.0 and not in_break:
            _add(x, at, kick, 0.8)
            root = chords[int(at / bar) % 4][0] / 4   # the bass: the chord's root two octaves down
            tn = np.arange(int(0.45 * BEAT * RATE)) / RATE
            _add(x, at + BEAT / 2, np.sin(2 * np.pi * root * tn) * _env(len(tn), 0.12), 0.35)
        if at >= 4.0:
            _add(x, at + BEAT / 2, _hat(rng), 1.0)
        if at >= 8.0 and not in_break and k % 2 == 1:
            _add(x, at, snare, 0.7)
    return 0.9 * x / np.abs(x).max()


def write(path: Path, x: np.ndarray) -> Path:
    """`x` as 16-bit mono at RATE: a WAV, or a FLAC through the bundled ffmpeg (by the suffix)."""
    from unstable.formats import ffmpeg_exe
    pcm = np.round(np.clip(x, -1.0, 1.0) * 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wav = path if path.suffix.lower() == ".wav" else Path(tmp) / "sound.wav"
        with wave.open(str(wav), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(pcm.tobytes())
        if wav != path:
            # -fflags +bitexact: no encoder version string, so the same samples give the same bytes.
            proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", str(wav),
                                   "-fflags", "+bitexact", "-c:a", "flac", "-compression_level", "12", str(path)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"make_sound: ffmpeg could not write {path}: {proc.stderr.strip()[-200:]}")
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT, help=f"where to write it (default {OUT.relative_to(ROOT)})")
    args = ap.parse_args(argv)
    path = write(args.out, synthesise())
    print(f"make_sound: {path}  {SECONDS:g} s, {RATE} Hz mono, {path.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
