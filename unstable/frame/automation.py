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
from fractions import Fraction
from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError
from ..formats import exact

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

    # Bounded like every growing file of a show: a file stops (one logged line, the show goes on)
    # at `max_bytes` (a show's [disk] automation_max_mb; MAX_BYTES by default, about two days of a
    # show moving four audio maps every frame), or when its disk has less than MIN_FREE left
    # (checked every CHECK_EVERY lines). Stopped, not rotated: a continuation file would need the
    # state at the start of the frame whose line does not fit, which that frame has already moved
    # on from, and the files of a rotation either all stay (then the cap bounds nothing the floor
    # does not) or the oldest go (then the start of the performance, still in its video, is lost).
    MAX_BYTES = 512 << 20
    MIN_FREE = 64 << 20
    CHECK_EVERY = 256

    def __init__(self, path: str | Path, *, show: str, fps: Fraction, start_frame: int,
                 state: Mapping[str, Any], targets: Mapping[str, Mapping[str, float]],
                 max_bytes: int | None = None, min_free: int | None = None, free=None):
        from ..disk import free_bytes
        self.max_bytes = self.MAX_BYTES if max_bytes is None else int(max_bytes)
        self.min_free = self.MIN_FREE if min_free is None else int(min_free)
        self._free = free or free_bytes
        self.bytes = 0
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
        line = json.dumps(obj, separators=(",", ":")) + "\n"
        if self.lines and self.max_bytes and self.bytes + len(line) > self.max_bytes:
            return self._stop(f"{self.path}: reached its cap of {round(self.max_bytes / (1 << 20), 3):g} MB")
        if self.lines and self.lines % self.CHECK_EVERY == 0 and self.min_free:
            try:
                free = self._free(self.path.parent)
            except OSError:
                free = None
            if free is not None and free < self.min_free:
                return self._stop(f"{self.path}: {free / (1 << 20):.2f} MB left on its disk, below the "
                                  f"{self.min_free / (1 << 20):g} MB floor")
        try:
            self._file.write(line)
            self.lines += 1
            self.bytes += len(line)
        except OSError as e:
            self._stop(f"{self.path}: {e}")

    def _stop(self, why: str) -> None:
        self.failed = why
        log.error("automation stopped: %s (the show goes on; the file replays up to here)", why)
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
    """A checked automation file: its header, and the changes of each frame read from the file as a
    replay asks for them (frames in order: one pass; a jump back seeks from a sparse index), so a
    replay holds a few lines of it, whatever its size."""

    INDEX_EVERY = 4096  # lines between two index entries (frame, byte offset, line number)

    def __init__(self, path: Path, show: str, fps: Fraction, start_frame: int, state: dict,
                 last_frame: int, index: list[tuple[int, int, int]]):
        self.path = path
        self.show = show
        self.fps = fps
        self.start_frame = start_frame
        self.state = state
        self.last_frame = last_frame
        self._index = index          # [(frame, offset of its first line, that line's number)], frames ascending
        self._file = None
        self._next: tuple[int, dict] | None = None  # the line read ahead (the first of a later frame)
        self._line = 0               # the number of the line read last (for messages)
        self._at = -1                # the frame the last `at()` answered

    def _seek(self, frame: int) -> None:
        if self._file is None:
            self._file = open(self.path, "rb")  # noqa: SIM115 - kept open across calls, closed by close()
        # The last entry before `frame` (the first if none is): its offset and its line number, so a
        # line that turns out bad during the replay is named as in the file.
        entry = max((e for e in self._index if e[0] < frame), default=self._index[0] if self._index else None,
                    key=lambda e: e[1])
        if entry is None:
            self._next = None
            return
        self._file.seek(entry[1])
        self._next = None
        self._line = entry[2] - 1

    def _read(self) -> tuple[int, dict] | None:
        from .automation_check import entry_of, parse_line, read_line
        while True:
            self._line += 1
            text = read_line(self._file, str(self.path), self._line)
            if text is None:
                return None
            if text.strip():
                where = f"line {self._line}"
                return entry_of(parse_line(text, str(self.path), where), str(self.path), where)

    def at(self, frame: int) -> dict | None:
        """The changes recorded at frame `frame`, or None."""
        if self._file is None or frame <= self._at:
            self._seek(frame)
            self._next = self._read() if self._file is not None and self._index else None
        self._at = frame
        merged: dict[str, Any] = {}
        while self._next is not None and self._next[0] <= frame:
            f, entry = self._next
            if f == frame:
                _merge(merged, entry)
            self._next = self._read()
        return merged or None

    def frames(self):
        """(frame, changes) of every frame with changes, in order (streamed)."""
        self._seek(0)
        try:
            item = self._read() if self._index else None
            frame, merged = None, {}
            while item is not None:
                if frame is not None and item[0] != frame:
                    yield frame, merged
                    merged = {}
                frame = item[0]
                _merge(merged, item[1])
                item = self._read()
            if frame is not None:
                yield frame, merged
        finally:
            # Also when the caller stops early or a line fails: the file position is this replay's,
            # so the next `at()` must start from the index again.
            self.close()
            self._at = -1

    @property
    def changes(self) -> dict[int, dict]:
        """Every frame's changes as one dict (reads the whole file: for small files and tests)."""
        return dict(self.frames())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _merge(merged: dict, entry: dict) -> None:
    for k, v in entry.items():
        if k == "set":
            for g, t in v.items():
                merged.setdefault("set", {}).setdefault(g, {}).update(t)
        elif k == "audio":
            merged["audio"] = v
        else:
            merged.setdefault(k, []).extend(v)


