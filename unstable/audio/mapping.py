"""`[[audio.map]]`: audio features onto live parameters, as offsets on top of their targets.

    [audio]
    file = "music.wav"          # optional: what a render (and `unstable live` without a device) follows
    [[audio.map]]
    feature = "onset"           # rms | onset | low | mid | high | centroid (unstable.audio.features)
    param = "eq.hue"            # piece.param, or show.master_fade
    amount = 0.5                # -1..1 of the parameter's fader travel; live at /unstable/audio/amount0
    smoothing = 0.2             # seconds: the feature jumps up at once and falls back with this time constant

Semantics, per frame: level = the feature (0..1) through its envelope (instant attack, exponential
release with time constant `smoothing`; 0: the raw feature); the parameter's value in the frame's
snapshot is moved by amount x level of its fader travel (its 0..1 position, so log-scaled
parameters move evenly through their decades) and clamped to its range. The parameter's target,
its smoothing and what a controller sees stay untouched: audio modulates what the frame is drawn
from, on top of whatever OSC, scenes or automation set. Each amount is a live parameter of the
group `audio` (`/unstable/audio/amount<i>`, i counting the maps from 0), so controllers, scenes and
automation play it like any other. Several maps onto one parameter add up.

Audio writes only into the frame's parameter snapshot and the automation record (the levels of
each frame, so a performance played to a live input renders again exactly); never into models or
GL.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Mapping, Sequence

import numpy as np

from ..config import setting
from ..errors import UnstableError
from ..formats import exact
from ..schema import AUDIO, CLOCK, ParamSpec
from .features import FEATURES, HOP, N_FFT, ONSET_GAP, RATE, Analyser, FrameFeatures, aggregate, columns, onset_peaks

log = logging.getLogger("unstable.audio")

__all__ = ["AUDIO", "AudioMapSettings", "AudioSettings", "audio_specs", "amount_name", "FileInput", "DeviceInput",
           "AudioModulator", "open_input", "open_show_audio", "unmapped_line"]


@dataclass(frozen=True)
class AudioMapSettings:
    """`[[audio.map]]`: one audio feature onto one live parameter."""

    feature: Literal["rms", "onset", "low", "mid", "high", "centroid"] = setting(
        doc="the audio feature (0..1 per frame)")
    param: str = setting(doc="the live parameter it moves: 'piece.param' (e.g. 'eq.hue') or 'show.master_fade'")
    amount: float = setting(0.5, ge=-1, le=1, doc="offset at feature 1, as a share of the parameter's fader "
                            "travel (negative: downwards); a live parameter, /unstable/audio/amount<i>")
    smoothing: float = setting(0.0, ge=0, le=60, doc="release time constant in seconds (attack is instant; "
                               "0: the raw feature)")

    def __post_init__(self):
        group, dot, name = self.param.partition(".")
        if not dot or not group or not name or "." in name:
            raise ValueError(f"param: {self.param!r} is not 'piece.param', expected e.g. 'eq.hue' or "
                             "'show.master_fade'")

    @property
    def key(self) -> tuple[str, str]:
        group, _, name = self.param.partition(".")
        return group, name


@dataclass(frozen=True)
class AudioSettings:
    """`[audio]`: what the show listens to and which parameters it moves."""

    file: str = setting("", doc="an audio file (relative to the show file) a render follows and `unstable live` "
                        "plays from instead of the input device ('' = none; --audio overrides)")
    device: str = setting("", doc="live input device: a name or an index ('' = the system's default input)")
    map: tuple[AudioMapSettings, ...] = setting((), doc="the mappings ([[audio.map]])")


def amount_name(i: int) -> str:
    return f"amount{i}"


def audio_specs(settings: AudioSettings) -> list[ParamSpec]:
    """The live parameters of the audio group: one amount per map."""
    return [ParamSpec(amount_name(i), -1.0, 1.0, m.amount, smoothing=0.1,
                      doc=f"amount of {m.feature} on {m.param}", reads=CLOCK)
            for i, m in enumerate(settings.map)]


def _unit1(v) -> float:
    """A level as a finite number in 0..1 (NaN reads 0, +inf 1)."""
    v = float(v)
    if math.isnan(v):
        return 0.0
    return min(max(v, 0.0), 1.0)


def _unit(v: np.ndarray) -> np.ndarray:
    """`_unit1` of every element, float64."""
    return np.clip(np.nan_to_num(np.asarray(v, np.float64), nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)


# ----------------------------------------------------------------------------------------- inputs

class FileInput:
    """An audio file's features, computed once for every frame (the same for live and render)."""

    kind = "file"

    def __init__(self, path: str | Path, fps, *, what: str = "--audio"):
        from .decode import Decoder
        self.path = Path(path)
        self.fps = exact(fps)
        # Decoded and analysed block by block: memory follows the number of frames, not samples.
        decoder = Decoder(self.path, self.fps, what=what)
        analyser = Analyser(self.fps)
        for block in decoder.blocks():
            analyser.feed(block)
        self.samples = analyser.samples
        self.nonfinite = decoder.nonfinite   # NaN / inf samples, read as silence
        self.seconds = self.samples / RATE
        self.features: FrameFeatures = analyser.finish()
        self.frames = self.features.frames

    def at(self, frame: int) -> dict[str, float]:
        return self.features.at(frame)

    def close(self) -> None:
        pass


