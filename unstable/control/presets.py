"""Presets: the live state saved under a name, recalled at once or morphed to over time or beats.

    bank = PresetBank(store, run_dir / "presets")
    bank.save("dawn")                    # every parameter's target, as JSON in the run folder
    bank.recall("dawn")                  # the targets at once (each glides by its own smoothing)
    bank.morph("dawn", 8.0, "s", "smooth")   # along a curve over 8 s of the frame clock (or "beats")

A morph writes the targets of the store just before each snapshot, on the frame clock (the store
calls `bank.before_snapshot(now)`): dropped live slots get their own values, the automation records
every frame's targets, and a render of that automation replays the morph frame for frame without
the preset file. Each parameter moves in its own units: log-scaled ones (rates) geometrically,
a hue (a 360-degree range in degrees) the short way round the wheel, integers rounded, and
toggles switch at the midpoint. The show's `scene` and `record` are not part of a preset (a scene
is a jump of its own, and recording must not start or stop because a look was recalled).

Names are file names in the run folder: letters, digits, `_`, `-`, `.` and spaces, 64 at most,
not starting with a dot. Anything else (`../x`, an empty name, a long one) is refused with one
line naming it and where it came from; the show plays on. A preset file is read on the frame's
thread, so one that is not a plain file (a FIFO would block it) or over MAX_FILE_BYTES is refused
unread; values that are not finite numbers, or name parameters the show does not have (a preset
of an older piece), are left out with one line naming them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..schema import SHOW, ParamSpec
from .store import ParameterStore

log = logging.getLogger("unstable.presets")

__all__ = ["PresetBank", "PresetError", "check_preset_name", "interpolate", "CURVES", "UNITS"]

MAX_NAME = 64
MAX_FILE_BYTES = 1 << 20  # a preset of every parameter of a big show is a few KiB
_NAME = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_\-. ]*$")
NOT_SAVED = frozenset({(SHOW, "scene"), (SHOW, "record")})
# Fractions of the morph's time -> fractions of the way (each 0 -> 0, 0.5 -> 0.5, 1 -> 1).
CURVES: dict[str, Callable[[float], float]] = {
    "linear": lambda p: p,
    "smooth": lambda p: p * p * (3.0 - 2.0 * p),
    "ease": lambda p: 0.5 - 0.5 * math.cos(math.pi * p),
}
UNITS = ("s", "beats", "bars")
DEFAULT_BPM = 120.0  # beats when the show has no `tempo` parameter


class PresetError(ValueError):
    """A preset request that cannot be carried out (bad name, no such preset, bad duration)."""


def check_preset_name(name) -> str:
    """`name` if it can name a preset file in the run folder; PresetError saying why not."""
    if not isinstance(name, str):
        raise PresetError(f"a preset name is text, got {type(name).__name__}")
    if not name.strip():
        raise PresetError("a preset name cannot be empty")
    if len(name) > MAX_NAME:
        raise PresetError(f"preset name {name[:20]!r}... is {len(name)} characters, at most {MAX_NAME}")
    if not _NAME.match(name) or name.strip() != name:
        raise PresetError(f"preset name {name!r}: letters, digits, '_', '-', '.' and inner spaces only "
                          "(no '/', no leading dot)")
    return name


def is_hue(spec: ParamSpec) -> bool:
    """A parameter on the colour wheel: degrees over a full turn, morphed the short way round."""
    return spec.unit == "deg" and abs((spec.hi - spec.lo) - 360.0) < 1e-9


def interpolate(spec: ParamSpec, a: float, b: float, w: float) -> float:
    """The value `w` (0..1) of the way from `a` to `b` in `spec`'s own units."""
    if spec.kind == "toggle":
        return b if w >= 0.5 else a
    if spec.log and a > 0 and b > 0:
        v = math.exp(math.log(a) + (math.log(b) - math.log(a)) * w)
    elif is_hue(spec):
        d = (b - a + 180.0) % 360.0 - 180.0  # the short way round, in -180..180
        v = a + d * w
        v = (v - spec.lo) % 360.0 + spec.lo  # back onto the wheel's range
    else:
        v = a + (b - a) * w
    return spec.clamp(v)


