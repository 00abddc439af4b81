"""What a live show writes besides checkpoints: recordings (video + automation) and stills.

A recording is a side channel: when writing it fails (a full disk, ffmpeg gone), the recording
stops, finalised as far as it can be, one line is logged, and the show goes on. Beside every
recording its automation (`<recording>.automation.jsonl`, unstable.frame.automation) is written
from the same first frame, so `unstable render SHOW --automation FILE` renders it again.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np

from ..errors import UnstableError
from ..frame.automation import automation_path
from ..frame.timeline import ShowTimeline

log = logging.getLogger("unstable.live")

__all__ = ["Recorder"]

_unique = itertools.count()


class Recorder:
    """Recordings and stills of one live show (render thread only); a frame sink.

    `record(path)` starts at the next frame (`begin_frame`), so the automation header holds the
    state the first recorded frame starts from. `automation`: write automation without video.
    """

    def __init__(self, timeline: ShowTimeline, *, show: str, size: tuple[int, int], fps: float,
                 run_dir: Path, automation: str | os.PathLike | None = None):
        self.timeline = timeline
        self.show = show
        self.size = size
        self.fps = fps
        self.run_dir = run_dir
        self.writer = None
        self.path: Path | None = None
        self._pending: Path | None = None
        self._automation_only = Path(automation) if automation is not None else None
        self.recordings: list[str] = []
        self.stills: list[str] = []
        self.errors: list[str] = []
        self._threads: list[threading.Thread] = []

    @property
    def recording(self) -> bool:
        return self.writer is not None or self._pending is not None

    def record(self, path: str | os.PathLike | None = None) -> None:
        """Record from the next frame on (default path: `record-<time>.mp4` in the run folder)."""
        if self.writer is not None:
            return
        if path is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            path = self.run_dir / f"record-{stamp}-{next(_unique):03d}.mp4"
        self._pending = Path(path)

    def begin_frame(self, frame: int) -> None:
        """Start what was asked for before this frame's timeline advances."""
        if self._automation_only is not None:
            self.timeline.start_recording(self._automation_only, self.show, frame)
            self._automation_only = None
        if self._pending is None:
            return
        path, self._pending = self._pending, None
        from ..encode import VideoWriter
        w, h = self.size
        try:
            self.writer = VideoWriter(path, w, h, self.fps, "h264_live")
        except (UnstableError, OSError) as e:
            self._fail(f"recording {path} could not start: {e}")
            return
        self.path = path
        self.recordings.append(str(path))
        self.timeline.start_recording(automation_path(path), self.show, frame)

    def put(self, frame: int, compositor) -> None:
        """The frame sink: add the composed frame to the recording, if one runs."""
        if self.writer is not None:
            self.write(compositor.read())

    def write(self, frame: np.ndarray) -> None:
        """Add the composed frame ([H, W, 3] uint8) to the recording, if one runs."""
        if self.writer is None:
            return
        try:
            self.writer.write(frame)
        except (UnstableError, OSError, ValueError) as e:
            self._fail(f"recording {self.path} stopped: {e}")
            self.stop()

    def stop(self) -> None:
        """Finish the recording (and its automation)."""
        self._pending = None
        if self.writer is not None:
            writer, self.writer = self.writer, None
            try:
                writer.close()
            except (UnstableError, OSError) as e:
                self._fail(f"recording {self.path} could not be finished: {e}")
        self.timeline.stop_recording()

    def _fail(self, line: str) -> None:
        log.error("%s (the show goes on)", line)
        self.errors.append(line)

    def still(self, frame: np.ndarray, number: int) -> Path:
        """Write a PNG of `frame` ([H, W, 3] uint8, copied) in the background; returns its path."""
        frame = frame.copy()
        path = self.run_dir / "stills" / f"{self.show}-{number:07d}.png"

        def write():
            import imageio.v3 as iio
            # A unique temporary name: two stills of one frame must not write into each other.
            tmp = path.with_name(f".{path.name}.{os.getpid()}-{next(_unique)}.tmp")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                iio.imwrite(tmp, frame, extension=".png")
                tmp.replace(path)
            except OSError as e:
                log.error("still %s failed: %s", path, e)
                tmp.unlink(missing_ok=True)

        t = threading.Thread(target=write, name="unstable-still", daemon=True)
        t.start()
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        self.stills.append(str(path))
        return path

    def close(self) -> list[str]:
        """Finish everything; returns the problems met (one line each)."""
        self.stop()
        for t in self._threads:
            t.join(10)
        return list(self.errors)