class DeviceInput:
    """Live features from an input device through sounddevice (PortAudio), computed each frame from
    the newest samples: the samples since the previous frame, the onsets among the STFT columns
    whose window (and one column of look-ahead) is complete. Without a device, or without
    PortAudio, `ok` is False, `why` says why in one line, and every feature reads 0."""

    kind = "device"
    BUFFER = RATE // 2  # the newest half second

    def __init__(self, device: str = "", fps=30):
        self.ok = False
        self.why = ""
        self.stream = None
        self._buf = np.zeros(self.BUFFER, np.float32)
        self._total = 0
        self._lock = threading.Lock()
        self._done = 0          # absolute sample up to which features were reported
        self._last_onset = -RATE  # centre sample of the last onset reported
        self.fps = float(fps)
        try:
            import sounddevice as sd
        except (ImportError, OSError) as e:  # OSError: the PortAudio library is missing
            self.why = f"audio: no live input (sounddevice unavailable: {str(e).splitlines()[0][:120]})"
            return
        dev = None
        if device:
            dev = int(device) if device.isdigit() else device
        try:
            self.stream = sd.InputStream(samplerate=RATE, channels=1, dtype="float32", device=dev,
                                         blocksize=HOP, callback=self._callback)
            self.stream.start()
            self.ok = True
        except Exception as e:  # PortAudioError, ValueError: no such device / no default input
            self.stream = None
            which = f"device {device!r}" if device else "default input device"
            self.why = f"audio: no live input ({which}: {str(e).splitlines()[0][:120] if str(e) else type(e).__name__})"

    def _callback(self, indata, frames, time_info, status) -> None:
        x = indata[:, 0]
        with self._lock:
            n = len(x)
            if n >= self.BUFFER:
                self._buf[:] = x[-self.BUFFER:]
            else:
                self._buf = np.roll(self._buf, -n)
                self._buf[-n:] = x
            self._total += n

    def feed(self, x: np.ndarray) -> None:
        """Append samples as the device callback does (tests, a file played in real time)."""
        for i in range(0, len(x), HOP):
            self._callback(np.asarray(x[i:i + HOP], np.float32)[:, None], 0, None, None)

    def at(self, frame: int) -> dict[str, float]:
        with self._lock:
            buf, total = self._buf.copy(), self._total
        # buf holds absolute samples [total - BUFFER, total) (zeros before the first: silence).
        first = total - len(buf)
        start = max(self._done, first)
        if total <= start:
            return {f: 0.0 for f in FEATURES}
        # Columns on the absolute grid of multiples of HOP, as offline: the same peaks from call to call.
        skip = (-first) % HOP
        cols = columns(buf[skip:], first=first + skip)
        centres = first + skip + np.arange(len(cols.flux)) * HOP
        # Onsets only where a column's window and its successor's are complete (no zero padding).
        complete = int(np.searchsorted(centres, total - N_FFT // 2 - HOP, side="right"))
        peaks = onset_peaks(cols.flux, complete)
        gap = ONSET_GAP * RATE
        new = [p for p in peaks if centres[p] > self._last_onset and centres[p] - self._last_onset >= gap]
        if new:
            self._last_onset = int(centres[new[-1]])
        a = int(np.searchsorted(centres, start, side="left"))
        b = max(a, int(np.searchsorted(centres, total, side="left")))
        feats = aggregate(cols, a, b, buf[start - first:], bool(new))
        self._done = total
        return feats

    def close(self) -> None:
        if self.stream is not None:
            try:
                self.stream.stop()
                self.stream.close()
            except Exception:  # noqa: BLE001 - closing a device that went away
                pass
            self.stream = None


def open_input(file: str | Path | None, device: str, fps, *, echo: Callable[[str], None] = print,
               what: str = "--audio"):
    """A FileInput for `file`, else a DeviceInput; a device that cannot open is one line (`echo`)
    and None: the show plays on without sound input. A bad file raises UnstableError (one line)."""
    if file:
        return FileInput(file, fps, what=what)
    dev = DeviceInput(device, fps)
    if not dev.ok:
        echo(f"{dev.why}; the show plays on without sound input")
        return None
    return dev


# ------------------------------------------------------------------------------------ modulation

class AudioModulator:
    """The maps of a show applied to each frame's snapshot. `input` (FileInput, DeviceInput or None)
    gives the features; without one, levels come from `set_levels` (an automation replay) or are 0.

    A file's levels are computed for every frame at once, from frame 0, so a frame's level does not
    depend on which frames were drawn before it (a render in parts), except that a live show that
    dropped frames shows the highest level of the frames it dropped in the next frame it draws
    (an onset is never lost to a late frame; the automation records what was shown)."""

    def __init__(self, maps: Sequence[AudioMapSettings], specs: Mapping[tuple[str, str], ParamSpec], fps,
                 input=None):
        self.maps = list(maps)
        self.specs = dict(specs)
        self.fps = float(exact(fps))
        self.input = input
        self.replayed: list[float] | None = None
        self._decay = [math.exp(-1.0 / (self.fps * m.smoothing)) if m.smoothing > 0 else 0.0 for m in self.maps]
        self._table: np.ndarray | None = None
        if isinstance(input, FileInput):
            self._table = self._levels_table(input.features)
        self._last_frame: int | None = None
        self._last: list[float] = [0.0] * len(self.maps)

    def _levels_table(self, feats: FrameFeatures) -> np.ndarray:
        table = np.zeros((feats.frames, len(self.maps)), np.float64)  # [frames, maps]
        for i, m in enumerate(self.maps):
            x = _unit(feats.values[m.feature])
            d, y = self._decay[i], 0.0
            col = table[:, i]
            for n in range(feats.frames):
                y = max(x[n], y * d)
                col[n] = y
        return table

    def levels(self, frame: int) -> list[float]:
        """Each map's level (0..1) at `frame`."""
        if self._table is not None:
            # Frames a late live show dropped since the last one asked for: their peaks still show
            # (a click in a dropped frame flashes in the next drawn one). Consecutive frames (every
            # render) read their own row only.
            lo = frame
            if self._last_frame is not None and self._last_frame < frame - 1:
                lo = max(self._last_frame + 1, 0)
            self._last_frame = frame
            if 0 <= frame < len(self._table):
                return [float(v) for v in self._table[lo:frame + 1].max(axis=0)]
            if frame >= len(self._table) and len(self._table):
                # Past the end: the envelopes keep falling from the last frame.
                last = self._table[-1]
                k = frame - len(self._table) + 1
                return [float(last[i] * self._decay[i] ** k) for i in range(len(self.maps))]
            return [0.0] * len(self.maps)
        if self.input is not None:
            feats = self.input.at(frame)
            steps = 1 if self._last_frame is None else max(1, frame - self._last_frame)
            self._last_frame = frame
            self._last = [max(_unit1(feats[m.feature]), self._last[i] * self._decay[i] ** steps)
                          for i, m in enumerate(self.maps)]
            return list(self._last)
        if self.replayed is not None:
            return list(self.replayed)
        return [0.0] * len(self.maps)

    def set_levels(self, levels: Sequence[float]) -> None:
        """Levels replayed from an automation file (held until the next change)."""
        vals = [_unit1(v) for v in levels][:len(self.maps)]
        self.replayed = vals + [0.0] * (len(self.maps) - len(vals))

    def apply(self, snapshot: dict[str, dict[str, float]], levels: Sequence[float]) -> None:
        """Move each mapped parameter of `snapshot` (in place) by amount x level of its fader travel."""
        amounts = snapshot.get(AUDIO, {})
        offsets: dict[tuple[str, str], float] = {}
        for i, (m, level) in enumerate(zip(self.maps, levels)):
            amount = amounts.get(amount_name(i), m.amount)
            if level and math.isfinite(amount * level):  # a NaN offset would stick in the parameter
                offsets[m.key] = offsets.get(m.key, 0.0) + amount * level
        for (group, name), du in offsets.items():
            table = snapshot.get(group)
            spec = self.specs.get((group, name))
            if table is None or spec is None or name not in table:
                continue
            table[name] = spec.from_unit(spec.to_unit(table[name]) + du)

    def close(self) -> None:
        if self.input is not None:
            self.input.close()


def open_show_audio(show, params, audio_file, *, echo: Callable[[str], None] = print) -> "AudioModulator | None":
    """A live show's [[audio.map]] on its input: `audio_file` (--audio) or the show's `[audio] file`
    (features in time with the frame grid: frame n hears the file's [n / fps, (n + 1) / fps)), else
    the input device. None when the show maps no audio. A device that cannot open, or a file that
    is not audio, is one line, and the show plays on."""
    s = show.settings
    if not s.audio.map:
        line = unmapped_line(show, audio_file, "live")
        if line:
            echo(line)
        return None
    fps = exact(s.fps)
    path = show.audio_file(str(audio_file) if audio_file else None)
    what = "--audio" if audio_file else f"{show.show_file}: audio.file"
    try:
        source = open_input(path, s.audio.device, fps, echo=echo, what=what)
    except UnstableError as e:
        echo(f"live: {e}; the show plays on without sound input")
        source = None
    if source is not None:
        echo(f"live: audio from {getattr(source, 'path', None) or 'the input device'} moves "
             + ", ".join(f"{m.param} ({m.feature})" for m in s.audio.map))
        if getattr(source, "nonfinite", 0):
            echo(f"live: {source.path}: {source.nonfinite} NaN or infinite samples, played as silence")
    specs = {k: params.spec(*k) for k in params.keys()}
    return AudioModulator(s.audio.map, specs, fps, source)


def unmapped_line(show, audio_file, command: str) -> str | None:
    """The warning for a sound that moves nothing: `audio_file` (--audio) or the show's own `[audio]
    file` (live only: a render still lasts as long as it and carries it) given to a show without
    `[[audio.map]]`; None when there is nothing to say."""
    if show.settings.audio.map:
        return None
    if audio_file:
        given = f"--audio {audio_file}"
    elif command == "live" and show.settings.audio.file:
        given = f"its [audio] file {show.settings.audio.file}"
    else:
        return None
    kept = " (it sets the render's length and is muxed in)" if command == "render" else ""
    return (f"{command}: {show.show_file} has no [[audio.map]], so {given} moves nothing{kept}; add one to the "
            f"show, e.g. [[audio.map]] feature = \"onset\" param = \"show.master_fade\" amount = -0.5")