def load_automation(path: str | Path) -> Automation:
    """Check an automation file, line by line and field by field (a bad one is one ConfigError
    naming the file, the line and the key) and return it, ready to replay; the file is streamed,
    never read whole, and each line is capped (automation_check.MAX_LINE)."""
    from .automation_check import MAX_HEADER, check_state, entry_of, number, parse_line, read_line
    path = Path(path)
    source = str(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise ConfigError(source, "", f"cannot read it ({e.strerror or e})") from None
    with f:
        text = read_line(f, source, 1, MAX_HEADER)
        if text is None or not text.strip():
            raise ConfigError(source, "line 1", "empty, expected an automation header")
        head = parse_line(text, source, "line 1")
        if not isinstance(head, dict) or head.get("automation") != FORMAT:
            raise ConfigError(source, "line 1", f"not an automation file of format {FORMAT} "
                              "(written by `unstable live --record` or `--automation`)")
        try:
            fps = exact(head["fps"])
            if fps <= 0:
                raise ValueError
        except (KeyError, ValueError, TypeError, ZeroDivisionError, OverflowError):
            raise ConfigError(source, "line 1.fps", f"{head.get('fps')!r} is not a frame rate > 0 "
                              "(e.g. \"30\" or \"30000/1001\")") from None
        if "start_frame" not in head:
            raise ConfigError(source, "line 1.start_frame", "missing")
        start = int(number(head["start_frame"], source, "line 1.start_frame", lo=0, integer=True))
        if "state" not in head:
            raise ConfigError(source, "line 1.state", "missing")
        state = check_state(head["state"], source)
        show = head.get("show", "")
        if not isinstance(show, str):
            raise ConfigError(source, "line 1.show", f"{show!r} is not a show name")
        last, index, number_ = start, [], 1
        while True:
            offset = f.tell()
            number_ += 1
            text = read_line(f, source, number_)
            if text is None:
                break
            if not text.strip():
                continue
            where = f"line {number_}"
            frame, _ = entry_of(parse_line(text, source, where, "; a recording cut short loses at most its last "
                                           "line: delete it"), source, where)
            if frame < last:
                raise ConfigError(source, f"{where}.frame", f"{frame} goes back in time (after frame {last})")
            if not index or (frame > last and number_ - index[-1][2] >= Automation.INDEX_EVERY):
                index.append((frame, offset, number_))
            last = frame
    return Automation(path, show, fps, start, state, last, index)
