"""Automation: every parameter change of a show, on the frame clock, written as it is played and
replayed offline.

Whatever changes parameters (OSC, scene presets, the browser, audio) writes into the parameter
store; the recorder does not care which: at every frame it writes the targets that changed since
the frame before, and the scene jumps the frame handled, as one JSON line. A replay writes the
same values into the store at the same frame number, before that frame's snapshot, so smoothing,
scenes and walks follow exactly as they did live.

File (`<recording>.automation.jsonl`, JSON lines):

    {"automation": 1, "show": "demo", "fps": "30", "start_frame": 0, "state": {...}}
    {"frame": 12, "t": 0.4, "set": {"eq": {"hue": 40.0}}}
    {"frame": 90, "t": 3.0, "scenes": [2]}
    {"frame": 91, "t": 3.0333, "audio": [0.8, 0.0]}

`audio` holds the levels (0..1) of the show's [[audio.map]] entries from that frame on (written
when they change): a render replaying it moves the mapped parameters as the live sound did,
without the sound (a render given the audio file itself computes them again, identically).

The first line holds the whole state at the first frame (targets, smoothed values, scene, walk
phases), so a recording started in the middle of a show replays from where it began. Frame
numbers are the show's own: the replay renders frames start_frame, start_frame + 1, ... at the
very times the live show drew them.
"""

from __future__ import annotations

import json
import logging
import math
from fractions import Fraction
from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError

log = logging.getLogger("unstable.automation")

__all__ = ["AutomationRecorder", "Automation", "load_automation", "automation_path"]

FORMAT = 1


def automation_path(recording: str | Path) -> Path:
    """Where the automation of a recording goes: `<recording>.automation.jsonl` beside it."""
    recording = Path(recording)
    return recording.with_name(recording.name + ".automation.jsonl")


def _diff(now: Mapping[str, Mapping[str, float]], before: Mapping[str, Mapping[str, float]]) -> dict:
    out: dict[str, dict[str, float]] = {}
    for group, values in now.items():
        old = before.get(group, {})
        for name, v in values.items():
            if old.get(name) != v:
                out.setdefault(group, {})[name] = v
    return out


