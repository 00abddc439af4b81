"""What a live show writes besides checkpoints: recordings (video + automation) and stills.

A recording is a side channel: when writing it fails (a full disk, ffmpeg gone), the recording
stops, finalised as far as it can be (h264_live is fragmented MP4: what reached the disk plays),
one line is logged, and the show goes on. Checkpoints never compete with a recording for the last
bytes: below `min_free` bytes free on its disk a recording stops (and none starts) while there is
still room to finish the file and write every checkpoint. Stills and OSC-started recordings are
kept within a count and a byte budget (the oldest go first). Beside every
recording its automation (`<recording>.automation.jsonl`, unstable.frame.automation) is written
from the same first frame, so `unstable render SHOW --automation FILE` renders it again.

A recording is constant-rate on the show clock: a slot the show dropped (a late frame) repeats the
last frame in the file, as OBS does, and a timed show's recording is filled to its last slot, so
frame n of the file is slot start + n of the show, of its automation and of its sound. A show that
follows an audio file gets that sound muxed into its recordings when they finish (AAC, from the
recording's first slot, padded with silence and cut to frames / fps).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np

from ..control.osclog import RateLimitedLog
from ..disk import MB, free_bytes, is_no_space, keep_newest
from ..errors import UnstableError
from ..frame.automation import automation_path
from ..frame.timeline import ShowTimeline
from .stills import StillWriter

log = logging.getLogger("unstable.live")

__all__ = ["Recorder"]

_unique = itertools.count()


class Recorder:
    """Recordings and stills of one live show (render thread only); a frame sink.

    `record(path)` starts at the next frame (`begin_frame`), so the automation header holds the
    state the first recorded frame starts from. `automation`: write automation without video.
    `sound`: the audio file the show plays (muxed into each recording from its first slot).
    `automation_max`: bytes an automation file may grow to (`[disk] automation_max_mb`; None: the
    AutomationRecorder's default, 0: no cap).
    """

    MAX_FINISHING = 2      # recordings being finished in the background at once
    FULL = 64 * 1024       # bytes free below which a disk is full (room left to finish the file)
    PRESET = "h264_live"   # fragmented MP4: what reached the disk plays (tests record losslessly)

    def __init__(self, timeline: ShowTimeline, *, show: str, size: tuple[int, int], fps: float,
                 run_dir: Path, automation: str | os.PathLike | None = None, min_free: int = 0,
                 stills_keep: int = 0, recordings_budget: int = 0, free: Callable[[Path], int] = free_bytes,
                 sound: str | os.PathLike | None = None, automation_max: int | None = None):
        self.timeline = timeline
        self.automation_max = automation_max
        self.sound = Path(sound) if sound is not None else None
        self.min_free = int(min_free)
        self.recordings_budget = int(recordings_budget)
        self._free = free
        self._auto_named = False
        self.warn = RateLimitedLog(log, 30.0)
        self.show = show
        self.size = size
        self.fps = fps
        self.run_dir = run_dir
        self.writer = None
        self.path: Path | None = None
        self._pending: Path | None = None
        self._automation_only = Path(automation) if automation is not None else None
        self.recordings: list[str] = []
        self.stills = StillWriter(run_dir / "stills", show, int(stills_keep), self.warn, self._still_refused)
        self.errors: list[str] = []
        self._finishers: list[threading.Thread] = []
        self._lock = threading.Lock()  # self.recordings: a finisher removes an empty one
        self.repeated = 0                  # slots the show dropped, filled with the frame before
        self._start = 0                    # the show slot of the recording's first frame
        self._next = 0                     # the show slot the recording's next frame stands for
        self._last: np.ndarray | None = None  # [H, W, 3] uint8: the last frame written, for repeats

    @property
    def recording(self) -> bool:
        return self.writer is not None or self._pending is not None

    def record(self, path: str | os.PathLike | None = None) -> None:
        """Record from the next frame on (default path: `record-<time>.mp4` in the run folder)."""
        if self.writer is not None:
            return
        self._auto_named = path is None
        if path is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            path = self.run_dir / f"record-{stamp}-{next(_unique):03d}.mp4"
            while path.exists():  # a name is never reopened
                path = self.run_dir / f"record-{stamp}-{next(_unique):03d}.mp4"
        self._pending = Path(path)

    def _below_floor(self, path: Path) -> int | None:
        """The free bytes on `path`'s disk when below the floor, else None. Even without a floor a
        disk with less than FULL bytes free counts as full: ffmpeg does not stop on a write error,
        it only fails when closing, and by then the file cannot be finished."""
        free = self._free(path.parent)
        return free if free < max(self.min_free, self.FULL) else None

    def begin_frame(self, frame: int) -> None:
        """Start what was asked for before this frame's timeline advances."""
        if self._automation_only is not None:
            path, self._automation_only = self._automation_only, None
            try:
                self.timeline.start_recording(path, self.show, frame, self.automation_max)
            except OSError as e:
                self._fail(f"automation {path} could not start: {e.strerror or e}")
        if self._pending is None:
            return
        path, self._pending = self._pending, None
        free = self._below_floor(path)
        if free is not None:
            self._fail(f"recording {path} not started: {self._floor_line(free)}", key="floor")
            return
        if self._auto_named and self.recordings_budget > 0:
            self._enforce_recordings_budget()
        from ..encode import VideoWriter
        w, h = self.size
        try:
            self.writer = VideoWriter(path, w, h, self.fps, self.PRESET)
        except (UnstableError, OSError) as e:
            self._fail(f"recording {path} could not start: {e}")
            return
        self.path = path
        self._start = self._next = frame
        self._last = None
        with self._lock:
            if len(self.recordings) >= 1000:
                del self.recordings[:500]
            self.recordings.append(str(path))
        try:
            self.timeline.start_recording(automation_path(path), self.show, frame, self.automation_max)
        except OSError as e:  # the video goes on without its automation
            self._fail(f"automation of {path} could not start: {e.strerror or e}")

    def _floor_line(self, free: int) -> str:
        if self.min_free <= self.FULL:
            return f"no space left on its disk ({free / 1024:.0f} KB free)"
        return (f"only {free / MB:.1f} MB free on its disk, below [disk] min_free_mb = {self.min_free / MB:g} "
                "(kept for checkpoints)")

    def _enforce_recordings_budget(self) -> None:
        """Remove the oldest OSC-started recordings (and their automation) past the budget."""
        files = [p for p in self.run_dir.glob("record-*.mp4") if p != self.path]
        for p in keep_newest(files, budget_bytes=self.recordings_budget):
            automation_path(p).unlink(missing_ok=True)
            log.info("removed the old recording %s ([disk] recordings_budget_mb)", p)

    def put(self, frame: int, compositor) -> None:
        """The frame sink: add the composed frame (show slot `frame`) to the recording, if one runs,
        after repeating the frame before into the slots the show dropped since."""
        if self.writer is not None:
            free = self._below_floor(self.path)
            if free is not None:
                self._fail(f"recording {self.path} stopped: {self._floor_line(free)}", key="floor")
                self.stop()
                return
            self.fill(frame)
            image = compositor.read()  # [H, W, 3] uint8, reused by the next read
            self.write(image)
            if self.writer is None:
                return
            # Kept for the slots a late frame may drop next: one copy a frame, the price of a file
            # on the show clock (the compositor's read buffer is refilled by the next frame).
            if self._last is None or self._last.shape != image.shape:
                self._last = image.copy()
            else:
                np.copyto(self._last, image)
            self._next = frame + 1

    def fill(self, until: int) -> None:
        """Repeat the last recorded frame into the show slots before `until` that the recording has
        no frame for (slots a late frame dropped; the end of a timed show), so that frame n of the
        file stays slot start + n. Each repeat is counted in `repeated`."""
        if self._last is None:
            return
        while self.writer is not None and self._next < until:
            self.write(self._last)
            if self.writer is None:  # the write failed: the recording stopped
                return
            self._next += 1
            self.repeated += 1

    def write(self, frame: np.ndarray) -> None:
        """Add the composed frame ([H, W, 3] uint8) to the recording, if one runs."""
        if self.writer is None:
            return
        try:
            self.writer.write(frame)
        except (UnstableError, OSError, ValueError) as e:
            why = f"no space left on its disk ({self._free(self.path.parent) / MB:.1f} MB free)" \
                if is_no_space(e) or self._free(self.path.parent) < 1 * MB else str(e)
            self._fail(f"recording {self.path} stopped: {why}")
            self.stop()

    def stop(self) -> None:
        """Finish the recording (and its automation). The automation ends at once; the video is
        finished in the background (ffmpeg drains its queue and writes the index, a second or more
        for a long recording), so stopping a recording never stalls the show. At most
        `MAX_FINISHING` finish at once; past that the frame waits (a flood of stops is bounded)."""
        self._pending = None
        self._last = None
        if self.writer is not None:
            writer, self.writer = self.writer, None
            path = self.path
            failed = bool(self.errors) and str(path) in self.errors[-1]  # already said: one line
            self._finishers = [x for x in self._finishers if x.is_alive()]
            sound = None if self.sound is None else (self.sound, self._start)
            t = threading.Thread(target=self._finish, args=(writer, path, failed, self._auto_named, sound),
                                 name="unstable-finish", daemon=True)
            if len(self._finishers) >= self.MAX_FINISHING:
                t.run()  # here and now: back pressure
            else:
                t.start()
                self._finishers.append(t)
        if self.timeline is not None:
            auto = self.timeline.recorder
            said = auto is not None and auto.failed is not None  # it stopped itself, in its own line
            why = self.timeline.stop_recording(quiet=True)
            if why:  # the video goes on being finished; its automation is not whole
                self._fail(f"automation {why}", quiet=said)

    def _finish(self, writer, path: Path, failed: bool, auto_named: bool, sound=None) -> None:
        try:
            writer.close()
        except (UnstableError, OSError) as e:
            if not failed:
                why = f"no space left on its disk ({self._free(path.parent) / MB:.1f} MB free)" \
                    if is_no_space(e) else str(e)
                self._fail(f"recording {path} could not be finished: {why}")
            sound = None
        if sound is not None and writer.frames_written > 0:
            from .sound import mux_sound
            audio, start = sound
            try:  # the sound of slots start .. start + frames: frame n of the file hears slot n
                mux_sound(path, audio, Fraction(start) / writer.fps, Fraction(writer.frames_written) / writer.fps)
            except (UnstableError, OSError) as e:  # the video stays, without its sound
                self._fail(f"recording {path}: its sound could not be muxed ({e})")
        if writer.frames_written == 0 and auto_named:  # nothing recorded: leave nothing behind
            path.unlink(missing_ok=True)
            automation_path(path).unlink(missing_ok=True)
            with self._lock:
                if str(path) in self.recordings:
                    self.recordings.remove(str(path))

    def _fail(self, line: str, key: str | None = None, quiet: bool = False) -> None:
        if quiet:  # already logged where it happened: kept for the report only
            pass
        elif key is None:
            log.error("%s (the show goes on)", line)
        else:  # a condition that lasts (a nearly full disk): one line per 30 s, whatever is asked
            self.warn.warning(key, "%s (the show goes on)", line)
        if len(self.errors) < 100:
            self.errors.append(line)

    def still(self, frame: np.ndarray, number: int) -> Path | None:
        """Write a PNG of `frame` ([H, W, 3] uint8, copied) in the background; returns its path
        (None: refused, while earlier stills are being written or the disk is nearly full)."""
        return self.stills.write(frame, number)

    def _still_refused(self, path: Path) -> bool:
        free = self._below_floor(path)
        if free is not None:
            self._fail(f"still {path} not written: {self._floor_line(free)}", key="floor")
        return free is not None

    def close(self) -> list[str]:
        """Finish everything; returns the problems met (one line each)."""
        self.stop()
        for t in self._finishers:  # a recording is whole before the show says it ended
            t.join()
        self.stills.close()
        return list(self.errors)
