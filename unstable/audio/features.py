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

Memory: the signal is analysed as it arrives (`Analyser.feed`, blocks of any length), in float32;
what is kept is six numbers per STFT column (48 bytes per 5.3 ms, 32 MB an hour) and a few per
frame, never the signal itself. Non-finite samples (NaN, ±inf in a float file) are read as
silence and every feature is a finite number in 0..1, whatever the input.
"""


from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..formats import exact

__all__ = ["RATE", "N_FFT", "HOP", "BANDS", "FEATURES", "ONSET_DELTA", "ONSET_WINDOW", "ONSET_GAP",
           "Columns", "columns", "onset_peaks", "FrameFeatures", "Analyser", "analyse", "frame_columns",
           "aggregate", "frame_count", "COLUMN_BYTES"]

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
# Each band is a contiguous run of bins: a slice sums it without copying the power array.
_BAND_BINS = {name: slice(int(np.argmax(_FREQS >= lo)), int(np.argmax(_FREQS >= hi)))
              for name, (lo, hi) in BANDS.items()}
# A full-scale sine's one-sided power through this window: 3 N^2 / 32 (Parseval, Hann), so the
# band power divided by it reads 1 (0 dB) for such a sine.
_SINE_POWER = 3.0 * N_FFT * N_FFT / 32.0
_MAG_SCALE = N_FFT / 4.0  # |X| of a full-scale sine at its peak bin
_BLOCK = 256  # STFT columns computed at once: 2 MB temporaries stay in cache, larger blocks spill
# What an analysis keeps per STFT column: six float64 arrays (three bands, two magnitude sums,
# the flux), their concatenation at the end (x2) and onset_peaks' four temporaries.
COLUMN_BYTES = 6 * 8 * 2 + 4 * 8


def _db_unit(power: np.ndarray) -> np.ndarray:
    """Power (1 = full scale) -> 0..1 on the -60..0 dB scale (NaN reads 0, +inf 1)."""
    power = np.nan_to_num(np.asarray(power, np.float64), nan=0.0, posinf=np.inf, neginf=0.0)
    with np.errstate(over="ignore"):
        db = 10.0 * np.log10(np.maximum(power, 1e-12))
    return np.clip((db - FLOOR_DB) / -FLOOR_DB, 0.0, 1.0)


def _finite(x: np.ndarray) -> np.ndarray:
    """`x` as float32 with NaN and ±inf read as silence (a copy only when there are any)."""
    x = np.asarray(x, np.float32)
    if not np.isfinite(x).all():
        x = np.where(np.isfinite(x), x, np.float32(0.0))
    return x


def _unit(v: np.ndarray) -> np.ndarray:
    """A feature array clamped finite into 0..1, float32."""
    return np.clip(np.nan_to_num(np.asarray(v, np.float64), nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0
                   ).astype(np.float32)


def _range_sums(v: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sum(v[a[i]:b[i]]) for each i, 0 where b[i] <= a[i]; the ranges ascend and do not overlap."""
    out = np.zeros(len(a))
    ok = np.nonzero(b > a)[0]
    if len(ok) == 0:
        return out
    # reduceat over starts and ends interleaved: the even results are the ranges, the odd ones the
    # gaps between them (ignored). An end at len(v) is left off: the last range then runs to it.
    idx = np.empty(2 * len(ok), np.int64)
    idx[0::2], idx[1::2] = a[ok], b[ok]
    if idx[-1] >= len(v):
        idx = idx[:-1]
    out[ok] = np.add.reduceat(v, idx)[0::2]
    return out


@dataclass
class Columns:
    """Per-STFT-column values of a signal: column j is centred on sample `first + j * HOP`."""

    first: int                 # sample index of column 0's centre
    bands: dict[str, np.ndarray]   # band -> power, [J]
    mag_sum: np.ndarray        # sum of |X| over bins, [J]
    mag_freq: np.ndarray       # sum of f |X| over bins, [J]
    flux: np.ndarray           # spectral flux (column 0: 0), [J]


