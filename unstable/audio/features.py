"""Audio features on the frame clock, in numpy: RMS, onsets, low/mid/high band energy, spectral
centroid, each a number in 0..1 per video frame.

Frame n of a show at `fps` shows the audio *during* it: the samples of [n / fps, (n + 1) / fps).
The same function gives a render, a live show played from a file and a test their features, so
a render is deterministic and a live frame n reacts to the same sound as rendered frame n.

Analysis (all at `RATE` = 48 000 Hz, mono float32):

- An STFT with a Hann window of `N_FFT` = 1024 samples (21.3 ms) every `HOP` = 256 samples
  (5.3 ms); column j is centred on sample j × HOP (the signal is padded with zeros at both ends).
  The columns of frame n are those whose centre lies in the frame's interval.
- `rms`: the root mean square of the frame's own samples, in dB full scale mapped linearly from
  -60 dBFS (0) to 0 dBFS (1).
- `low`, `mid`, `high`: the band's power averaged over the frame's columns, on the same -60..0
  dB scale (a full-scale sine inside the band reads 0 dB). Band edges: low 20-250 Hz, mid
  250-4000 Hz, high 4000-16000 Hz (`BANDS`).
- `centroid`: the magnitude-weighted mean frequency of the frame's columns, on a log scale from
  100 Hz (0) to 10 kHz (1); 0 for a frame quieter than -60 dBFS.
- `onset`: 1 in a frame that holds an onset, else 0. Onsets are peaks of the spectral flux:
  the mean over bins of the rise of log-compressed magnitude, log(1 + 1000 |X| / (N_FFT / 4)),
  from one column to the next. Column j is an onset when its flux is a local maximum (at least
  its predecessor's, more than its successor's: one column of look-ahead), exceeds
  `ONSET_DELTA` (0.1) plus the mean flux of the preceding `ONSET_WINDOW` (0.1 s), and comes at
  least `ONSET_GAP` (0.025 s) after the previous onset. An onset is placed at its column's centre,
  which for a click sits up to ~8 ms before the click itself (the window sees it coming): a
  click in the last 8 ms of a frame can land in the frame before.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

__all__ = ["RATE", "N_FFT", "HOP", "BANDS", "FEATURES", "ONSET_DELTA", "ONSET_WINDOW", "ONSET_GAP",
           "Columns", "columns", "onset_peaks", "FrameFeatures", "analyse", "frame_columns", "aggregate"]

RATE = 48_000
N_FFT = 1024
HOP = 256
BANDS = {"low": (20.0, 250.0), "mid": (250.0, 4000.0), "high": (4000.0, 16000.0)}
FEATURES = ("rms", "onset", "low", "mid", "high", "centroid")
ONSET_DELTA = 0.1
ONSET_WINDOW = 0.1
ONSET_GAP = 0.025
FLOOR_DB = -60.0

_WINDOW = np.hanning(N_FFT + 1)[:-1].astype(np.float64)  # periodic Hann
_FREQS = np.fft.rfftfreq(N_FFT, 1.0 / RATE)
_BAND_BINS = {name: (_FREQS >= lo) & (_FREQS < hi) for name, (lo, hi) in BANDS.items()}
# A full-scale sine's one-sided power through this window: 3 N^2 / 32 (Parseval, Hann), so the
# band power divided by it reads 1 (0 dB) for such a sine.
_SINE_POWER = 3.0 * N_FFT * N_FFT / 32.0
_MAG_SCALE = N_FFT / 4.0  # |X| of a full-scale sine at its peak bin
_BLOCK = 2048  # STFT columns computed at once


def _db_unit(power: np.ndarray) -> np.ndarray:
    """Power (1 = full scale) -> 0..1 on the -60..0 dB scale."""
    db = 10.0 * np.log10(np.maximum(power, 1e-12))
    return np.clip((db - FLOOR_DB) / -FLOOR_DB, 0.0, 1.0)


@dataclass
class Columns:
    """Per-STFT-column values of a signal: column j is centred on sample `first + j * HOP`."""

    first: int                 # sample index of column 0's centre
    bands: dict[str, np.ndarray]   # band -> power, [J]
    mag_sum: np.ndarray        # sum of |X| over bins, [J]
    mag_freq: np.ndarray       # sum of f |X| over bins, [J]
    flux: np.ndarray           # spectral flux (column 0: 0), [J]


def columns(x: np.ndarray, first: int = 0) -> Columns:
    """STFT columns of `x` (mono float, RATE Hz), centred on samples 0, HOP, 2 HOP, ... of `x`
    (`first` is the absolute sample number of x[0], kept for the caller)."""
    x = np.asarray(x, np.float64)  # [S]
    pad = N_FFT // 2
    padded = np.concatenate([np.zeros(pad), x, np.zeros(pad)])
    count = 1 + len(x) // HOP if len(x) else 0
    if count == 0:
        empty = np.zeros(0)
        return Columns(first, {b: empty for b in BANDS}, empty, empty, empty)
    bands = {b: np.zeros(count) for b in BANDS}
    mag_sum, mag_freq, flux = np.zeros(count), np.zeros(count), np.zeros(count)
    prev = None
    for c0 in range(0, count, _BLOCK):  # in blocks: a whole song at once would take gigabytes
        c1 = min(count, c0 + _BLOCK)
        idx = np.arange(c0, c1)[:, None] * HOP + np.arange(N_FFT)[None, :]   # [J, N]
        mag = np.abs(np.fft.rfft(padded[idx] * _WINDOW, axis=1))             # [J, N/2+1]
        power = mag * mag
        for b, bins in _BAND_BINS.items():
            bands[b][c0:c1] = power[:, bins].sum(axis=1) / _SINE_POWER
        mag_sum[c0:c1] = mag.sum(axis=1)
        mag_freq[c0:c1] = (mag * _FREQS).sum(axis=1)
        log_mag = np.log1p(1000.0 * mag / _MAG_SCALE)
        stacked = log_mag if prev is None else np.concatenate([prev, log_mag])
        rise = np.maximum(stacked[1:] - stacked[:-1], 0.0).mean(axis=1)
        flux[c0 + (1 if prev is None else 0):c1] = rise
        prev = log_mag[-1:]
    return Columns(first, bands, mag_sum, mag_freq, flux)


def onset_peaks(flux: np.ndarray, last: int | None = None) -> np.ndarray:
    """Indices of the onset columns of `flux` (see the module doc), up to `last` (exclusive; the
    default leaves out the final column, which has no successor yet)."""
    n = len(flux)
    last = n - 1 if last is None else min(last, n - 1)
    if last <= 1:
        return np.zeros(0, np.int64)
    w = max(1, round(ONSET_WINDOW * RATE / HOP))
    csum = np.concatenate([[0.0], np.cumsum(flux)])
    j = np.arange(1, last)
    lo = np.maximum(j - w, 0)
    mean = (csum[j] - csum[lo]) / np.maximum(j - lo, 1)
    cand = j[(flux[j] >= flux[j - 1]) & (flux[j] > flux[j + 1]) & (flux[j] > ONSET_DELTA + mean)]
    gap = ONSET_GAP * RATE / HOP
    keep, prev = [], -np.inf
    for c in cand:
        if c - prev >= gap:
            keep.append(c)
            prev = c
    return np.asarray(keep, np.int64)


def frame_columns(n: int, fps: Fraction) -> tuple[int, int]:
    """Columns [a, b) (of a signal starting at sample 0) whose centres lie in frame n's interval."""
    per = Fraction(RATE) / Fraction(fps) / HOP  # columns per frame, exact
    a = -(-n * per.numerator // per.denominator)
    b = -(-(n + 1) * per.numerator // per.denominator)
    return int(a), int(b)


def aggregate(cols: Columns, a: int, b: int, samples: np.ndarray, onset: bool) -> dict[str, float]:
    """The features of one frame from its columns [a, b) and its own samples."""
    out = {"onset": 1.0 if onset else 0.0}
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0
    out["rms"] = float(_db_unit(np.array(rms * rms * 2.0)))  # x2: a full-scale sine reads 0 dB
    if b <= a:
        out.update(low=0.0, mid=0.0, high=0.0, centroid=0.0)
        return out
    for band in BANDS:
        out[band] = float(_db_unit(np.array(cols.bands[band][a:b].mean())))
    total = cols.mag_sum[a:b].sum()
    loud = sum(cols.bands[k][a:b].mean() for k in BANDS) > 10 ** (FLOOR_DB / 10)
    if total > 0 and loud:
        c = cols.mag_freq[a:b].sum() / total
        out["centroid"] = float(np.clip(np.log10(max(c, 1e-9) / 100.0) / 2.0, 0.0, 1.0))
    else:
        out["centroid"] = 0.0
    return out


@dataclass
class FrameFeatures:
    """Every feature of every frame of a signal: `values[name]` is a float32 array [frames]."""

    fps: Fraction
    frames: int
    values: dict[str, np.ndarray]
    onset_times: np.ndarray    # seconds of each detected onset

    def at(self, n: int) -> dict[str, float]:
        """{feature: value} of frame n (0 past the end)."""
        if not 0 <= n < self.frames:
            return {f: 0.0 for f in FEATURES}
        return {f: float(v[n]) for f, v in self.values.items()}


def frame_count(samples: int, fps: Fraction) -> int:
    """Frames a render of `samples` samples lasts: ceil(samples / RATE × fps), so the video covers
    all the audio and ends less than one frame after it (at least one frame)."""
    q = Fraction(samples) / RATE * Fraction(fps)
    return max(1, -(-q.numerator // q.denominator))


def analyse(x: np.ndarray, fps, frames: int | None = None) -> FrameFeatures:
    """The features of every frame of signal `x` (mono, RATE Hz) at `fps` (default frame count:
    `frame_count`)."""
    fps = Fraction(fps) if not isinstance(fps, float) else Fraction(repr(fps))
    x = np.asarray(x, np.float32)
    frames = frame_count(len(x), fps) if frames is None else int(frames)
    cols = columns(x)
    # Columns whose window runs past the end see the signal cut off (broadband: a false rise).
    peaks = onset_peaks(cols.flux, max(0, (len(x) - N_FFT // 2) // HOP + 1))
    onset_frames = set()
    per = Fraction(RATE) / fps
    for j in peaks:
        onset_frames.add(int(Fraction(int(j) * HOP) / per))
    values = {f: np.zeros(frames, np.float32) for f in FEATURES}
    for n in range(frames):
        a, b = frame_columns(n, fps)
        b = min(b, len(cols.flux))
        s0 = -(-n * per.numerator // per.denominator)
        s1 = -(-(n + 1) * per.numerator // per.denominator)
        feats = aggregate(cols, a, b, x[int(s0):int(s1)], n in onset_frames)
        for f in FEATURES:
            values[f][n] = feats[f]
    return FrameFeatures(fps, frames, values, peaks.astype(np.float64) * HOP / RATE)