@dataclass
class _Morph:
    name: str
    start: dict[tuple[str, str], float]
    end: dict[tuple[str, str], float]
    seconds: float
    curve: Callable[[float], float]
    t0: float | None = None  # the frame time it began (set at the first snapshot after the request)


class PresetBank:
    """The presets of one show in `folder` (the run folder's presets/), over its parameter store."""

    def __init__(self, store: ParameterStore, folder: str | os.PathLike):
        self.store = store
        self.folder = Path(folder)
        self._lock = threading.Lock()
        self._morph: _Morph | None = None
        self.morphs = 0  # morphs finished
        store.add_snapshot_hook(self.before_snapshot)

    # -- files ----------------------------------------------------------------------------------

    def path(self, name: str) -> Path:
        """The file of preset `name` (checked)."""
        return self.folder / f"{check_preset_name(name)}.json"

    def names(self) -> list[str]:
        """The saved presets, sorted."""
        if not self.folder.is_dir():
            return []
        out = []
        for p in self.folder.glob("*.json"):
            try:
                out.append(check_preset_name(p.stem))
            except PresetError:
                continue  # a file someone put there by hand: not ours to list
        return sorted(out)

    def save(self, name: str, state: dict | None = None) -> Path:
        """Save every parameter's target (not scene or record) as preset `name` (or those of `state`,
        {group: {name: value}}); returns its file."""
        path = self.path(name)
        state = self.store.targets() if state is None else state
        values = {g: {k: v for k, v in vals.items() if (g, k) not in NOT_SAVED} for g, vals in state.items()}
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w") as f:
            json.dump({"preset": name, "values": values}, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # a crash mid-write leaves the old preset, never half of one
        return path

    def load(self, name: str) -> dict[str, dict[str, float]]:
        """{group: {param: value}} of preset `name`."""
        path = self.path(name)
        try:
            st = path.stat()
            if not stat.S_ISREG(st.st_mode):
                raise PresetError(f"{path}: not a plain file, not read")
            if st.st_size > MAX_FILE_BYTES:
                raise PresetError(f"{path}: {st.st_size} bytes, a preset file is at most {MAX_FILE_BYTES}; not read")
            with open(path, "rb") as f:
                raw = f.read(MAX_FILE_BYTES + 1)  # a file growing while it is read stops here too
            if len(raw) > MAX_FILE_BYTES:
                raise PresetError(f"{path}: over {MAX_FILE_BYTES} bytes; not read")
            data = json.loads(raw)
        except FileNotFoundError:
            known = ", ".join(self.names()) or "none saved yet"
            raise PresetError(f"no preset {name!r} in {self.folder} (known: {known})") from None
        except (OSError, ValueError) as e:  # a truncated or garbled file: JSON's own words say where
            raise PresetError(f"{path}: not a preset file ({type(e).__name__}: {e})") from None
        values = data.get("values") if isinstance(data, dict) else None
        if not isinstance(values, dict) or not all(isinstance(v, dict) for v in values.values()):
            raise PresetError(f"{path}: expected {{\"values\": {{group: {{name: number}}}}}}")
        return values

    # -- recall and morph -----------------------------------------------------------------------

    def recall(self, name: str) -> int:
        """Set the targets of preset `name` at once (any morph stops); returns how many changed."""
        values = self._known(name, self.load(name))
        with self._lock:
            self._morph = None
        return self.store.update(values)

    def _known(self, name: str, values: dict) -> dict[str, dict[str, float]]:
        """The preset's values the store has (a preset of an older piece may name others), finite
        numbers only; what is left out is said in one line."""
        out: dict[str, dict[str, float]] = {}
        unknown, bad = [], []
        for g, vals in values.items():
            for k, v in vals.items():
                if (g, k) in NOT_SAVED:
                    continue
                if (g, k) not in self.store:
                    unknown.append(f"{g}.{k}")
                elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    bad.append(f"{g}.{k} = {str(v)[:20]}")
                else:
                    out.setdefault(g, {})[k] = float(v)
        if unknown or bad:
            parts = ([f"not in this show: {', '.join(unknown[:8])}" + (" ..." if len(unknown) > 8 else "")]
                     if unknown else []) + \
                    ([f"not finite numbers: {', '.join(bad[:8])}" + (" ..." if len(bad) > 8 else "")] if bad else [])
            log.warning("preset %r (%s): left out %s", name, self.path(name), "; ".join(parts))
        return out

    def seconds(self, amount: float, unit: str) -> float:
        """`amount` of `unit` ("s", "beats", "bars" of 4 beats) in seconds at the show's tempo now."""
        if unit not in UNITS:
            raise PresetError(f"morph length unit {unit!r}: expected one of {', '.join(UNITS)}")
        if not isinstance(amount, (int, float)) or not math.isfinite(amount) or amount < 0:
            raise PresetError(f"morph length {amount!r}: expected a finite number >= 0")
        if unit == "s":
            return float(amount)
        bpm = self.store.get(SHOW, "tempo") if (SHOW, "tempo") in self.store else DEFAULT_BPM
        return float(amount) * (4 if unit == "bars" else 1) * 60.0 / bpm

    def morph(self, name: str, amount: float, unit: str = "s", curve: str = "smooth") -> float:
        """Move to preset `name` over `amount` seconds (or beats, bars) along `curve`, starting at the
        next frame; returns its length in seconds. 0 is a recall."""
        if curve not in CURVES:
            raise PresetError(f"morph curve {curve!r}: expected one of {', '.join(CURVES)}")
        seconds = self.seconds(amount, unit)
        if seconds <= 0:
            self.recall(name)
            return 0.0
        values = self._known(name, self.load(name))
        end = {(g, k): v for g, vals in values.items() for k, v in vals.items()}
        start = {key: self.store.get(*key) for key in end}
        with self._lock:
            self._morph = _Morph(name, start, end, seconds, CURVES[curve])
        return seconds

    @property
    def morphing(self) -> str | None:
        """The preset being morphed to, or None."""
        m = self._morph
        return m.name if m is not None else None

    def before_snapshot(self, now: float) -> None:
        """The store's hook before each frame's snapshot: write the morph's targets at `now`."""
        with self._lock:
            m = self._morph
            if m is None:
                return
            if m.t0 is None or now < m.t0:  # a clock that goes back (a test's jump) starts it again
                m.t0 = now
            p = min(1.0, (now - m.t0) / m.seconds)
            if p >= 1.0:
                self._morph = None
                self.morphs += 1
        w = m.curve(p)
        values: dict[str, dict[str, float]] = {}
        for (g, k), b in m.end.items():
            values.setdefault(g, {})[k] = interpolate(self.store.spec(g, k), m.start[(g, k)], b, w)
        self.store.update(values)

    # -- events ---------------------------------------------------------------------------------

    def act(self, ev) -> None:
        """Carry out a preset Event (`preset/save`, `preset/recall`, `preset/morph`; from OSC, the
        page or MIDI through the store) between frames. A bad request is one logged line naming
        the preset and its sender; the show plays on. A save writes its file on a thread of its
        own (a disk may stall; a frame must not)."""
        what = ev.kind.partition("/")[2]
        sender = f" from {ev.origin[0]}:{ev.origin[1]}" if ev.origin else ""
        try:
            if what == "save":
                check_preset_name(ev.name)
                state = self.store.targets()  # this frame's values, whenever the file is written
                threading.Thread(target=self._save_quietly, args=(ev.name, state, sender),
                                 name="unstable-preset-save", daemon=True).start()
            elif what == "recall":
                self.recall(ev.name)
                log.info("preset %r recalled%s", ev.name, sender)
            elif what == "morph":
                secs = self.morph(ev.name, ev.value if ev.value is not None else 0.0, ev.unit, ev.curve)
                log.info("morphing to preset %r over %.3g s%s", ev.name, secs, sender)
            else:
                raise PresetError(f"unknown preset action {ev.kind!r}")
        except PresetError as e:
            log.warning("preset %s%s refused: %s; the show plays on", what, sender, e)

    def _save_quietly(self, name: str, state: dict, sender: str) -> None:
        try:
            self.save(name, state)
            log.info("preset %r saved%s", name, sender)
        except (OSError, PresetError) as e:
            log.warning("preset save %r%s failed: %s; the show plays on", name, sender, e)

    def close(self) -> None:
        """Stop writing morphs into the store."""
        self.store.remove_snapshot_hook(self.before_snapshot)
