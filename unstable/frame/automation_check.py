"""Checks of an automation file, field by field: every value a replay will use is checked before the
render opens anything, and a bad one is one ConfigError naming the file, the line and the key
(`line 1.state.walk.eq.phase`). Lines are read one at a time from the bytes, never the whole file,
each at most MAX_LINE bytes (the header MAX_HEADER), and decoded as UTF-8 on their own.
"""

from __future__ import annotations

import json
import math
from typing import Any, BinaryIO

from ..errors import ConfigError

__all__ = ["MAX_LINE", "MAX_HEADER", "read_line", "parse_line", "check_state", "number", "entry_of"]

# A frame's line holds the changes of one frame (a few hundred bytes; a scene preset moving every
# parameter a few KiB); the header holds the whole state (every parameter twice).
MAX_LINE = 1 << 20
MAX_HEADER = 16 << 20


def read_line(f: BinaryIO, source: str, number: int, limit: int = MAX_LINE) -> str | None:
    """Line `number` of `f` as text (None at the end of the file), read without ever holding more
    than `limit` bytes of it."""
    raw = f.readline(limit + 1)
    if not raw:
        return None
    if len(raw) > limit and not raw.endswith(b"\n"):
        raise ConfigError(source, f"line {number}", f"longer than {limit} bytes: not an automation line "
                          "(a wrong or damaged file)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(source, f"line {number}", f"not UTF-8 text (byte 0x{raw[e.start]:02x} at column "
                          f"{e.start + 1}): not an automation file, or a damaged one") from None


def parse_line(text: str, source: str, where: str, hint: str = "") -> Any:
    """The JSON value of one line; a ConfigError for anything json refuses (numbers too long too)."""
    try:
        return json.loads(text)
    except ValueError as e:  # JSONDecodeError, and ints past Python's digit limit
        why = e.msg if isinstance(e, json.JSONDecodeError) else str(e).split(";")[0]
        raise ConfigError(source, where, f"not JSON ({why}){hint}") from None


def number(v: Any, source: str, where: str, *, lo: float | None = None, integer: bool = False) -> float:
    """`v` as a finite float (an int when `integer`), or one ConfigError naming `where`."""
    what = "an integer" if integer else "a finite number"
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
        raise ConfigError(source, where, f"{_short(v)} is not {what}")
    try:
        f = float(v)
    except OverflowError:  # a 400-digit integer
        raise ConfigError(source, where, f"{_short(v)} is too large a number") from None
    if not math.isfinite(f):
        raise ConfigError(source, where, f"{_short(v)} is not {what}")
    if lo is not None and f < lo:
        raise ConfigError(source, where, f"{_short(v)} is below {lo:g}")
    return f


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _table(v: Any, source: str, where: str, what: str) -> dict:
    if not isinstance(v, dict):
        raise ConfigError(source, where, f"{_short(v)} is not a table, expected {what}")
    return v


def check_state(state: Any, source: str, where: str = "line 1.state") -> dict:
    """The header's state as `ShowTimeline.resume_state()` writes it ({store, scene, walk}), each field
    checked; returns it with every number a plain float (an int where one is expected)."""
    state = _table(state, source, where, "{store, scene, walk}")
    out: dict[str, Any] = {}
    store = _table(state.get("store", {}), source, f"{where}.store", "{last_now, target, current}")
    checked: dict[str, Any] = {}
    last = store.get("last_now")
    checked["last_now"] = None if last is None else number(last, source, f"{where}.store.last_now")
    for key in ("target", "current"):
        values = _table(store.get(key, {}), source, f"{where}.store.{key}", "{piece/name: value}")
        checked[key] = {str(k): number(v, source, f"{where}.store.{key}.{k}") for k, v in values.items()}
    out["store"] = checked
    scene = _table(state.get("scene", {}), source, f"{where}.scene", "{current, previous, started, fade_len}")
    s: dict[str, Any] = {}
    if "current" in scene:
        s["current"] = int(number(scene["current"], source, f"{where}.scene.current", lo=0, integer=True))
        prev = scene.get("previous")
        s["previous"] = None if prev is None else int(number(prev, source, f"{where}.scene.previous", lo=0,
                                                             integer=True))
        s["started"] = number(scene.get("started", 0.0), source, f"{where}.scene.started")
        s["fade_len"] = number(scene.get("fade_len", 0.0), source, f"{where}.scene.fade_len", lo=0)
        s["started_beat"] = number(scene.get("started_beat", 0.0), source, f"{where}.scene.started_beat")
    out["scene"] = s
    beat = _table(state.get("beat", {}), source, f"{where}.beat", "{beat, bpm, t}")
    if "beat" in beat:  # the beat clock (unstable.tempo.BeatClock); files before it have none
        out["beat"] = {"beat": number(beat["beat"], source, f"{where}.beat.beat"),
                       "bpm": number(beat.get("bpm", 120.0), source, f"{where}.beat.bpm", lo=1e-3),
                       "t": None if beat.get("t") is None else number(beat["t"], source, f"{where}.beat.t"),
                       "offset": number(beat.get("offset", 0.0), source, f"{where}.beat.offset")}
    walks = _table(state.get("walk", {}), source, f"{where}.walk", "{piece: {phase, speed, at}}")
    out["walk"] = {}
    for name, w in walks.items():
        w = _table(w, source, f"{where}.walk.{name}", "{phase, speed, at}")
        clock = {}
        for key in ("phase", "speed", "at"):
            if key not in w:
                raise ConfigError(source, f"{where}.walk.{name}.{key}", "missing")
            clock[key] = number(w[key], source, f"{where}.walk.{name}.{key}")
        out["walk"][str(name)] = clock
    return out


def entry_of(obj: Any, source: str, where: str) -> tuple[int, dict]:
    """(frame, its changes {set, scenes, audio}) of one parsed line, every field checked."""
    if not isinstance(obj, dict) or isinstance(obj.get("frame"), bool) or not isinstance(obj.get("frame"), int):
        raise ConfigError(source, where, "expected {\"frame\": N, ...}")
    frame = int(number(obj["frame"], source, f"{where}.frame", lo=0, integer=True))
    entry: dict[str, Any] = {}
    if "set" in obj:
        groups = _table(obj["set"], source, f"{where}.set", "{group: {name: value}}")
        entry["set"] = {}
        for group, table in groups.items():
            table = _table(table, source, f"{where}.set.{group}", "{name: value}")
            entry["set"][group] = {k: number(v, source, f"{where}.set.{group}.{k}") for k, v in table.items()}
    if "scenes" in obj:
        scenes = obj["scenes"]
        if not isinstance(scenes, list):
            raise ConfigError(source, f"{where}.scenes", "expected a list of scene numbers")
        entry["scenes"] = [int(number(s, source, f"{where}.scenes", lo=0, integer=True)) for s in scenes]
    if "audio" in obj:
        levels = obj["audio"]
        if not isinstance(levels, list):
            raise ConfigError(source, f"{where}.audio", "expected a list of finite numbers (audio levels)")
        entry["audio"] = [min(max(number(v, source, f"{where}.audio"), 0.0), 1.0) for v in levels]
    return frame, entry