class AutomationRecorder:
    """Writes one show's automation while it plays (render thread only).

    A write that fails (a full disk) stops the automation with one logged line: the show goes on.
    """

    def __init__(self, path: str | Path, *, show: str, fps: Fraction, start_frame: int,
                 state: Mapping[str, Any], targets: Mapping[str, Mapping[str, float]]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w", buffering=1 << 16)
        self._last = {g: dict(v) for g, v in targets.items()}
        self._levels: list[float] | None = None
        self.lines = 0
        self.failed: str | None = None
        self._write({"automation": FORMAT, "show": show, "fps": str(fps), "start_frame": int(start_frame),
                     "state": state})

    def _write(self, obj: dict) -> None:
        if self._file is None:
            return
        try:
            self._file.write(json.dumps(obj, separators=(",", ":")) + "\n")
            self.lines += 1
        except OSError as e:
            self.failed = f"{self.path}: {e}"
            log.error("automation stopped: %s (the show goes on)", self.failed)
            self._close_quietly()

    def capture(self, frame: int, t: float, targets: Mapping[str, Mapping[str, float]],
                scenes: list[int], levels=None) -> None:
        """Record frame `frame`: the targets its snapshot read (changes only), its scene jumps and its
        audio levels (when they changed; full floats, so a replay is bit-exact)."""
        changed = _diff(targets, self._last)
        audio = None
        if levels is not None:
            now = [float(v) for v in levels]
            if now != self._levels:
                audio = self._levels = now
        if not changed and not scenes and audio is None:
            return
        for group, values in changed.items():
            self._last.setdefault(group, {}).update(values)
        line: dict[str, Any] = {"frame": int(frame), "t": t}
        if changed:
            line["set"] = changed
        if scenes:
            line["scenes"] = [int(s) for s in scenes]
        if audio is not None:
            line["audio"] = audio
        self._write(line)

    def _close_quietly(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            try:
                f.close()
            except OSError:
                pass

    def close(self, quiet: bool = False) -> str | None:
        """Flush and close the file; returns why it failed, if it did (logged unless `quiet`: the
        caller says it in its own line)."""
        if self._file is not None:
            try:
                self._file.flush()
            except OSError as e:
                self.failed = f"{self.path}: {e}"
                if not quiet:
                    log.error("automation %s", self.failed)
            self._close_quietly()
        return self.failed


class Automation:
    """A loaded automation file: the start state and the changes of each frame."""

    def __init__(self, path: Path, show: str, fps: Fraction, start_frame: int, state: dict,
                 changes: dict[int, dict], last_frame: int):
        self.path = path
        self.show = show
        self.fps = fps
        self.start_frame = start_frame
        self.state = state
        self.changes = changes     # frame -> {"set": {...}, "scenes": [...]}
        self.last_frame = last_frame

    def at(self, frame: int) -> dict | None:
        """The changes recorded at frame `frame`, or None."""
        return self.changes.get(frame)


def _number_table(value: Any, where: str, source: str) -> dict[str, dict[str, float]]:
    if not isinstance(value, dict):
        raise ConfigError(source, where, "expected a table {group: {name: value}}")
    out = {}
    for group, table in value.items():
        if not isinstance(table, dict):
            raise ConfigError(source, f"{where}.{group}", "expected a table {name: value}")
        for name, v in table.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(source, f"{where}.{group}.{name}", f"{v!r} is not a finite number")
        out[group] = {k: float(v) for k, v in table.items()}
    return out


def load_automation(path: str | Path) -> Automation:
    """Read and check an automation file; a bad line is one ConfigError naming the file and line."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(source, "", f"cannot read it ({e.strerror or e})") from None
    lines = text.splitlines()
    if not lines:
        raise ConfigError(source, "line 1", "empty file, expected an automation header")
    try:
        head = json.loads(lines[0])
    except json.JSONDecodeError as e:
        raise ConfigError(source, "line 1", f"not JSON ({e.msg})") from None
    if not isinstance(head, dict) or head.get("automation") != FORMAT:
        raise ConfigError(source, "line 1", f"not an automation file of format {FORMAT} "
                          "(written by `unstable live --record` or `--automation`)")
    try:
        fps = Fraction(str(head["fps"]))
        start = int(head["start_frame"])
        state = head["state"]
        if fps <= 0 or start < 0 or not isinstance(state, dict):
            raise ValueError
    except (KeyError, ValueError, TypeError, ZeroDivisionError):
        raise ConfigError(source, "line 1", "header needs fps > 0, start_frame >= 0 and a state table") from None
    changes: dict[int, dict] = {}
    last = start
    for i, raw in enumerate(lines[1:], start=2):
        if not raw.strip():
            continue
        where = f"line {i}"
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ConfigError(source, where, f"not JSON ({e.msg}); a recording cut short loses at most "
                              "its last line: delete it") from None
        if not isinstance(obj, dict) or isinstance(obj.get("frame"), bool) or not isinstance(obj.get("frame"), int):
            raise ConfigError(source, where, "expected {\"frame\": N, ...}")
        frame = obj["frame"]
        if frame < last:
            raise ConfigError(source, f"{where}.frame", f"{frame} goes back in time (after frame {last})")
        entry: dict[str, Any] = {}
        if "set" in obj:
            entry["set"] = _number_table(obj["set"], f"{where}.set", source)
        if "scenes" in obj:
            scenes = obj["scenes"]
            if not isinstance(scenes, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in scenes):
                raise ConfigError(source, f"{where}.scenes", "expected a list of scene numbers")
            entry["scenes"] = scenes
        if "audio" in obj:
            levels = obj["audio"]
            if not isinstance(levels, list) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in levels):
                raise ConfigError(source, f"{where}.audio", "expected a list of finite numbers (audio levels)")
            entry["audio"] = [min(max(float(v), 0.0), 1.0) for v in levels]
        merged = changes.setdefault(frame, {})
        for k, v in entry.items():
            if k == "set":
                for g, t in v.items():
                    merged.setdefault("set", {}).setdefault(g, {}).update(t)
            elif k == "audio":
                merged["audio"] = v
            else:
                merged.setdefault(k, []).extend(v)
        last = frame
    return Automation(path, str(head.get("show", "")), fps, start, state, changes, last)
