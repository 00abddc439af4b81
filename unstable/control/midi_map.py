"""MIDI mappings: `[[midi.map]]` entries (and learned ones) from notes and CCs onto the parameter
store: parameters (0..1 of their range, 7- or 14-bit), scenes, actions and presets.

The mapper is pure: `MidiMapper.handle(msg, origin)` writes into the store, `feedback(keys)` says
which messages bring a controller's LEDs to the store's values. The port layer (midi.py) and the
file player (render/midi_file.py) both go through it, so a file plays exactly what a controller would.

Soft takeover: a knob moves its parameter only once it reaches the parameter's value (crossing
it, or within a step of it): after a scene or another controller moved the value, the first turn
of a knob does not make it jump. A 14-bit CC is its MSB (cc) then its LSB (cc + 32): the value
lands when the LSB arrives, as controllers send the pair in that order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from ..config import setting
from ..errors import ConfigError
from ..schema import CLOCK, PIECE_ACTIONS, SHOW, ParamSpec
from .store import ParameterStore

__all__ = ["MidiMap", "MidiSettings", "MidiMapper", "check_maps", "learn_specs", "SHOW_ACTIONS"]

SHOW_ACTIONS = ("still", "record", "tap")


@dataclass(frozen=True)
class MidiMap:
    """`[[midi.map]]`: one note or CC onto a parameter, a scene or an action."""

    cc: int = setting(-1, ge=-1, le=127, doc="the controller number (0..127; -1: a note instead)")
    note: int = setting(-1, ge=-1, le=127, doc="the note number (0..127; -1: a CC instead)")
    channel: int = setting(0, ge=0, le=16, doc="MIDI channel 1..16 (0: any)")
    param: str = setting("", doc="'piece.param' or 'show.name' this moves (0..127 over its range)")
    scene: int = setting(-1, ge=-1, doc="the scene a note (or a CC past 63) starts")
    action: str = setting("", doc="'still', 'record' (toggles), 'tap', or 'piece.directions/refresh' ...")
    preset: str = setting("", doc="the preset a note (or a CC past 63) recalls, or morphs to over `morph`")
    morph: float = setting(0.0, ge=0.0, le=3600.0, doc="a preset's morph length in `unit`s (0: at once)")
    unit: str = setting("s", doc="the morph's unit: 's', 'beats' or 'bars'")
    bits: int = setting(7, ge=7, le=14, doc="7, or 14: the CC is the MSB and cc + 32 the LSB")
    mode: str = setting("", doc="a note on a parameter: 'toggle' (each press flips it) or 'momentary' "
                        "(top of the range while held); default toggle")
    takeover: bool = setting(True, doc="soft takeover: the knob moves a continuous parameter once it reaches "
                             "its value (switches and counts follow at once)")

    def __post_init__(self):
        if (self.cc < 0) == (self.note < 0):
            raise ValueError("give one of cc or note")
        if sum([bool(self.param), self.scene >= 0, bool(self.action), bool(self.preset)]) != 1:
            raise ValueError("give one of param, scene, action or preset")
        if self.preset:
            from .presets import UNITS, PresetError, check_preset_name
            try:
                check_preset_name(self.preset)
            except PresetError as e:
                raise ValueError(f"preset: {e}") from None
            if self.unit not in UNITS:
                raise ValueError(f"unit: {self.unit!r}, expected one of {', '.join(UNITS)}")
        if self.bits not in (7, 14):
            raise ValueError(f"bits: {self.bits}, expected 7 or 14")
        if self.bits == 14 and not 0 <= self.cc <= 31:
            raise ValueError(f"bits: a 14-bit CC is 0..31 (its LSB is cc + 32), got cc {self.cc}")
        if self.mode not in ("", "toggle", "momentary"):
            raise ValueError(f"mode: {self.mode!r}, expected 'toggle' or 'momentary'")
        if self.param and self.param.count(".") != 1:
            raise ValueError(f"param: {self.param!r}, expected 'piece.param', e.g. 'eq.hue'")

    @property
    def key(self) -> tuple[str, str]:
        """(group, name) of the parameter."""
        group, _, name = self.param.partition(".")
        return group, name

    def source(self) -> str:
        """What a controller sends, in words (log lines, the page's list)."""
        ch = f"ch{self.channel} " if self.channel else ""
        return f"{ch}cc{self.cc}" + ("/14-bit" if self.bits == 14 else "") if self.cc >= 0 else f"{ch}note{self.note}"

    def target(self) -> str:
        """What it moves, in words."""
        if self.preset:
            return f"preset {self.preset}"
        return self.param or (f"scene {self.scene}" if self.scene >= 0 else self.action)


@dataclass(frozen=True)
class MidiSettings:
    """`[midi]`: a MIDI controller and what its notes and knobs move."""

    port: str = setting("", doc="the input port (a part of its name, e.g. 'nanoKONTROL'); '' none (also --midi)")
    feedback: bool = setting(True, doc="send changed values back to the controller's output port of the same "
                             "name (LED rings, motor faders)")
    api: str = setting("", doc="rtmidi's MIDI system: '' its own choice (ALSA on Linux), 'jack', 'alsa', "
                       "'coremidi', 'winmm'")
    map: tuple[MidiMap, ...] = setting((), doc="the mappings ([[midi.map]]); learned ones are added from the run folder")

    def __post_init__(self):
        if self.api not in ("", "alsa", "jack", "coremidi", "winmm"):
            raise ValueError(f"api: {self.api!r}, expected '', 'jack', 'alsa', 'coremidi' or 'winmm'")


def learn_specs(count: int) -> list[ParamSpec]:
    """The show group's `midi_learn` (a show with a MIDI port has it) in a show of `count`
    parameters, itself included: 0 off, 1 armed (the next control a controller moves is the
    target), 2 + k: the target is the show's k-th parameter (the page sends it when a control is
    clicked). The next note or CC that arrives is then bound to the target."""
    return [ParamSpec("midi_learn", 0, count + 1, 0, kind="int", doc="MIDI learn: click a control, move a knob",
                      reads=CLOCK)]


def check_maps(maps: Iterable[MidiMap], groups, source: str, key: str = "midi.map") -> None:
    """Every map names a live parameter, scene or action of the show: one ConfigError otherwise."""
    groups = {g: {s.name: s for s in specs} for g, specs in dict(groups).items()}
    scenes = int(groups[SHOW]["scene"].hi) + 1 if "scene" in groups.get(SHOW, {}) else 1
    for i, m in enumerate(maps):
        where = f"{key}[{i}]"
        if m.param:
            g, n = m.key
            if g not in groups:
                raise ConfigError(source, f"{where}.param", f"{m.param!r}: no piece {g!r} in the show, expected "
                                  f"one of {', '.join(repr(x) for x in groups)}")
            if n not in groups[g]:
                raise ConfigError(source, f"{where}.param", f"{m.param!r}: not a live parameter of {g!r}, expected "
                                  f"one of {', '.join(sorted(groups[g]))}")
        elif m.scene >= 0 and m.scene >= scenes:
            raise ConfigError(source, f"{where}.scene", f"{m.scene}: the show has {scenes} scene(s), 0..{scenes - 1}")
        elif m.action:
            piece, _, what = m.action.partition(".")
            ok = m.action in SHOW_ACTIONS or (piece in groups and piece != SHOW and what in PIECE_ACTIONS)
            if not ok:
                raise ConfigError(source, f"{where}.action", f"{m.action!r}, expected one of "
                                  f"{', '.join(SHOW_ACTIONS)} or 'piece.{PIECE_ACTIONS[0]}'")


class MidiMapper:
    """Notes and CCs into the store through `maps`; the controller's LEDs out of it.

    `handle` runs in the thread that received the message (the port's, or a file player's); its
    work is a dict lookup and a store write.
    """

    def __init__(self, store: ParameterStore, maps: Iterable[MidiMap] = ()):
        self.store = store
        self.maps: list[MidiMap] = []
        self._by_cc: dict[int, list[MidiMap]] = {}
        self._by_note: dict[int, list[MidiMap]] = {}
        self._msb: dict[tuple[int, int], int] = {}       # (channel, cc) -> the last MSB of a 14-bit CC
        self._knob: dict[MidiMap, float] = {}            # the last 0..1 position of each absolute map
        self._engaged: set[MidiMap] = set()              # maps whose knob has reached their parameter
        self.handled = 0
        for m in maps:
            self.add(m)

    def add(self, m: MidiMap) -> None:
        """Map `m` too (a learned binding); an earlier map of the same note or CC is replaced."""
        self.maps = [x for x in self.maps if (x.cc, x.note, x.channel) != (m.cc, m.note, m.channel)] + [m]
        self._by_cc, self._by_note = {}, {}
        for x in self.maps:
            if x.cc >= 0:
                self._by_cc.setdefault(x.cc, []).append(x)
                if x.bits == 14:
                    self._by_cc.setdefault(x.cc + 32, []).append(x)
            else:
                self._by_note.setdefault(x.note, []).append(x)

    def disengage(self, keys) -> None:
        """Parameters that moved by other hands: their knobs must reach them again (soft takeover)."""
        keys = set(keys)
        self._engaged = {m for m in self._engaged if not (m.param and m.key in keys)}

    # -- in -------------------------------------------------------------------------------------

    def handle(self, msg, origin) -> int:
        """Apply one mido message; returns how many maps it moved."""
        t = msg.type
        if t == "control_change":
            cands, value = self._by_cc.get(msg.control, ()), msg.value
        elif t in ("note_on", "note_off"):
            cands, value = self._by_note.get(msg.note, ()), msg.velocity if t == "note_on" else 0
        else:
            return 0
        moved = 0
        for m in cands:
            if m.channel and m.channel - 1 != msg.channel:
                continue
            if m.cc >= 0 and m.bits == 14:
                if msg.control == m.cc:   # the MSB: held until its LSB comes
                    self._msb[(msg.channel, m.cc)] = value
                    continue
                u = (self._msb.get((msg.channel, m.cc), 0) * 128 + value) / 16383.0
            else:
                u = value / 127.0
            moved += self._apply(m, u, pressed=value > 0 if m.note >= 0 else value >= 64, origin=origin)
        self.handled += moved
        return moved

    def _apply(self, m: MidiMap, u: float, pressed: bool, origin) -> int:
        s = self.store
        if m.scene >= 0:
            if pressed:
                s.set(SHOW, "scene", m.scene, origin)
            return int(pressed)
        if m.preset:
            if pressed:  # the engine's preset bank carries it out between frames, as OSC's does
                what = "morph" if m.morph > 0 else "recall"
                s.post_event(f"preset/{what}", m.morph if m.morph > 0 else None, origin, name=m.preset,
                             unit=m.unit, curve="smooth")
            return int(pressed)
        if m.action:
            if not pressed:
                return 0
            piece, _, what = m.action.partition(".")
            if m.action == "still":
                s.post_event("still", None, origin)
            elif m.action == "record":
                s.set(SHOW, "record", 1.0 - s.get(SHOW, "record"), origin)
            elif m.action == "tap":
                s.set(SHOW, "tap", 1, origin)
            else:
                s.post_event(what, None, origin, group=piece)
            return 1
        group, name = m.key
        if m.note >= 0:
            if m.mode == "momentary":
                s.set_unit(group, name, 1.0 if pressed else 0.0, origin)
                return 1
            if pressed:
                s.set_unit(group, name, 0.0 if s.get_unit(group, name) >= 0.5 else 1.0, origin)
            return int(pressed)
        # Only a continuous value waits for its knob: a CC button on a switch or a count acts at once.
        if m.takeover and m not in self._engaged and s.spec(group, name).kind == "float":
            cur = s.get_unit(group, name)
            last = self._knob.get(m)
            step = 1.0 / (16383.0 if m.bits == 14 else 127.0)
            crossed = last is not None and (last - cur) * (u - cur) <= 0
            self._knob[m] = u
            if not (crossed or abs(u - cur) <= step):
                return 0
            self._engaged.add(m)
        self._knob[m] = u
        s.set_unit(group, name, u, origin)
        return 1

    # -- out ------------------------------------------------------------------------------------

    def feedback(self, keys) -> list:
        """The mido messages that show the store's values of `keys` on the controller's LEDs."""
        import mido
        keys = set(keys)
        out = []
        scene = self.store.get(SHOW, "scene") if (SHOW, "scene") in self.store else None
        for m in self.maps:
            ch = max(m.channel - 1, 0)
            if m.param and m.key in keys:
                u = self.store.get_unit(*m.key)
                if m.cc >= 0 and m.bits == 14:
                    v = int(round(u * 16383))
                    out += [mido.Message("control_change", channel=ch, control=m.cc, value=v >> 7),
                            mido.Message("control_change", channel=ch, control=m.cc + 32, value=v & 127)]
                elif m.cc >= 0:
                    out.append(mido.Message("control_change", channel=ch, control=m.cc, value=int(round(u * 127))))
                else:
                    out.append(mido.Message("note_on", channel=ch, note=m.note, velocity=127 if u >= 0.5 else 0))
            elif m.scene >= 0 and (SHOW, "scene") in keys and scene is not None and math.isfinite(scene):
                on = int(scene) == m.scene
                if m.cc >= 0:
                    out.append(mido.Message("control_change", channel=ch, control=m.cc, value=127 if on else 0))
                else:
                    out.append(mido.Message("note_on", channel=ch, note=m.note, velocity=127 if on else 0))
        return out