class _ColumnStream:
    """The STFT columns of a signal fed in pieces: column j, centred on sample j × HOP (zeros
    before the first sample and after the last), is computed once its window is complete, so only
    one window's worth of samples is ever held back."""

    def __init__(self):
        self._tail = np.zeros(N_FFT // 2, np.float32)  # the padded signal from the next column's window start
        self._prev: np.ndarray | None = None           # the last column's log magnitudes, [1, N/2+1]
        self._parts: list[np.ndarray] = []             # per block: [6, J] (bands, mag_sum, mag_freq, flux)
        self.samples = 0

    def feed(self, x: np.ndarray) -> None:
        x = _finite(x)  # [S]
        self.samples += len(x)
        self._run(np.concatenate([self._tail, x]))

    def _run(self, buf: np.ndarray) -> None:
        m = (len(buf) - N_FFT) // HOP + 1 if len(buf) >= N_FFT else 0
        if m > 0:
            win = sliding_window_view(buf, N_FFT)[::HOP][:m]  # [m, N], a view
            for c0 in range(0, m, _BLOCK):
                self._block(win[c0:c0 + _BLOCK])
        self._tail = buf[m * HOP:].copy()

    def _block(self, win: np.ndarray) -> None:
        mag = np.abs(np.fft.rfft(win.astype(np.float64) * _WINDOW, axis=1))  # [J, N/2+1]
        power = mag * mag
        out = np.zeros((6, len(win)))
        for i, bins in enumerate(_BAND_BINS.values()):
            out[i] = power[:, bins].sum(axis=1) / _SINE_POWER
        out[3] = mag.sum(axis=1)
        out[4] = (mag * _FREQS).sum(axis=1)
        log_mag = np.log1p(1000.0 * mag / _MAG_SCALE)
        stacked = log_mag if self._prev is None else np.concatenate([self._prev, log_mag])
        rise = np.maximum(stacked[1:] - stacked[:-1], 0.0).mean(axis=1)
        out[5, (1 if self._prev is None else 0):] = rise
        self._prev = log_mag[-1:]
        self._parts.append(out)

    def finish(self, first: int = 0) -> Columns:
        """Every column, the last ones over the zeros after the end (1 + samples // HOP of them)."""
        if self.samples:
            self._run(np.concatenate([self._tail, np.zeros(N_FFT // 2, np.float32)]))
        allc = np.concatenate(self._parts, axis=1) if self._parts else np.zeros((6, 0))  # [6, J]
        self._parts = []
        return Columns(first, {b: allc[i] for i, b in enumerate(BANDS)}, allc[3], allc[4], allc[5])


def columns(x: np.ndarray, first: int = 0) -> Columns:
    """STFT columns of `x` (mono float, RATE Hz), centred on samples 0, HOP, 2 HOP, ... of `x`
    (`first` is the absolute sample number of x[0], kept for the caller)."""
    stream = _ColumnStream()
    x = np.asarray(x)
    for i in range(0, len(x), _BLOCK * HOP):
        stream.feed(x[i:i + _BLOCK * HOP])
    return stream.finish(first)


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
    per = Fraction(RATE) / exact(fps) / HOP  # columns per frame, exact
    a = -(-n * per.numerator // per.denominator)
    b = -(-(n + 1) * per.numerator // per.denominator)
    return int(a), int(b)


def _features(cols: Columns, a: np.ndarray, b: np.ndarray, sumsq: np.ndarray, count: np.ndarray,
              onset: np.ndarray) -> dict[str, np.ndarray]:
    """The features of frames whose columns are [a, b) and whose samples' squares sum to `sumsq`
    over `count` samples, each [F]; every value finite in 0..1."""
    b = np.maximum(a, np.minimum(b, len(cols.flux)))
    ncols = np.maximum(b - a, 1)
    has = b > a
    out = {"onset": onset.astype(np.float64)}
    # x2: a full-scale sine reads 0 dB
    out["rms"] = np.where(count > 0, _db_unit(2.0 * sumsq / np.maximum(count, 1)), 0.0)
    means = {band: _range_sums(cols.bands[band], a, b) / ncols for band in BANDS}
    for band in BANDS:
        out[band] = np.where(has, _db_unit(means[band]), 0.0)
    total = _range_sums(cols.mag_sum, a, b)
    loud = sum(means.values()) > 10 ** (FLOOR_DB / 10)
    ok = has & (total > 0) & loud
    c = _range_sums(cols.mag_freq, a, b) / np.where(ok, total, 1.0)
    with np.errstate(invalid="ignore", over="ignore"):
        centroid = np.log10(np.maximum(c, 1e-9) / 100.0) / 2.0
    out["centroid"] = np.where(ok, centroid, 0.0)
    return {f: _unit(out[f]) for f in FEATURES}


def aggregate(cols: Columns, a: int, b: int, samples: np.ndarray, onset: bool) -> dict[str, float]:
    """The features of one frame from its columns [a, b) and its own samples."""
    samples = _finite(samples)
    one = _features(cols, np.array([a]), np.array([b]), np.array([np.square(samples, dtype=np.float64).sum()]),
                    np.array([len(samples)]), np.array([onset]))
    return {f: float(v[0]) for f, v in one.items()}


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
    q = Fraction(samples) / RATE * exact(fps)
    return max(1, -(-q.numerator // q.denominator))


def _mul_div(n: np.ndarray, p: int, q: int, ceil: bool) -> np.ndarray:
    """ceil (or floor) of n × p / q for an integer array n, exactly: in int64 where it cannot
    overflow, else in Python integers (an fps such as 29.97002997002997 has 17-digit terms)."""
    n = np.asarray(n, np.int64)
    if len(n) == 0 or max(abs(int(n.max())), abs(int(n.min())), 1) * p < 2 ** 62:
        return -(-n * p // q) if ceil else n * p // q
    return np.array([-(-int(k) * p // q) if ceil else int(k) * p // q for k in n], np.int64)


def frame_columns_many(n: np.ndarray, fps) -> tuple[np.ndarray, np.ndarray]:
    """`frame_columns` of every frame in `n` at once."""
    per = Fraction(RATE) / exact(fps) / HOP
    p, q = per.numerator, per.denominator
    return _mul_div(n, p, q, True), _mul_div(np.asarray(n) + 1, p, q, True)


class Analyser:
    """The features of a signal fed block by block (mono float32 at RATE, any block lengths, the
    same result as one block): `feed` each block as it is decoded, then `finish`."""

    def __init__(self, fps):
        self.fps = exact(fps)
        per = Fraction(RATE) / self.fps    # samples per frame, exact
        self._p, self._q = per.numerator, per.denominator
        self._cols = _ColumnStream()
        self._sumsq = np.zeros(1024)       # per frame: the sum of its samples' squares, [frames so far]

    @property
    def samples(self) -> int:
        """Samples fed so far."""
        return self._cols.samples

    def _starts(self, n: np.ndarray) -> np.ndarray:
        """The first sample of each frame n: ceil(n × RATE / fps)."""
        return _mul_div(n, self._p, self._q, True)

    def feed(self, x: np.ndarray) -> None:
        """The next samples of the signal."""
        x = _finite(x)  # [S]
        if len(x) == 0:
            return
        o = self.samples
        self._cols.feed(x)
        n0, n1 = o * self._q // self._p, (o + len(x) - 1) * self._q // self._p  # frames this block touches
        if n1 >= len(self._sumsq):
            self._sumsq = np.concatenate([self._sumsq, np.zeros(max(n1 + 1, 2 * len(self._sumsq)) - len(self._sumsq))])
        n = np.arange(n0, n1 + 2, dtype=np.int64)
        bounds = np.clip(self._starts(n) - o, 0, len(x))
        self._sumsq[n0:n1 + 1] += _range_sums(np.square(x, dtype=np.float64), bounds[:-1], bounds[1:])

    def finish(self, frames: int | None = None) -> FrameFeatures:
        """Every frame's features (default frame count: `frame_count` of the samples fed)."""
        total = self.samples
        frames = frame_count(total, self.fps) if frames is None else int(frames)
        cols = self._cols.finish()
        # Columns whose window runs past the end see the signal cut off (broadband: a false rise).
        peaks = onset_peaks(cols.flux, max(0, (total - N_FFT // 2) // HOP + 1))
        n = np.arange(frames, dtype=np.int64)
        onset = np.zeros(frames, bool)
        hit = _mul_div(peaks * HOP, self._q, self._p, False)   # the frame each onset column's centre lies in
        onset[hit[hit < frames]] = True
        a, b = frame_columns_many(n, self.fps)
        s0, s1 = np.minimum(self._starts(n), total), np.minimum(self._starts(n + 1), total)
        sumsq = np.zeros(frames)
        k = min(frames, len(self._sumsq))
        sumsq[:k] = self._sumsq[:k]
        values = _features(cols, a, b, sumsq, s1 - s0, onset)
        return FrameFeatures(self.fps, frames, values, peaks.astype(np.float64) * HOP / RATE)


def analyse(x: np.ndarray, fps, frames: int | None = None) -> FrameFeatures:
    """The features of every frame of signal `x` (mono, RATE Hz) at `fps` (default frame count:
    `frame_count`)."""
    an = Analyser(fps)
    x = np.asarray(x)
    for i in range(0, len(x), _BLOCK * HOP):
        an.feed(x[i:i + _BLOCK * HOP])
    return an.finish(frames)
